"""BLIP-2 stage 2 from stage 1: the prefix LM of `blip2_t5`, the decoder-only caption loss
against a transcription of LAVIS's `blip2_opt.forward`, the stage-1 text side carried
frozen, LAVIS's `blip2_pretrained_vicuna7b.pth` layout, and InstructBLIP starting from
stage 2 with no random projection.

Source files are written here from checkpoints transformers built (random weights) with
LAVIS's key names typed out by hand (`LAVIS_STAGE1`), not produced by lavis_ib's maps.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from lavis_ib import load_model
from lavis_ib.common.errors import ConfigError, LavisIbError

QF = dict(vocab_size=194, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
          intermediate_size=64, max_position_embeddings=64, encoder_hidden_size=32)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
              image_size=32, patch_size=8)
CAPTIONS = ["a dog runs on the green grass near a red fence", "two cats", "bus",
            "the man holds a blue sign"]


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# -- LAVIS's names, typed out ------------------------------------------------------------
def lavis_qformer_table(layers: int, text_side: bool) -> dict[str, str]:
    """LAVIS name -> transformers `Blip2ForImageTextRetrieval` name of the Q-Former, the
    query tokens and ln_vision; without the text side: a stage-2 file's keys."""
    table = {"query_tokens": "query_tokens",
             "ln_vision.weight": "vision_model.post_layernorm.weight",
             "ln_vision.bias": "vision_model.post_layernorm.bias",
             "Qformer.bert.embeddings.LayerNorm.weight": "qformer.layernorm.weight",
             "Qformer.bert.embeddings.LayerNorm.bias": "qformer.layernorm.bias"}
    if text_side:
        table["Qformer.bert.embeddings.word_embeddings.weight"] = "embeddings.word_embeddings.weight"
        table["Qformer.bert.embeddings.position_embeddings.weight"] = "embeddings.position_embeddings.weight"
    for n in range(layers):
        lav, hf = f"Qformer.bert.encoder.layer.{n}", f"qformer.encoder.layer.{n}"
        for block in ["attention"] + (["crossattention"] if n % 2 == 0 else []):
            for proj in ("query", "key", "value"):
                for leaf in ("weight", "bias"):
                    table[f"{lav}.{block}.self.{proj}.{leaf}"] = f"{hf}.{block}.attention.{proj}.{leaf}"
            for leaf in ("weight", "bias"):
                table[f"{lav}.{block}.output.dense.{leaf}"] = f"{hf}.{block}.output.dense.{leaf}"
                table[f"{lav}.{block}.output.LayerNorm.{leaf}"] = f"{hf}.{block}.output.LayerNorm.{leaf}"
        for leaf in ("weight", "bias"):
            for inter, out in [("intermediate_query", "output_query")] + (
                    [("intermediate", "output")] if text_side else []):
                table[f"{lav}.{inter}.dense.{leaf}"] = f"{hf}.{inter}.dense.{leaf}"
                table[f"{lav}.{out}.dense.{leaf}"] = f"{hf}.{out}.dense.{leaf}"
                table[f"{lav}.{out}.LayerNorm.{leaf}"] = f"{hf}.{out}.LayerNorm.{leaf}"
    return table


def stage1_hf(seed: int = 3):
    """A random transformers `Blip2ForImageTextRetrieval` (stage 1) of the tiny sizes."""
    from transformers import Blip2Config, Blip2ForImageTextRetrieval

    torch.manual_seed(seed)
    model = Blip2ForImageTextRetrieval(Blip2Config(
        vision_config=VISION, qformer_config={**QF, "use_qformer_text_input": True},
        num_query_tokens=8, image_text_hidden_size=16)).eval()
    with torch.no_grad():   # larger-than-init values so that every tensor matters
        for name, p in model.named_parameters():
            if "layernorm" not in name.lower():
                p.normal_(0, 0.2)
    return model


def write_lavis_stage1(path: str, seed: int = 3) -> dict:
    """LAVIS's `blip2_pretrained.pth` layout of a random stage-1 model: the whole Q-Former,
    the ITG head `Qformer.cls.predictions.*` (its decoder tied to the word embeddings),
    the stage-1 heads and `temp`; returns the tensors by LAVIS name."""
    hf = stage1_hf(seed)
    state = hf.state_dict()
    lavis = {lav: state[name].clone() for lav, name in lavis_qformer_table(2, True).items()}
    g = torch.Generator().manual_seed(seed + 1)
    head = {"transform.dense.weight": (32, 32), "transform.dense.bias": (32,),
            "transform.LayerNorm.weight": (32,), "transform.LayerNorm.bias": (32,), "bias": (194,)}
    for leaf, shape in head.items():
        lavis[f"Qformer.cls.predictions.{leaf}"] = torch.randn(shape, generator=g)
    lavis["Qformer.cls.predictions.decoder.weight"] = lavis["Qformer.bert.embeddings.word_embeddings.weight"]
    lavis["Qformer.cls.predictions.decoder.bias"] = lavis["Qformer.cls.predictions.bias"]
    lavis["Qformer.bert.embeddings.position_ids"] = torch.arange(64)[None]
    for name in ("vision_proj", "text_proj"):
        lavis[f"{name}.weight"], lavis[f"{name}.bias"] = torch.randn(16, 32), torch.randn(16)
    lavis["itm_head.weight"], lavis["itm_head.bias"] = torch.randn(2, 32), torch.randn(2)
    lavis["temp"] = torch.tensor(0.07)
    torch.save({"model": lavis}, path)
    return lavis


@pytest.fixture(scope="module")
def stage1_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("stage1") / "blip2_pretrained.pth")
    return path, write_lavis_stage1(path)


def _ours_vs_lavis(model, lavis: dict) -> dict[str, tuple]:
    """Pairs (ours, LAVIS's) of what stage 1 fills, by hand: a few tensors of each part."""
    q = model.qformer
    return {
        "query_tokens": (model.query_tokens, lavis["query_tokens"]),
        "ln_vision": (model.ln_vision.weight, lavis["ln_vision.weight"]),
        "cross_attn": (q.layers[0].cross_attn.k.weight,
                       lavis["Qformer.bert.encoder.layer.0.crossattention.self.key.weight"]),
        "ffn_query": (q.layers[1].ffn_query.fc2.weight,
                      lavis["Qformer.bert.encoder.layer.1.output_query.dense.weight"]),
        "word_embeddings": (q.word_embeddings.weight,
                            lavis["Qformer.bert.embeddings.word_embeddings.weight"]),
        "position_embeddings": (q.position_embeddings.weight,
                                lavis["Qformer.bert.embeddings.position_embeddings.weight"]),
        "ffn_text": (q.layers[1].ffn_text.norm.bias,
                     lavis["Qformer.bert.encoder.layer.1.output.LayerNorm.bias"]),
        "lm_head.dense": (model.lm_head.dense.weight, lavis["Qformer.cls.predictions.transform.dense.weight"]),
        "lm_head.bias": (model.lm_head.bias, lavis["Qformer.cls.predictions.bias"]),
    }


# -- prefix LM (blip2_t5) ------------------------------------------------------------------
def test_split_point_is_drawn_from_one_to_the_midpoint():
    from lavis_ib.models.blip2.prefix_lm import split_captions, split_point

    for n in range(2, 10):
        ks = {split_point(n, seed) for seed in range(120)}
        assert ks == set(range(1, n // 2 + 1)), n          # every point, no other
    assert split_point(1, 5) == 0 and split_point(0, 5) == 0
    assert split_point(9, 123) == split_point(9, 123)         # one seed, one split
    both = split_captions(CAPTIONS, [11, 12, 13, 14])
    alone = [split_captions([c], [s]) for c, s in zip(CAPTIONS, [11, 12, 13, 14])]
    assert both.prefixes == [a.prefixes[0] for a in alone]   # a sample's split is its own
    for caption, pre, suf in zip(CAPTIONS, both.prefixes, both.suffixes):
        words = caption.split()
        assert f"{pre} {suf}".strip() == caption and len(pre.split()) <= len(words) // 2
    assert both.unsplit == 1 and both.prefixes[2] == "" and both.suffixes[2] == "bus"
    assert split_captions(["two cats"], None).text_seeded == 1


@pytest.fixture(scope="module")
def t5():
    torch.manual_seed(0)
    return load_model("blip2_t5", "tiny_flant5", stage2_objective="prefix_lm", is_eval=True)


def test_prefix_lm_trains_the_suffix_given_image_and_prefix(t5):
    """Captions alone: encoder [soft prompts ; prefix], decoder target suffix + </s>, the
    split drawn from each sample's seed; the same loss as the instruction layout given the
    halves (whose parity with transformers test_blip2_parity shows)."""
    from lavis_ib.models.blip2.prefix_lm import split_point

    images, seeds = _images(4), [101, 7, 55, 3]
    prefixes, suffixes = [], []
    for caption, seed in zip(CAPTIONS, seeds):
        words = caption.split()
        k = split_point(len(words), seed)
        prefixes.append(" ".join(words[:k]))
        suffixes.append(" ".join(words[k:]))
    assert prefixes[0] and prefixes[1] == "two" and prefixes[2] == ""
    with torch.no_grad():
        got = t5({"image": images, "text_input": CAPTIONS, "sample_seed": seeds})
        want = t5({"image": images, "text_input": prefixes, "text_output": suffixes})
        halves = [t5({"image": images[s], "text_input": CAPTIONS[s], "sample_seed": seeds[s]})
                  for s in (slice(0, 2), slice(2, 4))]
    assert got["num_tokens"] == want["num_tokens"]
    assert torch.allclose(got["loss_sum"], want["loss_sum"], atol=1e-5)
    # a batch split over processes draws the same points: the sums add up
    assert torch.allclose(halves[0]["loss_sum"] + halves[1]["loss_sum"], got["loss_sum"], atol=1e-5)
    assert t5.prefix_lm_counts["unsplit"] >= 1


def test_caption_samples_of_lavis_ib_caption_datasets_are_split(t5):
    """An empty `text_input` beside a caption in `text_output` (a caption dataset under
    the plain caption processor) is a caption sample; an instruction sample is not split."""
    images = _images(2, seed=1)
    batch = {"image": images, "text_input": ["", "Question: what is it? Answer:"],
             "text_output": [CAPTIONS[0], "a dog"], "sample_seed": [5, 6]}
    with torch.no_grad():
        got = t5(batch)
        ref_caption = t5({"image": images[:1], "text_input": [CAPTIONS[0]], "sample_seed": [5]})
        ref_instruction = t5({"image": images[1:], "text_input": [batch["text_input"][1]],
                              "text_output": ["a dog"]})
    assert torch.allclose(got["loss_sum"], ref_caption["loss_sum"] + ref_instruction["loss_sum"],
                          atol=1e-5)


def test_without_the_setting_captions_alone_are_an_error():
    model = load_model("blip2_t5", "tiny_flant5")
    with pytest.raises(LavisIbError, match="stage2_objective: prefix_lm"):
        model({"image": _images(1), "text_input": ["a dog"]})
    with pytest.raises(ConfigError, match="stage2_objective"):
        load_model("blip2_opt", "tiny_opt", stage2_objective="prefix_lm")
    with pytest.raises(ConfigError, match="stage2_objective"):
        load_model("blip2_t5", "tiny_flant5", stage2_objective="prefix")


# -- decoder-only: LAVIS's blip2_opt forward -----------------------------------------------
def lavis_opt_loss(model, images, texts, prompt, max_txt_len):
    """A transcription of LAVIS's `Blip2OPT.forward` (blip2_opt.py) on our modules: texts
    + "\\n" right-padded and cut at max_txt_len, pad and (with a prompt) the prompt's tokens
    masked, the soft prompts' targets -100, transformers' causal-LM mean loss."""
    tok = model.llm_tokenizer
    tok.padding_side = "right"
    batch = tok([t + "\n" for t in texts], return_tensors="pt", padding="longest",
                truncation=True, max_length=max_txt_len)
    targets = batch.input_ids.masked_fill(batch.input_ids == tok.pad_token_id, -100)
    if prompt:
        targets[:, : len(tok(prompt).input_ids)] = -100
    soft = model.query_outputs(images)
    targets = torch.cat([torch.full(soft.shape[:2], -100), targets], dim=1)
    embeds = torch.cat([soft, model.llm.get_input_embeddings()(batch.input_ids)], dim=1)
    mask = torch.cat([torch.ones(soft.shape[:2], dtype=torch.long), batch.attention_mask], dim=1)
    return model.llm(inputs_embeds=embeds, attention_mask=mask, labels=targets).loss


@pytest.mark.parametrize("prompt", ["", "a photo of"])
def test_opt_loss_is_lavis_blip2_opt_forward(prompt):
    torch.manual_seed(0)
    model = load_model("blip2_opt", "tiny_opt", is_eval=True, max_txt_len=24)
    texts = [f"{prompt} {c}".strip() for c in CAPTIONS]
    model.prompt = prompt
    with torch.no_grad():
        ref = lavis_opt_loss(model, _images(4), texts, prompt, 24)
        ours = model({"image": _images(4), "text_input": texts})
    assert abs(ours["loss"].item() - ref.item()) < 1e-5
    assert model.truncated > 0   # the long caption was cut at 24 tokens, as LAVIS cuts it


def test_blip2_llm_scores_the_caption_not_the_bos():
    """`blip2_llm`'s one difference from LAVIS's OPT layout: the BOS its tokenizer prepends
    is never a target; everything after it, "\\n" included, is."""
    torch.manual_seed(0)
    model = load_model("blip2_llm", "tiny_vicuna", is_eval=True)
    tok = model.llm_tokenizer
    prompts, targets = model._caption_ids(["", ""], CAPTIONS[:2])
    for caption, p, t in zip(CAPTIONS, prompts, targets):
        ids = tok(caption + "\n").input_ids
        assert ids[0] == tok.bos_token_id and p == ids[:1] and t == ids[1:]
        assert t[-1] == model.newline_id == tok.convert_tokens_to_ids("<0x0A>")


# -- stage 1 -> stage 2: the text side carried --------------------------------------------
def test_stage2_from_lavis_stage1_carries_the_text_side_frozen(stage1_file):
    path, lavis = stage1_file
    model = load_model("blip2_llm", "tiny_vicuna", init_from=[path])
    report = model.init_report
    assert report["unfilled"] == [] and report["new_in_stage2"] == ["llm_proj.weight", "llm_proj.bias"]
    unused = set(report[path]["unused"])
    assert {"temp", "itm_head.weight", "vision_proj.weight", "text_proj.bias"} <= unused
    for part, (ours, theirs) in _ours_vs_lavis(model, lavis).items():
        assert torch.equal(ours.detach(), theirs), part
    trainable = {n for n, _ in model.trainable_parameters()}
    assert not any("ffn_text" in n or "embeddings" in n or n.startswith("lm_head") for n in trainable)
    assert {n.split(".")[0] for n in trainable} == {"query_tokens", "qformer", "ln_vision", "llm_proj"}
    carried = {n: p.detach().clone() for n, p in model.named_parameters()
               if "ffn_text" in n or "_embeddings" in n or n.startswith("lm_head")}
    opt = torch.optim.AdamW([p for _, p in model.trainable_parameters()], lr=1e-2)
    model.train()
    for _ in range(2):
        out = model({"image": _images(2), "text_input": CAPTIONS[:2]})
        out["loss"].backward()
        # every trainable parameter has a gradient: DDP's unused-parameter check passes
        assert all(p.grad is not None for _, p in model.trainable_parameters())
        opt.step()
        opt.zero_grad()
    assert all(torch.equal(p, carried[n]) for n, p in model.named_parameters() if n in carried)


def test_lavis_route_checkpoint_may_be_stage1(stage1_file, tmp_path):
    """LAVIS's pretrain_stage2.yaml starts from blip2_pretrained.pth: as checkpoint= it is
    read as init_from, the projection random (logged)."""
    path, lavis = stage1_file
    src = load_model("blip2_opt", "tiny_opt")
    src.llm.save_pretrained(str(tmp_path / "llm"))
    src.llm_tokenizer.save_pretrained(str(tmp_path / "llm"))
    model = load_model("blip2_opt", "tiny_opt", checkpoint=path, llm_model=str(tmp_path / "llm"),
                       llm_tokenizer=None)
    assert model.init_report["new_in_stage2"] == ["llm_proj.weight", "llm_proj.bias"]
    for part, (ours, theirs) in _ours_vs_lavis(model, lavis).items():
        assert torch.equal(ours.detach(), theirs), part


def test_stage2_from_a_stage1_export_directory(tmp_path):
    """transformers' stage-1 layout (`Blip2ForImageTextRetrieval`) with lavis_ib's side file
    of the ITG head (`lm_head.*`, what a stage-1 export writes beside it)."""
    from safetensors.torch import save_file

    hf = stage1_hf(seed=5)
    hf.save_pretrained(str(tmp_path / "s1"))
    head = {"lm_head.dense.weight": torch.randn(32, 32), "lm_head.dense.bias": torch.randn(32),
            "lm_head.norm.weight": torch.randn(32), "lm_head.norm.bias": torch.randn(32),
            "lm_head.bias": torch.randn(194), "temp": torch.tensor(0.07)}
    save_file(head, str(tmp_path / "s1" / "lavis_ib_stage1.safetensors"))
    model = load_model("blip2_t5", "tiny_flant5", init_from=[str(tmp_path / "s1")])
    state = hf.state_dict()
    assert torch.equal(model.qformer.word_embeddings.weight, state["embeddings.word_embeddings.weight"])
    assert torch.equal(model.qformer.layers[0].ffn_text.fc1.weight,
                       state["qformer.encoder.layer.0.intermediate.dense.weight"])
    assert torch.equal(model.query_tokens, state["query_tokens"])
    assert torch.equal(model.lm_head.norm.weight, head["lm_head.norm.weight"])
    assert torch.equal(model.lm_head.bias, head["lm_head.bias"])


def test_stage2_export_carries_the_text_side_to_instructblip(stage1_file, tmp_path):
    """A trained stage-2 model's export: transformers reads the BLIP-2 layout; the text
    side travels in the side file; `pretrained=` restores all of it; InstructBLIP's
    `init_from` fills every trainable parameter from the export alone (no random
    projection, no allow_random_init)."""
    from transformers import Blip2ForConditionalGeneration

    path, lavis = stage1_file
    model = load_model("blip2_llm", "tiny_vicuna", init_from=[path])
    with torch.no_grad():
        model.llm_proj.weight.normal_(0, 0.3)    # "trained"
    out = model.save_pretrained(str(tmp_path / "s2"))
    assert os.path.isfile(os.path.join(out, "lavis_ib_qformer_text.safetensors"))
    theirs = Blip2ForConditionalGeneration.from_pretrained(out)
    assert torch.equal(theirs.language_projection.weight, model.llm_proj.weight)
    back = load_model("blip2_llm", "tiny_vicuna", pretrained=out)
    assert back.carries_text_side and hasattr(back, "lm_head")
    ref = model.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in back.state_dict().items() if not k.startswith("llm."))
    ib = load_model("instructblip", "tiny_vicuna", init_from=[out], allow_random_init=False,
                    llm_config=dict(load_model_cfg("tiny_vicuna")["llm_config"]),
                    llm_tokenizer=load_model_cfg("tiny_vicuna")["llm_tokenizer"])
    assert ib.init_report["unfilled"] == []
    assert torch.equal(ib.llm_proj.weight, model.llm_proj.weight)
    assert torch.equal(ib.qformer.word_embeddings.weight,
                       lavis["Qformer.bert.embeddings.word_embeddings.weight"])
    assert torch.equal(ib.qformer.layers[1].ffn_text.fc2.weight,
                       lavis["Qformer.bert.encoder.layer.1.output.dense.weight"])


def test_own_weights_come_before_init_from(stage1_file, tmp_path):
    """`pretrained=` a stage-2 directory (no text side) with stage 1 in `init_from`: the
    directory's weights stay, stage 1 adds the text side the directory lacks."""
    path, lavis = stage1_file
    torch.manual_seed(2)
    plain = load_model("blip2_llm", "tiny_vicuna", random_init_seed=4)
    out = plain.save_pretrained(str(tmp_path / "plain"))
    assert not os.path.isfile(os.path.join(out, "lavis_ib_qformer_text.safetensors"))
    model = load_model("blip2_llm", "tiny_vicuna", pretrained=out, init_from=[path])
    assert model.init_report["unfilled"] == [] and model.init_report["new_in_stage2"] == []
    assert torch.equal(model.query_tokens, plain.query_tokens)
    assert torch.equal(model.llm_proj.weight, plain.llm_proj.weight)
    assert torch.equal(model.qformer.layers[0].cross_attn.q.weight,
                       plain.qformer.layers[0].cross_attn.q.weight)
    assert torch.equal(model.qformer.word_embeddings.weight,
                       lavis["Qformer.bert.embeddings.word_embeddings.weight"])
    assert torch.equal(model.lm_head.bias, lavis["Qformer.cls.predictions.bias"])


def load_model_cfg(model_type: str) -> dict:
    """The `model:` node of a blip2_llm type's YAML (its LLM and tokenizer for InstructBLIP)."""
    from omegaconf import OmegaConf

    from lavis_ib.common.paths import package_path

    node = OmegaConf.load(package_path(f"configs/models/blip2_llm/{model_type}.yaml")).model
    return OmegaConf.to_container(node)


# -- LAVIS's blip2_pretrained_vicuna7b.pth -------------------------------------------------
def write_lavis_vicuna_stage2(out: str, seed: int = 7) -> tuple:
    """A random transformers `Blip2ForConditionalGeneration` with a LLaMA LLM, and its
    files in LAVIS's layout: the stage-2 .pth (query tokens, the Q-Former's query side,
    ln_vision, llm_proj; no text side, as LAVIS #344 describes it), eva_vit_g.pth and the
    LLM directory."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration

    from lavis_ib.testing.tiny_assets import BUILDERS
    from tests.models.test_lavis_route import eva_table

    cfg = load_model_cfg("tiny_vicuna")
    tok = BUILDERS["mistral"]()
    torch.manual_seed(seed)
    hf = Blip2ForConditionalGeneration(Blip2Config(
        vision_config=VISION, qformer_config=QF, text_config=cfg["llm_config"],
        num_query_tokens=8)).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if not name.startswith("language_model") and "layernorm" not in name.lower():
                p.normal_(0, 0.2)
    state = hf.state_dict()
    table = lavis_qformer_table(2, text_side=False)
    lavis = {lav: state[name].clone() for lav, name in table.items()}
    lavis["llm_proj.weight"] = state["language_projection.weight"].clone()
    lavis["llm_proj.bias"] = state["language_projection.bias"].clone()
    lavis["Qformer.bert.embeddings.position_ids"] = torch.arange(64)[None]   # a BERT buffer
    os.makedirs(out, exist_ok=True)
    torch.save({"model": lavis}, os.path.join(out, "blip2_pretrained_vicuna7b.pth"))
    eva = {lav: state[name].clone() for lav, name in eva_table(2).items()}
    for n in range(2):
        bias = state[f"vision_model.encoder.layers.{n}.self_attn.qkv.bias"]
        eva[f"blocks.{n}.attn.q_bias"], eva[f"blocks.{n}.attn.v_bias"] = bias[:32].clone(), bias[64:].clone()
    torch.save(eva, os.path.join(out, "eva_vit_g.pth"))
    hf.language_model.save_pretrained(os.path.join(out, "llm"))
    tok.save_pretrained(os.path.join(out, "llm"))
    files = {"checkpoint": os.path.join(out, "blip2_pretrained_vicuna7b.pth"),
             "vit_weights": os.path.join(out, "eva_vit_g.pth"), "llm_model": os.path.join(out, "llm")}
    return hf, lavis, files


def test_lavis_vicuna7b_stage2_file(stage1_file, tmp_path):
    """The published 7B file's layout loads into `blip2_llm` (soft prompts as transformers
    computes them from the same weights), lacks exactly the text side (2 embeddings + 6
    tensors per layer: 74 for BERT-base's 12, as reported in LAVIS #344), and with stage 1
    after it initialises InstructBLIP completely: the paper's route."""
    hf, lavis, files = write_lavis_vicuna_stage2(str(tmp_path / "v7"))
    text_keys = set(lavis_qformer_table(2, True)) - set(lavis_qformer_table(2, False))
    assert len(text_keys) == 2 + 6 * 2 and len(set(lavis_qformer_table(12, True))
                                              - set(lavis_qformer_table(12, False))) == 74
    model = load_model("blip2_llm", "tiny_vicuna", is_eval=True, llm_tokenizer=None, **files)
    images = _images(2, seed=3)
    with torch.no_grad():
        ref = hf.get_image_features(pixel_values=images).pooler_output
        assert torch.allclose(model.query_outputs(images), ref, atol=1e-5)
    assert "Qformer.bert.embeddings.position_ids" in model.load_report["checkpoint"].unexpected
    assert not model.carries_text_side
    # stage 2 + stage 1's text side in the same model (instruction tuning from it needs it)
    s1_path, s1 = stage1_file
    both = load_model("blip2_llm", "tiny_vicuna", llm_tokenizer=None, init_from=[s1_path], **files)
    assert torch.equal(both.llm_proj.weight, lavis["llm_proj.weight"])
    assert torch.equal(both.query_tokens, lavis["query_tokens"])
    assert torch.equal(both.qformer.word_embeddings.weight,
                       s1["Qformer.bert.embeddings.word_embeddings.weight"])
    ib = load_model("instructblip", "tiny_vicuna", allow_random_init=False,
                    init_from=[files["checkpoint"], s1_path])
    report = ib.init_report
    assert report["unfilled"] == []
    assert "llm_proj.weight" in report[files["checkpoint"]]["filled"]
    assert torch.equal(ib.llm_proj.weight, lavis["llm_proj.weight"])
    assert torch.equal(ib.qformer.layers[0].cross_attn.v.weight,
                       lavis["Qformer.bert.encoder.layer.0.crossattention.self.value.weight"])
    assert sorted(report[s1_path]["filled"]) == sorted(
        ["qformer.word_embeddings.weight", "qformer.position_embeddings.weight"]
        + [f"qformer.layers.{i}.ffn_text.{p}.{leaf}" for i in range(2)
           for p in ("fc1", "fc2", "norm") for leaf in ("weight", "bias")])


def test_instructblip_without_a_stage2_source_logs_the_random_projection(stage1_file, caplog):
    path, _ = stage1_file
    with caplog.at_level("WARNING"):
        ib = load_model("instructblip", "tiny_vicuna", init_from=[path], allow_random_init=True)
    assert ib.init_report["unfilled"] == ["llm_proj.weight", "llm_proj.bias"]
    assert any("llm_proj" in r.getMessage() and "random" in r.getMessage() for r in caplog.records)


def test_stage2_rng_free_split_is_reproducible_across_calls(t5):
    """The split depends on the sample alone, never on torch's or numpy's global state."""
    batch = {"image": _images(2), "text_input": CAPTIONS[:2], "sample_seed": [1, 2]}
    with torch.no_grad():
        first = t5(batch)["loss_sum"]
        torch.manual_seed(123)
        np.random.seed(5)
        second = t5(batch)["loss_sum"]
    assert torch.equal(first, second)


# -- projects ------------------------------------------------------------------------------
STAGE2 = {"opt2.7b": ("blip2_opt", 1920, None), "flant5xl": ("blip2_t5", 1520, "prefix_lm"),
          "vicuna7b": ("blip2_llm", 1920, None), "vicuna13b": ("blip2_llm", 1920, None)}


def _project(path: str):
    from lavis_ib.common.config import Config
    from lavis_ib.common.paths import package_path

    return Config(package_path(f"configs/projects/{path}.yaml"))


@pytest.mark.parametrize("name", sorted(STAGE2))
def test_stage2_projects_follow_the_paper(name):
    """BLIP-2 Sec. 3.4: 80k steps, batch 1920 (OPT) / 1520 (FlanT5), AdamW beta2 0.98, weight
    decay 0.05, cosine from a 1e-4 peak (5e-5 floor in stage 2) after 2k warm-up steps;
    stage 1 as init_from, only the projection new."""
    from lavis_ib.runners.batching import derive_batching

    arch, batch, objective = STAGE2[name]
    cfg = _project(f"blip2/pretrain_stage2_{name}")
    run, model = cfg.run_cfg, cfg.model_cfg
    assert (run.max_iters, run.global_batch_size, run.beta2, run.weight_decay, run.init_lr,
            run.min_lr, run.warmup_steps, run.lr_sched) == (
        80000, batch, 0.98, 0.05, 1e-4, 5e-5, 2000, "linear_warmup_cosine_lr")
    for world in (8, 16):
        assert derive_batching(run, world)[0] == batch
    assert model.arch == arch and model.get("stage2_objective") == objective
    assert list(model.init_from)[0].endswith("blip2_pretrained.pth") and not model.allow_random_init
    assert not run.balanced_sampling and run.val_every == 0
    for entry in cfg.datasets_cfg.values():
        assert list(entry.text_processor.train.templates) == [""]


def test_caption_datasets_under_the_stage2_processor_give_caption_samples(fixture_root):
    """The projects' empty instruction template gives COCO's caption alone (an empty
    text_input): blip2_opt scores the caption (LAVIS's layout), blip2_t5 with prefix LM
    splits it."""
    from lavis_ib.common.registry import registry
    from omegaconf import OmegaConf

    fixtures = fixture_root.overrides["coco_caption"]
    entry = OmegaConf.merge(_project("blip2/pretrain_stage2_flant5xl").datasets_cfg.coco_caption,
                            fixtures, {"vis_processor": {"train": {"image_size": 32}}})
    assert entry.text_processor.train.name == "instruction_template"
    train = registry.get_builder_class("coco_caption")(entry).build_datasets()["train"]
    batch = train.collater([train[0], train[1]])
    assert batch["text_input"] == ["", ""] and all(batch["text_output"])
    opt = load_model("blip2_opt", "tiny_opt", is_eval=True)
    with torch.no_grad():
        got = opt({"image": batch["image"], "text_input": batch["text_input"],
                   "text_output": batch["text_output"]})
        ref = opt({"image": batch["image"], "text_input": batch["text_output"]})
    assert torch.equal(got["loss_sum"], ref["loss_sum"])
    t5 = load_model("blip2_t5", "tiny_flant5", stage2_objective="prefix_lm", is_eval=True)
    with torch.no_grad():
        t5(batch)
    assert t5.prefix_lm_counts["samples"] == 2


@pytest.mark.parametrize("size", ["7b", "13b"])
def test_vicuna_instruction_tuning_starts_from_stage2(size):
    """The paper's route by default (7B: the published stage-2 file, then stage 1 for the
    text side; 13B: our stage-2 export), nothing random; the stage-1 start is a named
    variant that differs in its initialisation alone."""
    from lavis_ib.common.containers import to_plain

    base = _project(f"instructblip/instruction_tuning_vicuna{size}")
    variant = _project(f"instructblip/instruction_tuning_vicuna{size}_from_stage1")
    sources = list(base.model_cfg.init_from)
    assert not base.model_cfg.allow_random_init
    if size == "7b":
        assert sources[0].endswith("blip2_pretrained_vicuna7b.pth")
        assert sources[1] == "Salesforce/blip2-itm-vit-g"
    else:
        assert len(sources) == 1 and sources[0].endswith("blip2_vicuna13b_stage2")
    assert list(variant.model_cfg.init_from) == ["Salesforce/blip2-itm-vit-g"]
    assert variant.model_cfg.allow_random_init
    strip = ("init_from", "allow_random_init")
    assert {k: v for k, v in to_plain(base.model_cfg).items() if k not in strip} == \
        {k: v for k, v in to_plain(variant.model_cfg).items() if k not in strip}
    assert to_plain(base.datasets_cfg) == to_plain(variant.datasets_cfg)
    run_a, run_b = to_plain(base.run_cfg), to_plain(variant.run_cfg)
    assert run_b.pop("output_dir").endswith("_from_stage1") and run_a.pop("output_dir")
    assert run_a == run_b
