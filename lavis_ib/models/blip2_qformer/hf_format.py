"""transformers' layout of BLIP-2 stage 1: `Blip2ForImageTextRetrieval` directories.

transformers holds stage 1 for inference only, so its layout lacks what training needs
(the ITC temperature, the ITG head); this module reads and writes the layout and keeps
those parts in side files beside it (`save_pretrained`, `load_pretrained`)."""
from __future__ import annotations

import json
import logging
import os
from typing import Callable

from lavis_ib.common.errors import LavisIbError
from lavis_ib.models.components.qformer import QFormerSpec
from lavis_ib.models.components.vision import VisionSpec
from lavis_ib.models.weights.blip2 import hf_blip2_name, to_ours
from lavis_ib.models.weights.files import iter_shards, write_safetensors
from lavis_ib.models.weights.hf import (check_directory_report, image_processor_for,
                                        read_image_settings)
from lavis_ib.models.weights.hub import resolve_dir
from lavis_ib.models.weights.load_report import load_in_pieces
from lavis_ib.models.weights.param_names import ours_to_hf_state
from lavis_ib.models.weights.tokenizers import caption_tokenizer_from
from lavis_ib.processors.image import CLIP_MEAN, CLIP_STD

logger = logging.getLogger(__name__)
SIDE_FILE = "lavis_ib_stage1.safetensors"   # temp + the ITG head
SETTINGS_FILE = "lavis_ib.json"             # ln_vision's eps
ARCHITECTURE = "Blip2ForImageTextRetrieval"


def is_side_part(name: str) -> bool:
    """Parameters transformers' layout has no place for."""
    return name == "temp" or name.startswith("lm_head.")


def _spec(cls, hf_config):
    values = hf_config.to_dict()
    return cls(**{k: values[k] for k in cls.__dataclass_fields__ if k in values})


def load_pretrained(cls, path: str, settings: dict,
                    bert_init: Callable | None = None):
    """A stage-1 model from a `Blip2ForImageTextRetrieval` directory or hub id.
    `bert_init(model)` fills the ITG head from BERT when the directory has no side file.

    That layout holds the ViT, `ln_vision` (as the vision model's `post_layernorm`), the
    query tokens, the whole Q-Former with its text embeddings, both projections and the ITM
    head, but no ITC temperature and no ITG head (transformers has the model for inference
    only). A directory written by transformers therefore starts `temp` at LAVIS's 0.07 and
    the ITG head as LAVIS starts it (from `bert_weights` when given, else BERT-style
    random), and logs it; a directory written by `save_pretrained` has both in `SIDE_FILE`.

    Raises:
        LavisIbError: no such directory, another model's directory, or missing weights.
    """
    from transformers import Blip2Config

    directory = resolve_dir(path, "pretrained")
    if not os.path.isfile(os.path.join(directory, "config.json")):
        raise LavisIbError(f"pretrained='{path}' has no config.json; it must be a directory "
                           f"written by {ARCHITECTURE}.save_pretrained.")
    config = Blip2Config.from_pretrained(directory)
    if config.model_type != "blip-2" or ARCHITECTURE not in (config.architectures or []):
        raise LavisIbError(f"pretrained='{path}' is a '{config.model_type}' "
                           f"{config.architectures} checkpoint, not BLIP-2 stage 1 "
                           f"({ARCHITECTURE}).")
    if config.image_token_index is not None:   # how transformers' processor lays out text
        logger.info("pretrained=%s: image_token_index is not used (lavis_ib's stage-1 text "
                    "holds no image tokens)", path)
    eps = config.vision_config.layer_norm_eps
    extra = os.path.join(directory, SETTINGS_FILE)
    if os.path.isfile(extra):
        with open(extra) as f:
            eps = json.load(f).get("ln_vision_eps", eps)
    model = cls(_spec(VisionSpec, config.vision_config), _spec(QFormerSpec, config.qformer_config),
                caption_tokenizer_from(directory), num_query_token=config.num_query_tokens,
                embed_dim=config.image_text_hidden_size, ln_vision_eps=eps, **settings)
    keys = [k for k in model.state_dict() if not is_side_part(k)]
    report = load_in_pieces(model, (to_ours("hf_blip2", shard, keys)
                                    for shard in iter_shards(directory)), f"pretrained={path}")
    report.missing = [k for k in report.missing if not is_side_part(k)]
    check_directory_report(report, path, hf_blip2_name)
    side = _load_side(model, directory, path, bert_init)
    model.load_report = {"pretrained": report, "side": side}
    model.preprocess_overrides = read_image_settings(directory)
    model.configure_trainable()
    return model


def _load_side(model, directory: str, path: str, bert_init: Callable | None) -> str:
    side = os.path.join(directory, SIDE_FILE)
    if os.path.isfile(side):
        from safetensors.torch import load_file

        state = load_file(side)
        wanted = {k for k in model.state_dict() if is_side_part(k)}
        if set(state) != wanted:
            raise LavisIbError(f"pretrained='{path}': {SIDE_FILE} holds {sorted(state)}, "
                               f"expected {sorted(wanted)}.")
        model.load_state_dict(state, strict=False)
        logger.info("pretrained=%s: temp and the ITG head from %s", path, SIDE_FILE)
        return SIDE_FILE
    how = "BERT (bert_weights)" if bert_init is not None else "BERT-style random init"
    if bert_init is not None:
        bert_init(model)
    logger.warning("pretrained=%s is transformers' %s layout, which has no ITC temperature "
                   "and no ITG head: temp starts at 0.07 and the ITG head from %s, as LAVIS "
                   "starts them; loss_lm is that of an untrained head", path, ARCHITECTURE, how)
    return how


def _hf_state(model) -> dict:
    """The model's tensors under transformers' names (ViT q/v biases fused), without
    the side parts."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
             if not is_side_part(k)}
    return ours_to_hf_state(state, hf_blip2_name)


def save_pretrained(model, directory: str) -> str:
    """Write `model` as `Blip2ForImageTextRetrieval` (config, safetensors, tokenizer, image
    processor) plus the side files; returns `directory`.

    `SIDE_FILE` holds the ITC temperature and the ITG head, which transformers' layout has
    no place for; `SETTINGS_FILE` keeps `ln_vision`'s eps, which transformers' config
    cannot hold apart from the ViT's. `load_pretrained` reads both back.
    """
    from transformers import Blip2Config

    os.makedirs(directory, exist_ok=True)
    qformer = {**model.qformer_spec.to_dict(), "use_qformer_text_input": True}
    config = Blip2Config(vision_config=model.vision_spec.to_dict(), qformer_config=qformer,
                         num_query_tokens=model.query_tokens.shape[1],
                         image_text_hidden_size=model.embed_dim)
    config.architectures = [ARCHITECTURE]
    config.save_pretrained(directory)
    write_safetensors(_hf_state(model), os.path.join(directory, "model.safetensors"))
    side = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
            if is_side_part(k)}
    write_safetensors(side, os.path.join(directory, SIDE_FILE))
    with open(os.path.join(directory, SETTINGS_FILE), "w") as f:
        json.dump({"ln_vision_eps": model.ln_vision.eps}, f, indent=2)
    model.tokenizer.save_pretrained(directory)
    settings = model.preprocess_overrides or {
        "image_size": model.vision_spec.image_size, "mean": list(CLIP_MEAN), "std": list(CLIP_STD)}
    image_processor_for(settings).save_pretrained(directory)
    logger.info("wrote %s to %s; temp and the ITG head, which transformers' layout lacks, "
                "are in %s (lavis_ib reads them back)", ARCHITECTURE, directory, SIDE_FILE)
    return directory
