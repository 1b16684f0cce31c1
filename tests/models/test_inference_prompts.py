"""At inference the LLM sees the whole prompt (the authors' code truncates the LLM prompt
only in training): a VisDial-style prompt far longer than `max_txt_len` (128) is generated
and scored as transformers does on the full prompt. Decoder-only LLMs cut a prompt only
when soft prompts + prompt + budget exceed `max_position_embeddings`, and count it;
encoder-decoder LLMs (relative positions) cut only beyond `max_prompt_tokens` (2048). The Q-Former keeps its left
truncation (here to its 64 positions), as in the authors' code.
"""
from __future__ import annotations

import pytest
import torch

from tests.models.conftest import Q, hf_min_length
from tests.models.test_hf_parity import _images

CONTEXT = 256     # max_position_embeddings of the tiny LLaMA / OPT checkpoints
NEW = 6           # generated tokens


def visdial_prompt(rounds: int) -> str:
    history = " ".join(f"q: is there a dog number {i}? a: no, a cat {i}." for i in range(rounds))
    return f"Dialog history: {history}\nQuestion: what colour is the cat? Short answer:"


def _qformer(processor, prompt: str):
    tok = processor.qformer_tokenizer
    tok.truncation_side = "left"
    enc = tok([prompt], truncation=True, max_length=64, return_tensors="pt")
    return enc.input_ids, enc.attention_mask


def _hf_inputs(fam, hf, processor, prompt_ids):
    ids = [hf.config.image_token_index] * Q + list(prompt_ids)
    return torch.tensor([ids])


def _hf_greedy(fam, hf, processor, image, prompt, prompt_ids):
    qids, qmask = _qformer(processor, prompt)
    ids = _hf_inputs(fam, hf, processor, prompt_ids)
    with torch.no_grad():
        out = hf.generate(pixel_values=image[None], qformer_input_ids=qids,
                          qformer_attention_mask=qmask, input_ids=ids,
                          attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1,
                          max_new_tokens=NEW, **hf_min_length(fam == "t5", 1))
    out = out if fam == "t5" else out[:, ids.shape[1]:]
    return processor.tokenizer.batch_decode(out, skip_special_tokens=True)[0].strip()


def _hf_score(fam, hf, processor, image, prompt, prompt_ids, cand_ids):
    qids, qmask = _qformer(processor, prompt)
    with torch.no_grad():
        if fam == "t5":
            logits = hf(pixel_values=image[None], qformer_input_ids=qids,
                        qformer_attention_mask=qmask,
                        input_ids=_hf_inputs(fam, hf, processor, prompt_ids),
                        labels=torch.tensor([cand_ids])).logits[0]
        else:
            ids = _hf_inputs(fam, hf, processor, list(prompt_ids) + cand_ids)
            logits = hf(pixel_values=image[None], qformer_input_ids=qids,
                        qformer_attention_mask=qmask,
                        input_ids=ids).logits[0, -len(cand_ids) - 1:-1]
    return logits.log_softmax(-1).gather(-1, torch.tensor(cand_ids)[:, None]).sum().item()


@pytest.mark.parametrize("fam", ["llama", "opt", "t5"])
def test_a_long_prompt_reaches_the_llm_whole(fam, hf_models, our_models):
    hf, processor = hf_models[fam]
    model = our_models[fam][0]
    prompt = visdial_prompt(3)
    full = processor.tokenizer(prompt).input_ids
    assert model.max_txt_len < len(full) < CONTEXT - Q - NEW, len(full)
    image = _images(1, seed=5)
    before = model.inference_counts().get("num_truncated", 0)
    kwargs = dict(num_beams=1, max_length=NEW, min_length=1, repetition_penalty=1.0)
    text = model.generate({"image": image, "prompt": prompt}, **kwargs)[0]
    assert text == _hf_greedy(fam, hf, processor, image[0], prompt, full)
    cand = processor.tokenizer("a black cat", add_special_tokens=False).input_ids
    cand = cand + [processor.tokenizer.eos_token_id]
    scores, _ = model.score_candidates({"image": image, "prompt": [prompt]}, ["a black cat"],
                                       append_eos=True)
    ref = _hf_score(fam, hf, processor, image[0], prompt, full, cand)
    assert abs(scores[0, 0].item() - ref) < 1e-3
    assert model.inference_counts().get("num_truncated", 0) == before


@pytest.mark.parametrize("fam", ["llama", "t5"])
def test_only_a_prompt_beyond_the_context_is_cut_and_counted(fam, hf_models, our_models):
    hf, processor = hf_models[fam]
    model = our_models[fam][0]
    prompt = visdial_prompt(7)
    full = processor.tokenizer(prompt).input_ids
    assert len(full) > CONTEXT, len(full)
    image = _images(1, seed=6)
    before = model.inference_counts().get("num_truncated", 0)
    kwargs = dict(num_beams=1, max_length=NEW, min_length=1, repetition_penalty=1.0)
    text = model.generate({"image": image, "prompt": prompt}, **kwargs)[0]
    if fam == "t5":     # relative positions: the whole prompt (far below max_prompt_tokens)
        assert text == _hf_greedy(fam, hf, processor, image[0], prompt, full)
        assert model.inference_counts()["num_truncated"] == before
        return
    room = CONTEXT - Q - NEW     # the prompt's start is cut; its BOS is kept
    kept = full[:1] + full[len(full) - room + 1:]
    assert len(kept) == room and kept[0] == processor.tokenizer.bos_token_id
    assert text == _hf_greedy(fam, hf, processor, image[0], prompt, kept)
    assert model.inference_counts()["num_truncated"] == before + 1
