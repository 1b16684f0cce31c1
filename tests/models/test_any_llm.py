"""Any decoder-only LLM, shown on tiny random models of six families: LLaMA-2/Vicuna,
LLaMA-3 (grouped-query attention, rope scaling), Qwen2 (qkv biases), Mistral (sliding
window), Phi-3 (fused projections, sliding window) and Gemma-2 (soft-capping, eager
attention only, scaled embeddings, alternating windows).

For each: stage 1 (a LAVIS-layout file) -> `blip2_llm` stage 2 (a few steps) -> export ->
InstructBLIP `init_from` the export (no random part) -> a few steps; both models generate
what transformers' `generate` returns on the same embeddings (one sample at a time,
unpadded) and rank candidates as a brute-force full forward per candidate scores them.
"""
from __future__ import annotations

import math

import pytest
import torch

from lavis_ib import load_model
from tests.models.test_blip2_stage2 import load_model_cfg, write_lavis_stage1

FAMILIES = ["tiny_vicuna", "tiny_llama3", "tiny_qwen2", "tiny_mistral", "tiny_phi3", "tiny_gemma2"]
NEW_TOKENIZERS = ["llama3", "qwen2", "mistral", "phi3", "gemma2"]
CAPTIONS = ["a dog runs on the grass", "two red buses near a tree"]
PROMPTS = ["What is in the picture? Answer in a few words, please.", "a"]
CANDIDATES = [["a red car", "a red", "a", "two dogs on a mat", "no"], ["yes", "a red car", "two"]]


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", NEW_TOKENIZERS)
def test_shipped_tokenizers_match_their_builders(kind):
    from transformers import AutoTokenizer

    from lavis_ib.testing import tiny_assets

    shipped = AutoTokenizer.from_pretrained(tiny_assets.asset_path(kind))
    built = tiny_assets.BUILDERS[kind]()
    assert shipped.get_vocab() == built.get_vocab()
    assert (shipped.bos_token, shipped.eos_token, shipped.pad_token) == (
        built.bos_token, built.eos_token, built.pad_token)
    for text in ("Hello, world?\nA second line.", "Ünïcode and 2+2"):
        assert shipped(text).input_ids == built(text).input_ids
        assert shipped.decode(shipped(text).input_ids, skip_special_tokens=True) == text


def test_tokenizer_layouts():
    """Each family's special-token layout, as the real tokenizers have it."""
    from lavis_ib.testing.tiny_assets import BUILDERS

    llama3, qwen2, mistral, phi3, gemma2 = (BUILDERS[k]() for k in NEW_TOKENIZERS)
    assert llama3("x").input_ids[0] == llama3.convert_tokens_to_ids("<|begin_of_text|>")
    assert llama3.pad_token is None and llama3.eos_token == "<|end_of_text|>"
    assert qwen2.bos_token is None and qwen2("x").input_ids == qwen2("x", add_special_tokens=False).input_ids
    assert qwen2.eos_token == qwen2.pad_token == "<|endoftext|>"
    assert (mistral.unk_token_id, mistral.bos_token_id, mistral.eos_token_id) == (0, 1, 2)
    assert mistral("x").input_ids[0] == 1 and mistral.pad_token is None
    assert phi3("x").input_ids[0] != phi3.bos_token_id and phi3.eos_token == "<|endoftext|>"
    assert (gemma2.pad_token_id, gemma2.eos_token_id, gemma2.bos_token_id) == (0, 1, 2)
    assert gemma2("x").input_ids[0] == 2
    for tok in (mistral, phi3, gemma2):   # byte fallback: a newline is a token, not lost
        assert tok.convert_tokens_to_ids("<0x0A>") in tok("a\nb", add_special_tokens=False).input_ids


def test_family_traits_of_the_tiny_configs():
    from lavis_ib.models.llm.families import attention_windows

    llms = {t: load_model("blip2_llm", t).llm for t in FAMILIES}
    llama3 = llms["tiny_llama3"].config
    assert llama3.num_key_value_heads < llama3.num_attention_heads
    assert llama3.rope_parameters["rope_type"] == "llama3"
    assert llms["tiny_qwen2"].model.layers[0].self_attn.q_proj.bias is not None
    assert hasattr(llms["tiny_phi3"].model.layers[0].self_attn, "qkv_proj")
    assert attention_windows(llms["tiny_mistral"].config) == (16, False)
    assert attention_windows(llms["tiny_phi3"].config) == (16, False)
    assert attention_windows(llms["tiny_gemma2"].config) == (16, True)
    assert attention_windows(llms["tiny_llama3"].config) == (None, False)
    assert attention_windows(llms["tiny_qwen2"].config) == (None, False)
    gemma = llms["tiny_gemma2"]
    assert gemma.config._attn_implementation == "eager"
    assert gemma.config.attn_logit_softcapping and gemma.config.final_logit_softcapping


def test_gemma2_scales_its_embeddings_inside_the_embedding_module():
    """transformers 5: Gemma's sqrt(hidden) scaling is part of the embedding module, not of
    the model's forward; so token embeddings an adapter builds are scaled and the soft
    prompts beside them are not (under transformers 4 both were scaled in forward)."""
    llm = load_model("blip2_llm", "tiny_gemma2").llm.eval()
    ids = torch.tensor([[2, 40, 41, 42]])
    embed = llm.get_input_embeddings()
    with torch.no_grad():
        scaled = embed(ids)
        assert torch.allclose(scaled, embed.weight[ids] * math.sqrt(llm.config.hidden_size))
        by_ids = llm(input_ids=ids).logits
        by_embeds = llm(inputs_embeds=scaled).logits
    assert torch.allclose(by_ids, by_embeds, atol=1e-5)


def test_gemma2_runs_eager_attention_only(caplog):
    """Soft-capped attention logits change the model, and transformers computes them in
    its eager kernel (it refuses SDPA for Gemma-2); a config saved for another kernel is
    put back on eager by `make_adapter` (logged)."""
    from lavis_ib.models.llm.families import prepare_llm

    llm = load_model("blip2_llm", "tiny_gemma2").llm.eval()
    ids = torch.tensor([[2] + list(range(40, 60))])
    with pytest.raises(ValueError, match="scaled_dot_product_attention"):
        llm.set_attn_implementation("sdpa")
    with torch.no_grad():
        for layer in llm.model.layers:   # attention scores of tens: the cap of 50 bites
            layer.self_attn.q_proj.weight.normal_(0, 1.0)
            layer.self_attn.k_proj.weight.normal_(0, 1.0)
        capped = llm(input_ids=ids).logits
        caps = [layer.self_attn.attn_logit_softcapping for layer in llm.model.layers]
        for layer in llm.model.layers:
            layer.self_attn.attn_logit_softcapping = None
        uncapped = llm(input_ids=ids).logits
        for layer, cap in zip(llm.model.layers, caps):
            layer.self_attn.attn_logit_softcapping = cap
    assert not torch.allclose(capped, uncapped, atol=1e-4)
    llm.config._attn_implementation = "flash_attention_2"    # e.g. a config saved on a GPU
    with caplog.at_level("WARNING"):
        prepare_llm(llm)
    assert llm.config._attn_implementation == "eager"
    assert any("flash_attention_2 -> eager" in r.getMessage() for r in caplog.records)
    with torch.no_grad():
        assert torch.equal(llm(input_ids=ids).logits, capped)


# -- the chain, per family ----------------------------------------------------------------
def _steps(model, batch: dict, n: int = 3) -> list[float]:
    """n AdamW steps on one batch; the losses before each step."""
    model.train()
    opt = torch.optim.AdamW([p for _, p in model.trainable_parameters()], lr=2e-3)
    losses = []
    for _ in range(n):
        out = model(batch)
        out["loss"].backward()
        opt.step()
        opt.zero_grad()
        losses.append(out["loss"].item())
    model.eval()
    return losses


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("s1") / "blip2_pretrained.pth")
    write_lavis_stage1(path)
    return path


@pytest.fixture(scope="module", params=FAMILIES)
def chain(request, stage1, tmp_path_factory):
    family = request.param
    torch.manual_seed(0)
    stage2 = load_model("blip2_llm", family, init_from=[stage1])
    s2_losses = _steps(stage2, {"image": _images(2), "text_input": CAPTIONS})
    export = stage2.save_pretrained(str(tmp_path_factory.mktemp(family) / "stage2"))
    cfg = load_model_cfg(family)
    ib = load_model("instructblip", "tiny_vicuna", init_from=[export], allow_random_init=False,
                    llm_config=cfg["llm_config"], llm_tokenizer=cfg["llm_tokenizer"])
    assert ib.init_report["unfilled"] == []
    start = {n: p.detach().clone() for n, p in ib.named_parameters()}
    ib_losses = _steps(ib, {"image": _images(2, 1), "text_input": PROMPTS,
                            "text_output": ["a dog", "no"]})
    return {"family": family, "stage2": stage2, "ib": ib, "start": start,
            "losses": (s2_losses, ib_losses)}


def test_stage2_then_instruction_tuning_train(chain):
    s2_losses, ib_losses = chain["losses"]
    assert s2_losses[-1] < s2_losses[0] and ib_losses[-1] < ib_losses[0], chain["losses"]
    stage2, ib, start = chain["stage2"], chain["ib"], chain["start"]
    # InstructBLIP started from stage 2: its projection and query side, no random part
    assert torch.equal(start["llm_proj.weight"], stage2.llm_proj.weight)
    assert torch.equal(start["query_tokens"], stage2.query_tokens)
    assert torch.equal(start["qformer.layers.1.ffn_text.fc1.weight"],
                       stage2.qformer.layers[1].ffn_text.fc1.weight)
    # the same frozen LLM in both stages (the tiny types draw it first from one seed)
    theirs = stage2.llm.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in ib.llm.state_dict().items())


def _hf_generate(model, images, prompts, **settings) -> list[str]:
    """transformers' `generate` on [soft prompts ; prompt embeddings], one sample at a
    time (no padding), with the model's end token."""
    ad = model.adapter
    prefix = model.encode(images, prompts)
    out = []
    for i, prompt in enumerate(prompts):
        ids = torch.tensor(ad.tokenizer(prompt).input_ids, dtype=torch.long)
        embeds = torch.cat([prefix[i], ad.embed(ids)], 0)[None]
        with torch.no_grad():
            seq = model.llm.generate(inputs_embeds=embeds, attention_mask=torch.ones(
                embeds.shape[:2], dtype=torch.long), eos_token_id=ad.eos_id,
                pad_token_id=ad.pad_id, do_sample=False, **settings)
        out += ad.decode(seq)
    return out


@pytest.mark.parametrize("which", ["stage2", "ib"])
def test_generation_is_transformers_generate(chain, which):
    model = chain[which]
    images = _images(2, seed=4)
    for beams in (1, 3):
        ours = model.generate({"image": images, "prompt": PROMPTS}, num_beams=beams,
                              max_length=6, min_length=1, repetition_penalty=1.0)
        ref = _hf_generate(model, images, PROMPTS, num_beams=beams, max_new_tokens=6,
                           min_new_tokens=1)
        assert ours == ref, (chain["family"], which, beams)


def _brute_force(model, images, prompts, candidates, append_eos) -> torch.Tensor:
    """Each candidate's summed log-probability from one full forward of
    [soft prompts ; prompt ; candidate], no cache, the model's own masks."""
    ad = model.adapter
    prefix = model.encode(images, prompts)
    scores = []
    for i, prompt in enumerate(prompts):
        prompt_ids = ad.tokenizer(prompt).input_ids
        for cand in candidates[i]:
            target = ad.tokenize_targets([cand], append_eos=append_eos)[0]
            embeds = torch.cat([prefix[i], ad.embed(torch.tensor(prompt_ids + target))], 0)[None]
            with torch.no_grad():
                logp = model.llm(inputs_embeds=embeds).logits[0].float().log_softmax(-1)
            picked = logp[-len(target) - 1:-1].gather(-1, torch.tensor(target)[:, None])
            scores.append(picked.sum())
    return torch.stack(scores)


@pytest.mark.parametrize("which", ["stage2", "ib"])
def test_ranking_is_brute_force(chain, which):
    """The trie scorer (packed nodes over the prompt's cache, with the family's sliding
    windows applied to its own masks) against full forwards; the sequences are longer
    than the 16-token windows of Mistral, Phi-3 and Gemma-2."""
    model = chain[which]
    images = _images(2, seed=5)
    for append_eos, chunk in ((True, 2), (False, 64)):
        scores, mask = model.score_candidates({"image": images, "prompt": PROMPTS},
                                              CANDIDATES, append_eos=append_eos, chunk_size=chunk)
        ours = torch.cat([scores[i, :len(c)] for i, c in enumerate(CANDIDATES)])
        ref = _brute_force(model, images, PROMPTS, CANDIDATES, append_eos)
        assert (ours - ref).abs().max().item() < 1e-4, (chain["family"], which, append_eos)
    assert model.encode(images, PROMPTS).shape[1] + len(model.adapter.tokenizer(PROMPTS[0]).input_ids) > 16
