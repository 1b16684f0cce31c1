"""BLIP-2 stage-1 weights in LAVIS's and BERT's formats.

A LAVIS stage-1 `.pth` is written here under LAVIS's parameter names (renamed from a
transformers checkpoint by the table below, which is the test's own), with LAVIS's
extras (`temp`, BERT's MLM head as `Qformer.cls`, the position-id buffer): loaded with
`checkpoint=`, the model scores pairs as transformers does and keeps the file's `temp`
and ITG head. A tiny `BertForMaskedLM` written by transformers fills the text side and
the ITG head through `bert_weights=`, with the query feed-forward copied from the text one.
"""
from __future__ import annotations

import logging
import re

import pytest
import torch

from lavis_ib.common.errors import LavisIbError
from tests.models.test_blip2_qformer_parity import TEXTS, write_stage1_checkpoint

VIT = {"embeddings.class_embedding": "cls_token", "embeddings.position_embedding": "pos_embed",
       "embeddings.patch_embedding.weight": "patch_embed.proj.weight",
       "embeddings.patch_embedding.bias": "patch_embed.proj.bias", "post_layernorm": None}
VIT_LAYER = {"layer_norm1": "norm1", "layer_norm2": "norm2", "self_attn.projection": "attn.proj",
             "self_attn.qkv": "attn.qkv", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}


def lavis_state(hf: dict[str, torch.Tensor], with_vit: bool = True) -> dict[str, torch.Tensor]:
    """transformers' Blip2ForImageTextRetrieval names -> LAVIS's blip2_qformer names."""
    out = {}
    for key, value in hf.items():
        if key.startswith("vision_model."):
            rest = key[len("vision_model."):]
            if rest.startswith("post_layernorm."):
                out["ln_vision." + rest.split(".", 1)[1]] = value
                continue
            if not with_vit:
                continue
            if rest in VIT:
                out["visual_encoder." + VIT[rest]] = value
                continue
            m = re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", rest)
            layer, part, leaf = m.groups()
            if part == "self_attn.qkv" and leaf == "bias":   # LAVIS's EVA: q_bias, v_bias
                q, _, v = value.chunk(3)
                out[f"visual_encoder.blocks.{layer}.attn.q_bias"] = q
                out[f"visual_encoder.blocks.{layer}.attn.v_bias"] = v
                continue
            out[f"visual_encoder.blocks.{layer}.{VIT_LAYER[part]}.{leaf}"] = value
        elif key.startswith("embeddings."):
            out["Qformer.bert." + key] = value
        elif key.startswith("qformer.layernorm."):
            out["Qformer.bert.embeddings.LayerNorm." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("qformer.encoder."):
            name = key.replace(".attention.attention.", ".attention.self.")
            name = name.replace(".crossattention.attention.", ".crossattention.self.")
            out["Qformer.bert." + name[len("qformer."):]] = value
        else:
            out[{"vision_projection": "vision_proj", "text_projection": "text_proj",
                 "itm_head": "itm_head", "query_tokens": "query_tokens"}[key.split(".")[0]]
                + key[len(key.split(".")[0]):]] = value
    return out


def lavis_extras(hf: dict[str, torch.Tensor], seed: int = 5) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    words = hf["embeddings.word_embeddings.weight"]
    bias = torch.randn(words.shape[0], generator=gen)
    return {"temp": torch.tensor(0.0431),
            "Qformer.bert.embeddings.position_ids": torch.arange(64)[None],
            "Qformer.cls.predictions.bias": bias,
            "Qformer.cls.predictions.decoder.weight": words.clone(),
            "Qformer.cls.predictions.decoder.bias": bias.clone(),
            "Qformer.cls.predictions.transform.dense.weight": torch.randn(32, 32, generator=gen),
            "Qformer.cls.predictions.transform.dense.bias": torch.randn(32, generator=gen),
            "Qformer.cls.predictions.transform.LayerNorm.weight": torch.rand(32, generator=gen),
            "Qformer.cls.predictions.transform.LayerNorm.bias": torch.randn(32, generator=gen)}


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    from transformers import AutoTokenizer, Blip2ForImageTextRetrieval

    d = write_stage1_checkpoint(str(tmp_path_factory.mktemp("stage1_lavis") / "hf"), seed=3)
    return Blip2ForImageTextRetrieval.from_pretrained(d).eval(), AutoTokenizer.from_pretrained(d)


def test_lavis_stage1_pth_loads_and_scores_as_transformers(hf, tmp_path, caplog):
    from lavis_ib import load_model

    theirs, tok = hf
    state = {**lavis_state(theirs.state_dict()), **lavis_extras(theirs.state_dict())}
    path = str(tmp_path / "blip2_finetune_coco.pth")
    torch.save({"model": state}, path)
    with caplog.at_level(logging.WARNING):
        ours = load_model("blip2_image_text_matching", "tiny", is_eval=True, checkpoint=path)
    assert "unused keys" not in caplog.text and "random weights" not in caplog.text
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        want = theirs(pixel_values=images, input_ids=enc.input_ids, attention_mask=enc.attention_mask,
                      use_image_text_matching_head=True).logits_per_image
    torch.testing.assert_close(ours({"image": images, "text_input": TEXTS}), want,
                               atol=1e-4, rtol=1e-4)
    assert ours.temp.item() == pytest.approx(0.0431)
    assert torch.equal(ours.lm_head.bias.detach(), state["Qformer.cls.predictions.bias"])
    assert torch.equal(ours.lm_head.norm.weight.detach(),
                       state["Qformer.cls.predictions.transform.LayerNorm.weight"])
    assert torch.equal(ours.lm_head.dense.weight.detach(),
                       state["Qformer.cls.predictions.transform.dense.weight"])


def test_stage1_pth_without_vit_takes_eva_vit_file(hf, tmp_path):
    """blip2_pretrained.pth holds no ViT: it comes from eva_vit_g.pth (names without the
    `visual_encoder.` prefix, one block more than the model uses, which is dropped)."""
    from lavis_ib import load_model

    theirs, _ = hf
    hf_state = theirs.state_dict()
    torch.save({"model": {**lavis_state(hf_state, with_vit=False), **lavis_extras(hf_state)}},
               tmp_path / "blip2_pretrained.pth")
    vit = {k[len("visual_encoder."):]: v for k, v in lavis_state(hf_state).items()
           if k.startswith("visual_encoder.")}
    vit.update({k.replace("blocks.1.", "blocks.2."): v.clone() for k, v in vit.items()
                if k.startswith("blocks.1.")})
    torch.save(vit, tmp_path / "eva_vit_g.pth")
    ours = load_model("blip2", "tiny", checkpoint=str(tmp_path / "blip2_pretrained.pth"),
                      vit_weights=str(tmp_path / "eva_vit_g.pth"))
    assert len(ours.load_report["vit_weights"].dropped) == len([k for k in vit if k.startswith("blocks.2.")])
    assert torch.equal(ours.visual_encoder.blocks[1].attn.qkv.weight.detach(),
                       hf_state["vision_model.encoder.layers.1.self_attn.qkv.weight"])
    with pytest.raises(LavisIbError, match="stage-1 weights"):
        partial = lavis_state(hf_state, with_vit=False)
        partial.pop("itm_head.weight")
        torch.save({"model": partial}, tmp_path / "partial.pth")
        load_model("blip2", "tiny", checkpoint=str(tmp_path / "partial.pth"))


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A tiny BertForMaskedLM (the tiny tokenizer's vocabulary without [DEC]), by transformers."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(7)
    bert = BertForMaskedLM(BertConfig(vocab_size=193, hidden_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, intermediate_size=64,
                                      max_position_embeddings=64))
    with torch.no_grad():
        for p in bert.parameters():
            p.add_(0.1 * torch.randn_like(p))
    d = str(tmp_path_factory.mktemp("bert") / "bert")
    bert.save_pretrained(d)
    return d, {k: v.clone() for k, v in bert.state_dict().items()}


def test_bert_weights_start_the_text_side_and_itg_head(bert_dir):
    from lavis_ib import load_model

    d, bert = bert_dir
    ours = load_model("blip2", "tiny", bert_weights=d)
    words = ours.qformer.word_embeddings.weight.detach()
    assert torch.equal(words[:193], bert["bert.embeddings.word_embeddings.weight"])
    assert not torch.equal(words[193], torch.zeros(32))   # [DEC] keeps its own init
    layer = ours.qformer.layers[1]
    assert torch.equal(layer.self_attn.q.weight.detach(),
                       bert["bert.encoder.layer.1.attention.self.query.weight"])
    assert torch.equal(layer.ffn_text.fc1.weight.detach(),
                       bert["bert.encoder.layer.1.intermediate.dense.weight"])
    assert torch.equal(layer.ffn_query.fc2.weight.detach(),
                       bert["bert.encoder.layer.1.output.dense.weight"])   # copied from text
    assert torch.equal(ours.qformer.embed_norm.weight.detach(),
                       bert["bert.embeddings.LayerNorm.weight"])
    assert torch.equal(ours.lm_head.dense.weight.detach(),
                       bert["cls.predictions.transform.dense.weight"])
    assert torch.equal(ours.lm_head.bias.detach()[:193], bert["cls.predictions.bias"])
    assert ours.lm_head.bias[193].item() == 0.0
    assert "cross_attn" not in " ".join(ours.load_report["bert_weights"].loaded)


def test_a_checkpoint_of_the_wrong_kind_is_one_clear_error(bert_dir, tmp_path):
    from lavis_ib import load_model

    d, _ = bert_dir
    with pytest.raises(LavisIbError, match="not a LAVIS BLIP-2"):
        load_model("blip2", "tiny", checkpoint=d)
    with pytest.raises(LavisIbError, match="not BLIP-2 stage 1"):
        from transformers import BertConfig
        BertConfig().save_pretrained(str(tmp_path / "cfg"))
        (tmp_path / "cfg" / "config.json").write_text(
            (tmp_path / "cfg" / "config.json").read_text().replace('"bert"', '"blip-2"'))
        load_model("blip2", "tiny", pretrained=str(tmp_path / "cfg"))
