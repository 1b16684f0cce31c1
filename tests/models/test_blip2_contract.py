"""`blip2_opt` and `blip2_t5` as registered models: the model types LAVIS users know, the
caption types' settings (LAVIS's blip2_caption_*.yaml: 364 px, trainable fp32 ViT,
prompt "a photo of"), the BaseModel contract on the tiny types, and the Q-Former without
a text side (a stage-2 BLIP-2 has none)."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from lavis_ib.common.registry import registry

REAL_TYPES = {
    "blip2_opt": ["pretrain_opt2.7b", "pretrain_opt6.7b", "caption_coco_opt2.7b",
                  "caption_coco_opt6.7b"],
    "blip2_t5": ["pretrain_flant5xl", "pretrain_flant5xxl", "caption_coco_flant5xl"],
}


@pytest.fixture(scope="module")
def tiny():
    from lavis_ib import load_model

    torch.manual_seed(0)
    return {"opt": load_model("blip2_opt", "tiny_opt", is_eval=True),
            "t5": load_model("blip2_t5", "tiny_flant5", is_eval=True)}


@pytest.mark.parametrize("arch", sorted(REAL_TYPES))
def test_model_types_and_their_settings(arch):
    cls = registry.get_model_class(arch)
    assert set(REAL_TYPES[arch]) | {"tiny_opt" if arch == "blip2_opt" else "tiny_flant5"} == \
        set(cls.PRETRAINED_MODEL_CONFIG_DICT)
    for model_type in REAL_TYPES[arch]:
        cfg = OmegaConf.load(cls.default_config_path(model_type))
        m = cfg.model
        assert (m.arch, m.model_type) == (arch, model_type)
        assert m.pretrained.startswith("Salesforce/blip2-")
        size = m.vision.image_size
        assert cfg.preprocess.vis_processor.eval.image_size == size
        if model_type.startswith("caption_coco"):
            assert (size, m.freeze_vit, m.vit_precision, m.prompt) == (364, False, "fp32", "a photo of")
            assert m.pretrained.endswith("-coco")
        else:
            assert (size, m.freeze_vit, m.prompt) == (224, True, "")


@pytest.mark.parametrize("fam,family,append_eos", [("opt", "opt", False), ("t5", "flant5", True)])
def test_contract_on_the_tiny_types(tiny, fam, family, append_eos):
    model = tiny[fam]
    assert model.llm_family == family and model.default_append_eos is append_eos
    assert model.trainable_module_names() == ["query_tokens", "qformer", "ln_vision", "llm_proj"]
    assert all(not p.requires_grad for p in model.llm.parameters())
    assert all(not p.requires_grad for p in model.visual_encoder.parameters())
    # no text side: nothing untrainable-by-construction is left in the Q-Former
    names = [n for n, _ in model.qformer.named_parameters()]
    assert not [n for n in names if "word_embeddings" in n or "ffn_text" in n]
    assert model.shard_units() and model.checkpoint_units()
    assert {"num_beams", "max_length", "min_length", "length_penalty"} <= \
        type(model).generation_settings()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    texts = ["a dog on the grass", "two cats"]
    out = model({"image": images, "text_input": texts, "text_output": ["yes", "no"]})
    assert set(out) == {"loss", "loss_sum", "num_tokens"}
    assert torch.isclose(out["loss"], out["loss_sum"] / out["num_tokens"])
    answers = model.generate({"image": images, "prompt": ["Question: a? Answer:"] * 2},
                             num_beams=2, max_length=4)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    scores, mask = model.score_candidates({"image": images, "prompt": ["q", "q"]}, [["a"], ["b", "c"]])
    assert scores.shape == mask.shape == (2, 2) and scores[0, 1] == float("-inf")


def test_opt_targets_are_lavis_captions(tiny):
    """text_input is the caption: `</s>` caption "\\n", the model prompt's tokens unscored."""
    model = tiny["opt"]
    tok = model.llm_tokenizer
    images = torch.randn(1, 3, 32, 32)
    caption = "a photo of a dog"
    ids = tok(caption + "\n").input_ids
    assert ids[0] == tok.convert_tokens_to_ids("</s>") and ids[-1] == model.newline_id
    assert model({"image": images, "text_input": [caption]})["num_tokens"].item() == len(ids)
    model.prompt = "a photo of"
    try:
        got = model({"image": images, "text_input": [caption]})["num_tokens"].item()
    finally:
        model.prompt = ""
    assert got == len(ids) - len(tok("a photo of").input_ids)
    # an instruction longer than max_txt_len leaves nothing to score: a zero loss, counted
    model.max_txt_len = 4
    try:
        out = model({"image": images, "text_input": ["a long instruction"], "text_output": ["x"]})
    finally:
        model.max_txt_len = 96
    assert out["num_tokens"].item() == 0 and out["loss_sum"].item() == 0.0
    assert model.truncated >= 1


def test_caption_types_train_the_vit():
    from lavis_ib import load_model

    model = load_model("blip2_t5", "tiny_flant5", freeze_vit=False)
    assert "visual_encoder" in model.trainable_module_names()
    assert all(p.requires_grad for p in model.visual_encoder.parameters())
    model.train()
    assert model.visual_encoder.training and model.llm.training   # llm_train_mode: lavis
    images = torch.randn(2, 3, 32, 32)
    out = model({"image": images, "text_input": ["a", "b"], "text_output": ["c", "d"]})
    out["loss_sum"].backward()
    assert model.visual_encoder.patch_embed.proj.weight.grad is not None


def test_wrong_family_is_one_clear_error():
    from lavis_ib import load_model
    from lavis_ib.common.errors import LavisIbError

    with pytest.raises(LavisIbError, match="blip2_t5"):
        load_model("blip2_opt", "tiny_opt",
                   llm_config={"model_type": "t5", "vocab_size": 300, "d_model": 16, "d_kv": 4,
                               "d_ff": 16, "num_layers": 1, "num_heads": 4,
                               "decoder_start_token_id": 0, "pad_token_id": 0,
                               "eos_token_id": 1})
