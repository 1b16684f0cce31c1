"""The README's model-zoo table, computed: parameters per part of every shipped model type,
bf16 weight memory, the paper's Table 1 row and where the weights come from. Counts come
from architecture numbers, never from loading weights, so the table covers 13B-parameter
types on any machine; `lavis-ib zoo --markdown` prints it and a test keeps the README equal.
"""
from __future__ import annotations

from typing import Any, Mapping

from omegaconf import OmegaConf

from lavis_ib.common.errors import ConfigError
from lavis_ib.common.paths import package_path

#: the registered models of the README table, in its order (`blip2`: BLIP-2 stage 1, no LLM)
ARCHS = ("instructblip", "blip2", "blip2_opt", "blip2_t5", "blip2_llm")
#: the models whose types Table 1 has rows for (`blip2_llm`'s `vicuna7b` is no InstructBLIP)
TABLE1_ARCHS = ("instructblip", "blip2_opt", "blip2_t5")
STAGE1_ARCH = "blip2"
PARTS = ("vit", "qformer", "projection", "llm")
START, END = "<!-- zoo-table:start -->", "<!-- zoo-table:end -->"
TRAINING_MEMORY = ("Training memory is not listed: `bench/gpu.py` measures the peak memory of a "
                   "Vicuna-7B-shaped training step, but it has not been run on a GPU yet "
                   "(BENCHMARKS.md), and no number is given until it has.")


def vit_params(v: Mapping[str, Any]) -> int:
    """EVA ViT: cls token, position embedding, patch embedding, blocks with q/v biases."""
    d, mlp, p = v["hidden_size"], v["intermediate_size"], v["patch_size"]
    tokens = (v["image_size"] // p) ** 2 + 1
    block = 4 * d + 2 * d + 3 * d * d + (d * d + d) + (d * mlp + mlp) + (mlp * d + d)
    return d + tokens * d + (3 * p * p * d + d) + v["num_hidden_layers"] * block


def qformer_params(q: Mapping[str, Any], num_query: int, vision_width: int, text_side: bool) -> int:
    """Query tokens + ln_vision + Q-Former; cross-attention in every
    `cross_attention_frequency`-th layer from layer 0. The text side (word and position
    embeddings, text FFNs) is counted only with `text_side`: in models whose Q-Former reads
    text (InstructBLIP, BLIP-2 stage 1); a stage-2 model built from stage 1 carries it
    frozen, not counted here."""
    h, ffn, n = q["hidden_size"], q["intermediate_size"], q["num_hidden_layers"]
    enc = q.get("encoder_hidden_size", vision_width)
    attn = 4 * (h * h + h) + 2 * h
    cross = 2 * (h * h + h) + 2 * (enc * h + h) + 2 * h
    feed = (h * ffn + ffn) + (ffn * h + h) + 2 * h
    crossed = len(range(0, n, q["cross_attention_frequency"]))
    layers = n * (attn + feed * (2 if text_side else 1)) + crossed * cross
    embeddings = (q["vocab_size"] + q["max_position_embeddings"]) * h if text_side else 0
    return num_query * h + 2 * vision_width + embeddings + 2 * h + layers


def _decoder(c: Mapping[str, Any], qkv_bias: bool = False, norms_per_layer: int = 2,
             tied_by_default: bool = False) -> int:
    """A LLaMA-style decoder (attention with grouped K/V, gated MLP, RMSNorms); the families
    differ in biases on q/k/v (Qwen2), norms per layer (Gemma-2: 4) and tied embeddings."""
    d, v, n = c["hidden_size"], c["vocab_size"], c["num_hidden_layers"]
    heads = c["num_attention_heads"]
    head_dim = c.get("head_dim") or d // heads
    q, kv = heads * head_dim, c.get("num_key_value_heads", heads) * head_dim
    attn = 2 * d * q + 2 * d * kv + ((q + 2 * kv) if qkv_bias else 0)
    layer = attn + 3 * d * c["intermediate_size"] + norms_per_layer * d
    untied = 0 if c.get("tie_word_embeddings", tied_by_default) else v * d
    return v * d + n * layer + d + untied


def _t5(c: Mapping[str, Any]) -> int:
    d, v, ff = c["d_model"], c["vocab_size"], c["d_ff"]
    attn = 4 * d * c["num_heads"] * c["d_kv"] + d
    feed = (3 if "gated" in c.get("feed_forward_proj", "relu") else 2) * d * ff + d
    bias = c.get("relative_attention_num_buckets", 32) * c["num_heads"]
    encoder = c["num_layers"] * (attn + feed) + bias + d
    decoder = c.get("num_decoder_layers", c["num_layers"]) * (2 * attn + feed) + bias + d
    return v * d + encoder + decoder + (0 if c.get("tie_word_embeddings", True) else v * d)


def _opt(c: Mapping[str, Any]) -> int:
    d, v, ff = c["hidden_size"], c["vocab_size"], c["ffn_dim"]
    w = c.get("word_embed_proj_dim", d)
    layer = 4 * (d * d + d) + 2 * d + (d * ff + ff) + (ff * d + d) + 2 * d
    final_norm = 2 * d if c.get("do_layer_norm_before", True) else 0
    projections = 2 * d * w if w != d else 0
    untied = 0 if c.get("tie_word_embeddings", True) else v * w
    return v * w + (c["max_position_embeddings"] + 2) * d + projections + final_norm \
        + c["num_hidden_layers"] * layer + untied


#: parameters of the LLM, per `model_type` of its config: a LLaMA-style decoder (LLaMA,
#: Mistral, Phi-3, Qwen2, Gemma-2), T5 or OPT
LLM_FORMULAS = {"llama": _decoder, "mistral": _decoder, "phi3": _decoder,
                "qwen2": lambda c: _decoder(c, qkv_bias=True),
                "gemma2": lambda c: _decoder(c, norms_per_layer=4, tied_by_default=True),
                "t5": _t5, "opt": _opt}


def stage1_heads(q: Mapping[str, Any], embed_dim: int) -> int:
    """ITC projections of queries and text, ITM head (2 classes), ITG head (transform,
    LayerNorm, output bias; its matrix is the word embeddings), the temperature."""
    h = q["hidden_size"]
    return 2 * (h * embed_dim + embed_dim) + (2 * h + 2) + (h * h + h + 2 * h + q["vocab_size"]) + 1


def _llm_width(c: Mapping[str, Any]) -> int:
    return {"t5": c.get("d_model"), "opt": c.get("word_embed_proj_dim", c.get("hidden_size"))
            }.get(c["model_type"], c.get("hidden_size"))


def model_yaml(arch: str, model_type: str) -> Any:
    from lavis_ib.common.registry import registry

    return OmegaConf.load(package_path(registry.get_model_class(arch)
                                       .PRETRAINED_MODEL_CONFIG_DICT[model_type]))


def part_counts(cfg: Any) -> dict[str, int]:
    """{part: parameters} of one model YAML (its `model:` and `zoo:` nodes).

    The numbers are the YAML's own (`vision`, `qformer`, `num_query_token`, the
    `llm_config` of the tiny types), plus a `zoo:` node where the YAML has no LLM config
    (the released types read theirs from the checkpoint): `zoo.llm` holds the LLM's
    Hugging Face config numbers. The projection is Linear(Q-Former width -> LLM input
    width). The formulas count what lavis_ib builds (tests/report/test_zoo_table.py checks
    them against built tiny models)."""
    model, zoo = cfg.model, cfg.get("zoo") or {}
    llm = model.get("llm_config") or zoo.get("llm")
    if llm is None:
        raise ConfigError(f"model type '{model.model_type}': neither model.llm_config nor "
                          f"zoo.llm gives the LLM's architecture; add zoo.llm to its YAML.")
    llm = OmegaConf.to_container(llm) if not isinstance(llm, dict) else llm
    if llm["model_type"] not in LLM_FORMULAS:
        raise ConfigError(f"zoo table: no parameter formula for LLM type '{llm['model_type']}' "
                          f"(known: {', '.join(LLM_FORMULAS)}).")
    vision, qformer = model.vision, model.qformer
    return {"vit": vit_params(vision),
            "qformer": qformer_params(qformer, model.num_query_token, vision.hidden_size,
                                      text_side="qformer_text_input" in model),
            "projection": qformer.hidden_size * _llm_width(llm) + _llm_width(llm),
            "llm": LLM_FORMULAS[llm["model_type"]](llm)}


def stage1_counts(cfg: Any) -> dict[str, int]:
    """{part: parameters} of one stage-1 model YAML (`embed_dim` too): no LLM; its heads
    in `projection` (`stage1_heads`)."""
    model = cfg.model
    return {"vit": vit_params(model.vision),
            "qformer": qformer_params(model.qformer, model.num_query_token, model.vision.hidden_size,
                                      text_side=True),
            "projection": stage1_heads(model.qformer, int(model.get("embed_dim") or 256)), "llm": 0}


def zoo_rows() -> list[dict[str, Any]]:
    """One row per shipped model type: counts per part, total, bf16 bytes, Table 1 row,
    weights (where they come from: `zoo.weights` of the model YAML)."""
    from lavis_ib.common.registry import registry
    from lavis_ib.report.paper import ROW_OF_MODEL_TYPE

    rows = []
    for arch in ARCHS:
        for model_type in registry.get_model_class(arch).PRETRAINED_MODEL_CONFIG_DICT:
            cfg = model_yaml(arch, model_type)
            counts = stage1_counts(cfg) if arch == STAGE1_ARCH else part_counts(cfg)
            total = sum(counts.values())
            paper = ROW_OF_MODEL_TYPE.get(model_type) if arch in TABLE1_ARCHS else None
            rows.append({"arch": arch, "model_type": model_type, **counts, "total": total,
                         "bf16_bytes": 2 * total, "paper_row": paper,
                         "weights": str((cfg.get("zoo") or {}).get("weights", ""))})
    return rows


def _rounded(count: int) -> str:
    """A parameter count to three significant digits: 985,894,528 -> 986M, 23,776 -> 23.8K."""
    count = float(f"{count:.3g}")
    for size, suffix in ((10 ** 9, "B"), (10 ** 6, "M"), (10 ** 3, "K")):
        if count >= size:
            return f"{count / size:g}{suffix}"
    return f"{count:g}"


def _memory(n_bytes: int) -> str:
    """Bytes to three significant digits in the largest binary unit that is at least 1."""
    for size, unit in ((2 ** 30, "GiB"), (2 ** 20, "MiB"), (2 ** 10, "KiB")):
        if n_bytes >= size:
            return f"{float(f'{n_bytes / size:.3g}'):g} {unit}"
    return f"{n_bytes} bytes"


def zoo_markdown() -> str:
    """The README's model-zoo section body: the parts table, the paper rows, the notes."""
    from lavis_ib.report.paper import HELD_OUT, TABLE1, TITLES

    rows = zoo_rows()
    out = ["| model | type | ViT | Q-Former | projection | LLM | total | bf16 weights | "
           "Table 1 row | weights |", "|---|---|" + "---:|" * 6 + "---|---|"]
    for r in rows:
        counts = " | ".join(_rounded(r[p]) if r[p] else "-" for p in (*PARTS, "total"))
        out.append(f"| {r['arch']} | {r['model_type']} | {counts} | {_memory(r['bf16_bytes'])} | "
                   f"{r['paper_row'] or '-'} | {r['weights']} |")
    out += ["", "The paper's Table 1 rows (zero-shot, held-out) of the types above:", "",
            "| Table 1 row | " + " | ".join(TITLES[d] for d in HELD_OUT) + " |",
            "|---|" + "---:|" * len(HELD_OUT)]
    for name in dict.fromkeys(r["paper_row"] for r in rows if r["paper_row"]):
        out.append(f"| {name} | " + " | ".join(f"{TABLE1[name][d]:.1f}" for d in HELD_OUT) + " |")
    out += ["", "Parameter counts and sizes are rounded to three significant digits (K = 10^3, "
            "M = 10^6, B = 10^9; `lavis_ib.report.zoo.zoo_rows()` has the exact counts). Q-Former "
            "counts include the query tokens and `ln_vision`; `blip2` is BLIP-2 stage 1, with no "
            "LLM: its projection column counts its heads (ITC projections, ITM and ITG heads, "
            "temperature). bf16 "
            "weights are 2 bytes per parameter (GiB = 2^30 bytes, MiB = 2^20, KiB = 2^10), the "
            "memory of the weights alone. " + TRAINING_MEMORY]
    return "\n".join(out)


def readme_section(readme_text: str) -> str:
    """The text between the zoo-table markers of the README."""
    if START not in readme_text or END not in readme_text:
        raise ConfigError(f"README has no model-zoo section ({START} ... {END}).")
    return readme_text.split(START, 1)[1].split(END, 1)[0].strip("\n")
