"""The README's model-zoo table: the parameter formulas against the parameters of built
models (every tiny type; the real Vicuna-7B architecture built on the meta device), the
bf16 memory arithmetic, the LLM counts against published sizes, and the README's table
against the generated one (so it cannot drift)."""
from __future__ import annotations

import os

import pytest
import torch

from lavis_ib import load_model
from lavis_ib.cli.dispatch import main
from lavis_ib.report.zoo import (END, START, model_yaml, part_counts, readme_section, stage1_counts,
                                zoo_markdown, zoo_rows)

README = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "README.md")
TINY = [("instructblip", "tiny_vicuna"), ("instructblip", "tiny_flant5"), ("instructblip", "tiny_opt"),
        ("blip2_opt", "tiny_opt"), ("blip2_t5", "tiny_flant5"),
        *(("blip2_llm", t) for t in ("tiny_vicuna", "tiny_llama3", "tiny_qwen2", "tiny_mistral",
                                      "tiny_phi3", "tiny_gemma2"))]


def built_counts(model):
    """Parameters per part of a built model, by module (shared tensors counted once)."""
    def count(module):
        return sum(p.numel() for p in module.parameters())
    parts = {"vit": count(model.visual_encoder), "projection": count(model.llm_proj),
             "llm": count(model.llm)}
    parts["qformer"] = count(model) - sum(parts.values())   # query tokens, ln_vision, Q-Former
    return parts


@pytest.mark.parametrize("arch,model_type", TINY)
def test_formulas_equal_built_tiny_models(arch, model_type):
    model = load_model(arch, model_type, is_eval=True, device="cpu")
    assert part_counts(model_yaml(arch, model_type)) == built_counts(model)


def test_stage1_formulas_equal_the_built_tiny_stage1_model():
    """`blip2` (stage 1) has no LLM; its projection column counts its heads."""
    model = load_model("blip2", "tiny", is_eval=True, device="cpu")

    def count(*names):
        return sum(p.numel() for n in names for p in getattr(model, n).parameters())
    heads = count("vision_proj", "text_proj", "itm_head", "lm_head") + model.temp.numel()
    vit = count("visual_encoder")
    built = {"vit": vit, "projection": heads, "llm": 0,
             "qformer": sum(p.numel() for p in model.parameters()) - vit - heads}
    assert stage1_counts(model_yaml("blip2", "tiny")) == built
    rows = {r["model_type"]: r for r in zoo_rows() if r["arch"] == "blip2"}
    assert sorted(rows) == ["coco", "pretrain", "tiny"] and all(r["weights"] for r in rows.values())
    # the same Q-Former and heads; the coco type's ViT reads 364 px images (more positions)
    assert rows["coco"]["qformer"] == rows["pretrain"]["qformer"]
    assert rows["coco"]["vit"] - rows["pretrain"]["vit"] == ((364 // 14) ** 2 - (224 // 14) ** 2) * 1408
    assert "| blip2 | tiny | 23.8K | 38.5K | 2.44K | - | 64.7K |" in zoo_markdown()


def test_blip2_llm_vicuna_is_no_instructblip_row():
    rows = {(r["arch"], r["model_type"]): r for r in zoo_rows()}
    assert rows[("blip2_llm", "vicuna7b")]["paper_row"] is None
    assert rows[("instructblip", "vicuna7b")]["paper_row"] == "InstructBLIP Vicuna-7B"
    # one LLM, without InstructBLIP's added [PAD] row
    assert rows[("blip2_llm", "vicuna7b")]["llm"] == rows[("instructblip", "vicuna7b")]["llm"] - 2 * 4096


def test_formulas_equal_real_vicuna7b_built_on_meta():
    """Real widths: EVA ViT-g 39 blocks, cross-attention K/V from 1408, LLaMA-7B, 32001 tokens."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from lavis_ib.models.components.qformer import QFormerSpec
    from lavis_ib.models.weights.tokenizers import load_tokenizer, qformer_tokenizer_from
    from lavis_ib.models.components.vision import VisionSpec
    from lavis_ib.models.instructblip import InstructBLIP

    cfg = model_yaml("instructblip", "vicuna7b")
    llm_cfg = dict(cfg.zoo.llm)
    config = AutoConfig.for_model(llm_cfg.pop("model_type"), **llm_cfg)
    vision = VisionSpec(**{k: v for k, v in cfg.model.vision.items()})
    qformer = QFormerSpec(**{k: v for k, v in cfg.model.qformer.items()})
    with torch.device("meta"):
        model = InstructBLIP(vision, qformer, AutoModelForCausalLM.from_config(config),
                             load_tokenizer("assets/tiny_llama_tokenizer", "llm_tokenizer"),
                             qformer_tokenizer_from("assets/tiny_bert_tokenizer"),
                             num_query_token=cfg.model.num_query_token)
    assert part_counts(cfg) == built_counts(model)


# Published parameter counts of the LLMs (the Hugging Face checkpoints' sizes); LLaMA-7B
# and -13B with the 32,000-token vocabulary plus InstructBLIP's added [PAD] row in the
# embedding and the LM head (2 x width).
PUBLISHED_LLM = {"vicuna7b": 6_738_415_616 + 2 * 4096, "vicuna13b": 13_015_864_320 + 2 * 5120,
                 "pretrain_opt2.7b": 2_651_596_800, "flant5xxl": 11_135_332_352}


def test_rows_bf16_bytes_and_published_llm_sizes():
    rows = {r["model_type"]: r for r in zoo_rows() if r["arch"] != "blip2_llm"}
    for model_type, llm in PUBLISHED_LLM.items():
        assert rows[model_type]["llm"] == llm, model_type
    for r in rows.values():
        assert r["total"] == r["vit"] + r["qformer"] + r["projection"] + r["llm"]
        assert r["bf16_bytes"] == 2 * r["total"]
        assert r["weights"], f"{r['model_type']}: its YAML's zoo.weights is empty"
    assert rows["vicuna7b"]["paper_row"] == "InstructBLIP Vicuna-7B"
    assert rows["pretrain_flant5xl"]["paper_row"] == "BLIP-2 FlanT5XL"
    # rounded to three significant digits: 985,894,528 parameters, 2 x 7,913,155,712 bytes
    assert "| instructblip | vicuna7b | 986M | 186M | 3.15M | 6.74B | 7.91B | 14.7 GiB |" in zoo_markdown()


def test_readme_table_is_the_generated_one(capsys):
    with open(README, encoding="utf-8") as f:
        text = f.read()
    assert text.count(START) == 1 and text.count(END) == 1
    assert readme_section(text) == zoo_markdown(), \
        "README model-zoo table is stale: paste `lavis-ib zoo --markdown` between its markers"
    assert main(["zoo", "--markdown"]) == 0
    assert capsys.readouterr().out.strip("\n") == zoo_markdown()
