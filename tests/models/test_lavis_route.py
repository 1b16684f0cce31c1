"""The LAVIS route (checkpoint= + vit_weights= + llm_model= + qformer_tokenizer=).

The LAVIS key names below are written out by hand from LAVIS's parameter names (and
transformers' InstructBLIP conversion script), not produced by lavis_ib's mapping code.
The test turns a transformers checkpoint into LAVIS files with this table, loads them
through the LAVIS route and expects the same outputs as `pretrained=` on the original
directory.
"""
from __future__ import annotations

import os

import pytest
import torch

from lavis_ib import load_model
from lavis_ib.common.errors import LavisIbError
from tests.models.conftest import IMAGE, Q, hf_min_length


def lavis_to_hf_table(num_qformer_layers: int, cross_every: int, t5: bool) -> dict[str, str]:
    """LAVIS trimmed-checkpoint name -> transformers InstructBLIP name."""
    proj = "t5_proj" if t5 else "llm_proj"
    table = {
        "query_tokens": "query_tokens",
        "ln_vision.weight": "vision_model.post_layernorm.weight",
        "ln_vision.bias": "vision_model.post_layernorm.bias",
        f"{proj}.weight": "language_projection.weight",
        f"{proj}.bias": "language_projection.bias",
        "Qformer.bert.embeddings.word_embeddings.weight": "qformer.embeddings.word_embeddings.weight",
        "Qformer.bert.embeddings.position_embeddings.weight": "qformer.embeddings.position_embeddings.weight",
        "Qformer.bert.embeddings.LayerNorm.weight": "qformer.embeddings.layernorm.weight",
        "Qformer.bert.embeddings.LayerNorm.bias": "qformer.embeddings.layernorm.bias",
    }
    for n in range(num_qformer_layers):
        lav, hf = f"Qformer.bert.encoder.layer.{n}", f"qformer.encoder.layer.{n}"
        blocks = ["attention"] + (["crossattention"] if n % cross_every == 0 else [])
        for block in blocks:
            for proj_name in ("query", "key", "value"):
                for leaf in ("weight", "bias"):
                    table[f"{lav}.{block}.self.{proj_name}.{leaf}"] = f"{hf}.{block}.attention.{proj_name}.{leaf}"
            for leaf in ("weight", "bias"):
                table[f"{lav}.{block}.output.dense.{leaf}"] = f"{hf}.{block}.output.dense.{leaf}"
                table[f"{lav}.{block}.output.LayerNorm.{leaf}"] = f"{hf}.{block}.output.LayerNorm.{leaf}"
        for leaf in ("weight", "bias"):
            table[f"{lav}.intermediate.dense.{leaf}"] = f"{hf}.intermediate.dense.{leaf}"
            table[f"{lav}.output.dense.{leaf}"] = f"{hf}.output.dense.{leaf}"
            table[f"{lav}.output.LayerNorm.{leaf}"] = f"{hf}.output.LayerNorm.{leaf}"
            table[f"{lav}.intermediate_query.dense.{leaf}"] = f"{hf}.intermediate_query.dense.{leaf}"
            table[f"{lav}.output_query.dense.{leaf}"] = f"{hf}.output_query.dense.{leaf}"
            table[f"{lav}.output_query.LayerNorm.{leaf}"] = f"{hf}.output_query.LayerNorm.{leaf}"
    return table


def eva_table(num_blocks: int) -> dict[str, str]:
    """eva_vit_g.pth name (no prefix) -> transformers name; q/v biases handled apart."""
    table = {"cls_token": "vision_model.embeddings.class_embedding",
             "pos_embed": "vision_model.embeddings.position_embedding",
             "patch_embed.proj.weight": "vision_model.embeddings.patch_embedding.weight",
             "patch_embed.proj.bias": "vision_model.embeddings.patch_embedding.bias"}
    for n in range(num_blocks):
        lav, hf = f"blocks.{n}", f"vision_model.encoder.layers.{n}"
        for leaf in ("weight", "bias"):
            table[f"{lav}.norm1.{leaf}"] = f"{hf}.layer_norm1.{leaf}"
            table[f"{lav}.norm2.{leaf}"] = f"{hf}.layer_norm2.{leaf}"
            table[f"{lav}.attn.proj.{leaf}"] = f"{hf}.self_attn.projection.{leaf}"
            table[f"{lav}.mlp.fc1.{leaf}"] = f"{hf}.mlp.fc1.{leaf}"
            table[f"{lav}.mlp.fc2.{leaf}"] = f"{hf}.mlp.fc2.{leaf}"
        table[f"{lav}.attn.qkv.weight"] = f"{hf}.self_attn.qkv.weight"
    return table


def write_lavis_files(hf_dir: str, hf_model, processor, out: str, t5: bool) -> dict[str, str]:
    os.makedirs(out, exist_ok=True)
    hf_state = hf_model.state_dict()
    cfg = hf_model.config
    table = lavis_to_hf_table(cfg.qformer_config.num_hidden_layers,
                              cfg.qformer_config.cross_attention_frequency, t5)
    trimmed = {lav: hf_state[hf].clone() for lav, hf in table.items()}
    trimmed["Qformer.bert.embeddings.position_ids"] = torch.arange(64)[None]  # old BERT buffer
    torch.save({"model": trimmed}, os.path.join(out, "instruct_blip_trimmed.pth"))
    depth = cfg.vision_config.num_hidden_layers
    eva = {lav: hf_state[hf].clone() for lav, hf in eva_table(depth).items()}
    d = cfg.vision_config.hidden_size
    for n in range(depth):
        bias = hf_state[f"vision_model.encoder.layers.{n}.self_attn.qkv.bias"]
        eva[f"blocks.{n}.attn.q_bias"], eva[f"blocks.{n}.attn.v_bias"] = bias[:d].clone(), bias[2 * d:].clone()
    for key in [k for k in eva if k.startswith(f"blocks.{depth - 1}.")]:   # the "40th" block
        eva[key.replace(f"blocks.{depth - 1}.", f"blocks.{depth}.")] = torch.randn_like(eva[key])
    torch.save(eva, os.path.join(out, "eva_vit_g.pth"))
    hf_model.language_model.save_pretrained(os.path.join(out, "llm"))
    processor.tokenizer.save_pretrained(os.path.join(out, "llm"))
    processor.qformer_tokenizer.save_pretrained(os.path.join(out, "bert"))
    return {"checkpoint": os.path.join(out, "instruct_blip_trimmed.pth"),
            "vit_weights": os.path.join(out, "eva_vit_g.pth"), "llm_model": os.path.join(out, "llm"),
            "qformer_tokenizer": os.path.join(out, "bert")}


def lavis_arch(hf) -> dict:
    """The architecture settings the LAVIS route needs, read from a transformers config."""
    vc, qc = hf.config.vision_config, hf.config.qformer_config
    return dict(
        num_query_token=Q, ln_vision_eps=vc.layer_norm_eps,
        vision=dict(image_size=IMAGE, patch_size=vc.patch_size, hidden_size=vc.hidden_size,
                    intermediate_size=vc.intermediate_size, num_hidden_layers=vc.num_hidden_layers,
                    num_attention_heads=vc.num_attention_heads, layer_norm_eps=vc.layer_norm_eps),
        qformer=dict(vocab_size=qc.vocab_size, hidden_size=qc.hidden_size,
                     num_hidden_layers=qc.num_hidden_layers, num_attention_heads=qc.num_attention_heads,
                     intermediate_size=qc.intermediate_size,
                     max_position_embeddings=qc.max_position_embeddings,
                     cross_attention_frequency=qc.cross_attention_frequency,
                     encoder_hidden_size=qc.encoder_hidden_size, layer_norm_eps=qc.layer_norm_eps))


@pytest.mark.parametrize("fam", ["llama", "t5"])
def test_lavis_route_matches_pretrained(fam, hf_dirs, hf_models, our_models, tmp_path):
    from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

    hf, processor = hf_models[fam]
    files = write_lavis_files(hf_dirs[fam], hf, processor, str(tmp_path / "lavis"), fam == "t5")
    ref = our_models[fam][0]
    vc = hf.config.vision_config
    model_type = "tiny_vicuna" if fam == "llama" else "tiny_flant5"
    model = load_model("instructblip", model_type, is_eval=True, llm_tokenizer=None, **files,
                       **lavis_arch(hf))

    report = model.load_report
    assert report["checkpoint"].unexpected == ["Qformer.bert.embeddings.position_ids"]
    assert not report["checkpoint"].missing and not report["vit_weights"].missing
    assert report["vit_weights"].dropped and all(k.startswith(f"blocks.{vc.num_hidden_layers}.")
                                                 for k in report["vit_weights"].dropped)
    for (name, a), (name_b, b) in zip(ref.state_dict().items(), model.state_dict().items()):
        assert name == name_b and torch.equal(a, b), name

    g = torch.Generator().manual_seed(7)
    images = torch.randn(2, 3, IMAGE, IMAGE, generator=g)
    prompts = ["what is it?", "describe the image please"]
    batch = {"image": images, "text_input": prompts, "text_output": ["a cat", "snow"]}
    kwargs = dict(num_beams=1, max_length=6, min_length=1, repetition_penalty=1.0)
    with torch.no_grad():
        assert torch.allclose(model(batch)["loss"], ref(batch)["loss"], atol=1e-6)
    text = model.generate({"image": images, "prompt": prompts}, **kwargs)
    assert text == ref.generate({"image": images, "prompt": prompts}, **kwargs)

    # LAVIS route -> save_pretrained -> transformers generates the same text
    out_dir = model.save_pretrained(str(tmp_path / "exported"))
    hf2 = InstructBlipForConditionalGeneration.from_pretrained(out_dir).eval()
    proc2 = InstructBlipProcessor.from_pretrained(out_dir)
    for i, prompt in enumerate(prompts):
        q = proc2.qformer_tokenizer([prompt], return_tensors="pt")
        ids = torch.tensor([[hf2.config.image_token_index] * Q + proc2.tokenizer(prompt).input_ids])
        with torch.no_grad():
            out = hf2.generate(pixel_values=images[i:i + 1], qformer_input_ids=q.input_ids,
                               qformer_attention_mask=q.attention_mask, input_ids=ids,
                               do_sample=False, num_beams=1, max_new_tokens=6,
                               **hf_min_length(fam == "t5", 1))
        if fam == "llama":
            out = out[:, ids.shape[1]:]
        assert proc2.tokenizer.batch_decode(out, skip_special_tokens=True)[0].strip() == text[i]


def test_lavis_route_errors(hf_dirs, hf_models, tmp_path):
    with pytest.raises(LavisIbError, match="needs llm_model"):
        load_model("instructblip", "tiny_vicuna", checkpoint=str(tmp_path / "x.pth"))
    hf, processor = hf_models["llama"]
    files = write_lavis_files(hf_dirs["llama"], hf, processor, str(tmp_path / "lavis"), False)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    common = dict(llm_model=files["llm_model"], llm_tokenizer=None,
                  qformer_tokenizer=files["qformer_tokenizer"])
    with pytest.raises(LavisIbError, match="weights_only=True"):
        load_model("instructblip", "tiny_vicuna", checkpoint=str(bad), **common)
    with pytest.raises(LavisIbError, match="does not exist"):
        load_model("instructblip", "tiny_vicuna", vit_weights=str(tmp_path / "missing.pth"), **common)
    # a checkpoint of the wrong shape is named, not silently skipped
    with pytest.raises(LavisIbError, match="shape"):
        load_model("instructblip", "tiny_vicuna", checkpoint=files["checkpoint"], **common)
    # a trimmed checkpoint lacking the Q-Former is an error naming LAVIS keys
    state = torch.load(files["checkpoint"], weights_only=True)["model"]
    part = {k: v for k, v in state.items() if not k.startswith("Qformer.bert.encoder.layer.1.")}
    torch.save({"model": part}, tmp_path / "partial.pth")
    arch_free = dict(num_query_token=Q, vision=dict(image_size=IMAGE, patch_size=14, hidden_size=32,
                     intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
                     qformer=dict(vocab_size=hf.config.qformer_config.vocab_size, hidden_size=32,
                                  num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
                                  max_position_embeddings=64, encoder_hidden_size=32))
    with pytest.raises(LavisIbError, match="Qformer.bert.encoder.layer.1"):
        load_model("instructblip", "tiny_vicuna", checkpoint=str(tmp_path / "partial.pth"),
                   **common, **arch_free)
