"""The frozen vision encoder: EVA ViT (timm `Eva`) without its last block and final norm.

timm's `Eva`, configured, reproduces the network InstructBLIP and BLIP-2 read images with,
under LAVIS's parameter names, so no ViT code is vendored (`build_vision_encoder`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial

import torch
from torch import nn

from lavis_ib.common.errors import ConfigError


@dataclass
class VisionSpec:
    """Sizes of the ViT (the fields of transformers' `InstructBlipVisionConfig`)."""

    image_size: int = 224
    patch_size: int = 14
    hidden_size: int = 1408
    intermediate_size: int = 6144
    num_hidden_layers: int = 39
    num_attention_heads: int = 16
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True
    hidden_act: str = "gelu"

    @classmethod
    def from_mapping(cls, node) -> "VisionSpec":
        node = dict(node or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(node) - known)
        if unknown:
            raise ConfigError(f"model.vision: unknown keys {unknown}; known: {sorted(known)}.")
        return cls(**node)

    def to_dict(self) -> dict:
        return asdict(self)


def build_vision_encoder(spec: VisionSpec) -> nn.Module:
    """A timm `Eva` matching `spec`, returning all tokens (cls + patches) from `forward`.

    InstructBLIP uses the 2nd-to-last layer of EVA-CLIP ViT-g/14 (39 of 40 blocks) with no
    norm inside the ViT; a separate trainable `ln_vision` LayerNorm follows it (kept on the
    model). timm's `Eva` with absolute position embeddings, q/v biases, no rotary embedding
    and LayerNorm eps 1e-6 reproduces that network; its parameter names are those of
    LAVIS's `visual_encoder.*` (and of `eva_vit_g.pth`), so LAVIS weights load as-is.

    Raises:
        ConfigError: an activation other than exact GELU (EVA's), or sizes timm cannot make.
    """
    from timm.layers import LayerNorm
    from timm.models.eva import Eva

    if spec.hidden_act != "gelu":
        raise ConfigError(f"vision.hidden_act '{spec.hidden_act}' is not supported: the EVA "
                          f"ViT uses exact GELU ('gelu').")
    model = Eva(
        img_size=spec.image_size, patch_size=spec.patch_size, num_classes=0, global_pool="",
        embed_dim=spec.hidden_size, depth=spec.num_hidden_layers,
        num_heads=spec.num_attention_heads, qkv_bias=spec.qkv_bias, qkv_fused=True,
        mlp_ratio=spec.intermediate_size / spec.hidden_size, use_rot_pos_emb=False,
        use_abs_pos_emb=True, class_token=True, norm_layer=partial(LayerNorm, eps=spec.layer_norm_eps),
        use_fc_norm=False)
    # The ViT's own final norm is not part of InstructBLIP (ln_vision replaces it).
    model.norm = nn.Identity()
    fc1 = model.blocks[0].mlp.fc1 if len(model.blocks) else None
    if fc1 is not None and fc1.out_features != spec.intermediate_size:
        raise ConfigError(f"vision.intermediate_size {spec.intermediate_size} cannot be built by "
                          f"timm Eva (got {fc1.out_features}).")
    return model


def encode_images(vit: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, 1 + N, D) ViT tokens of (B, C, H, W) images, in the ViT's parameter dtype."""
    dtype = vit.patch_embed.proj.weight.dtype
    return vit.forward_features(images.to(dtype))
