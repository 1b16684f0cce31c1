"""BLIP-2 from LAVIS files: `blip2_pretrained_opt2.7b.pth`-style checkpoints (`opt_proj`,
`t5_proj`, `Qformer.bert.*`), `eva_vit_g.pth` (one block too many) and the LLM directory,
written here in LAVIS's key layout from a tiny model; a caption checkpoint whose ViT was
trained at another image size (its position embedding is resampled); and InstructBLIP's
`init_from` reading the same files through the same reader."""
from __future__ import annotations

import os

import pytest
import torch

from lavis_ib.models.weights.param_names import to_lavis

TRAINABLE = ("query_tokens", "qformer", "ln_vision", "llm_proj")
TYPES = {"opt": ("blip2_opt", "tiny_opt", "opt_proj"), "t5": ("blip2_t5", "tiny_flant5", "t5_proj")}


def write_lavis_blip2(model, out_dir: str, proj: str, with_vit: bool = False) -> dict:
    """LAVIS's files of a BLIP-2 model: the .pth ({"model": ...}), eva_vit_g.pth (no
    prefix, plus a block past the model's depth, as EVA ViT-g's 40th) and the LLM dir."""
    os.makedirs(out_dir, exist_ok=True)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    lavis = {}
    for key, value in state.items():
        part = key.split(".")[0]
        if part in TRAINABLE:
            name = to_lavis(key, t5=False)
            lavis[name.replace("llm_proj.", proj + ".", 1)] = value
        elif part == "visual_encoder" and with_vit:
            lavis[key] = value
    lavis["Qformer.bert.embeddings.word_embeddings.weight"] = torch.zeros(5, 4)  # stage-1 leftover
    vit = {k[len("visual_encoder."):]: v for k, v in state.items() if k.startswith("visual_encoder.")}
    depth = len(model.visual_encoder.blocks)
    vit.update({k.replace("blocks.0.", f"blocks.{depth}.", 1): v
                for k, v in vit.items() if k.startswith("blocks.0.")})
    paths = {"checkpoint": os.path.join(out_dir, "blip2.pth"),
             "vit_weights": os.path.join(out_dir, "eva_vit_g.pth"),
             "llm_model": os.path.join(out_dir, "llm")}
    torch.save({"model": lavis}, paths["checkpoint"])
    torch.save(vit, paths["vit_weights"])
    model.llm.save_pretrained(paths["llm_model"])
    model.llm_tokenizer.save_pretrained(paths["llm_model"])
    return paths


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    from lavis_ib import load_model

    root = tmp_path_factory.mktemp("lavis_blip2")
    out = {}
    for fam, (arch, model_type, proj) in TYPES.items():
        torch.manual_seed(1)
        model = load_model(arch, model_type, is_eval=True)
        out[fam] = (model, write_lavis_blip2(model, os.path.join(root, fam), proj))
    return out


@pytest.mark.parametrize("fam", ["opt", "t5"])
def test_lavis_files_load_every_weight(fam, sources):
    from lavis_ib import load_model

    src, paths = sources[fam]
    arch, model_type, proj = TYPES[fam]
    with open(paths["checkpoint"], "rb") as f:
        keys = set(torch.load(f, weights_only=True)["model"])
    assert {f"{proj}.weight", "Qformer.bert.embeddings.LayerNorm.weight",
            "Qformer.bert.encoder.layer.0.crossattention.self.query.weight"} <= keys
    torch.manual_seed(99)   # another random draw: everything must come from the files
    model = load_model(arch, model_type, is_eval=True, llm_tokenizer=None, **paths)
    ours, ref = model.state_dict(), src.state_dict()
    assert set(ours) == set(ref)
    assert all(torch.equal(ours[k], ref[k]) for k in ref)
    report = model.load_report
    assert report["vit_weights"].dropped and not report["vit_weights"].resampled
    assert "Qformer.bert.embeddings.word_embeddings.weight" in report["checkpoint"].unexpected
    images = torch.randn(2, 3, 32, 32)
    kwargs = dict(num_beams=1, max_length=5)
    assert model.generate({"image": images, "prompt": "a"}, **kwargs) == \
        src.generate({"image": images, "prompt": "a"}, **kwargs)


def test_a_checkpoint_without_blip2_weights_is_one_clear_error(sources, tmp_path):
    from lavis_ib import load_model
    from lavis_ib.common.errors import LavisIbError

    _, paths = sources["opt"]
    path = tmp_path / "partial.pth"
    state = torch.load(paths["checkpoint"], weights_only=True)["model"]
    torch.save({"model": {k: v for k, v in state.items() if not k.startswith("opt_proj")}}, path)
    with pytest.raises(LavisIbError, match="lacks 2 BLIP-2 weights"):
        load_model("blip2_opt", "tiny_opt", llm_tokenizer=None, **{**paths, "checkpoint": str(path)})


def test_caption_checkpoint_vit_at_another_size_is_resampled(tmp_path):
    """A caption checkpoint carries its fine-tuned ViT; trained at 32 px (4x4 patches)
    and loaded into a 48 px model (6x6), the position embedding is resampled as timm
    resamples one (bicubic, no antialiasing, class token kept)."""
    from timm.layers import resample_abs_pos_embed

    from lavis_ib import load_model

    torch.manual_seed(3)
    src = load_model("blip2_opt", "tiny_opt", is_eval=True)
    paths = write_lavis_blip2(src, str(tmp_path), "opt_proj", with_vit=True)
    model = load_model("blip2_opt", "tiny_opt", is_eval=True, llm_tokenizer=None,
                       checkpoint=paths["checkpoint"], llm_model=paths["llm_model"],
                       vision={"image_size": 48}, freeze_vit=False)
    ref = resample_abs_pos_embed(src.visual_encoder.pos_embed.detach(), [6, 6], [4, 4],
                                 num_prefix_tokens=1, antialias=False)
    got = model.visual_encoder.pos_embed.detach()
    assert got.shape == (1, 37, 32)
    assert torch.allclose(got, ref, atol=1e-6)
    assert model.load_report["checkpoint"].resampled == ["visual_encoder.pos_embed"]
    blocks = [k for k in src.state_dict() if k.startswith("visual_encoder.blocks.")]
    assert all(torch.equal(model.state_dict()[k], src.state_dict()[k]) for k in blocks)
    assert "visual_encoder" in model.trainable_module_names()
    assert model.generate({"image": torch.randn(1, 3, 48, 48)}, num_beams=1, max_length=3)


def test_instructblip_init_from_reads_blip2_files_through_the_same_reader(sources, tmp_path):
    """InstructBLIP's init_from fills its query side from the LAVIS .pth and from a
    Hugging Face BLIP-2 directory written by blip2_opt; both give the BLIP-2 tensors."""
    from lavis_ib import load_model

    src, paths = sources["opt"]
    hf_dir = src.save_pretrained(str(tmp_path / "hf_blip2"))
    expected = {k: v for k, v in src.state_dict().items() if k.split(".")[0] in TRAINABLE}
    for source in (paths["checkpoint"], hf_dir):
        torch.manual_seed(7)
        ib = load_model("instructblip", "tiny_opt", init_from=[source], allow_random_init=True)
        state = ib.state_dict()
        assert all(torch.equal(state[k], v) for k, v in expected.items()), source
        report = ib.init_report
        assert set(report[source]["filled"]) == set(expected)
        assert any("word_embeddings" in n for n in report["unfilled"])  # BLIP-2 has no text side
