"""BLIP-2 parity with transformers' `Blip2ForConditionalGeneration` on tiny random
checkpoints written by transformers itself (OPT and T5 text models, tokenizers built in
code), loaded into `blip2_opt` / `blip2_t5` with `pretrained=<dir>`; and the way back:
`save_pretrained` writes a directory transformers loads with the same outputs.

The oracle is fed transformers' token layout ([<image> x Q ; prompt (the tokenizer's own
special tokens) ; target]); the OPT training target is LAVIS's: `</s>`, the caption, "\\n"
(the bos is a target when the prompt is empty, and the prompt's tokens are not).
"""
from __future__ import annotations

import os

import pytest
import torch

from tests.models.conftest import IMAGE, MEAN, Q, STD, _text_config

TYPES = {"opt": ("blip2_opt", "tiny_opt"), "t5": ("blip2_t5", "tiny_flant5")}
PROMPTS = ["Question: what is it? Answer:", "a photo of", "Describe the picture in detail."]
CAPTIONS = ["a dog on the grass", "two birds", "the cat sits on a mat near the door of an old house"]
TARGETS = ["a dog", "two birds on a wire", "no"]


def write_blip2_checkpoint(directory: str, family: str, seed: int = 0) -> str:
    """A random `Blip2ForConditionalGeneration` + `Blip2Processor` directory."""
    from transformers import (Blip2Config, Blip2ForConditionalGeneration, Blip2Processor,
                              BlipImageProcessorPil)

    from lavis_ib.testing.tiny_assets import BUILDERS

    tok = BUILDERS["opt" if family == "opt" else "t5"]()
    image_proc = BlipImageProcessorPil(size={"height": IMAGE, "width": IMAGE},
                                       image_mean=MEAN, image_std=STD, do_convert_rgb=True)
    processor = Blip2Processor(image_processor=image_proc, tokenizer=tok, num_query_tokens=Q)
    config = Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=IMAGE, patch_size=14),
        qformer_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=48, encoder_hidden_size=32),
        text_config=_text_config(family, len(tok)), num_query_tokens=Q,
        image_token_index=tok.convert_tokens_to_ids("<image>"))
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(config).eval()
    with torch.no_grad():  # larger-than-init weights so that outputs depend on everything
        model.query_tokens.normal_(0, 1.0)
        for module in (model.qformer, model.vision_model):  # the ViT is zeros otherwise
            for name, p in module.named_parameters():
                if "layernorm" not in name.lower() and "layer_norm" not in name:
                    p.normal_(0, 0.2)
        model.language_projection.weight.normal_(0, 0.3)
    if family == "opt":
        _make_newline_likely(model, tok)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def _make_newline_likely(model, tok) -> None:
    """Give "\n" (tied embedding) the direction of the token the random model repeats most,
    so that greedy generation does emit it and the stop at "\n" is exercised."""
    image = torch.randn(1, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(2))
    ids = torch.tensor([[model.config.image_token_index] * Q + tok("a photo of").input_ids])
    with torch.no_grad():
        out = model.generate(pixel_values=image, input_ids=ids, max_new_tokens=8, do_sample=False)
        common = torch.mode(out[0, ids.shape[1]:]).values.item()
        table = model.language_model.get_input_embeddings().weight
        table[tok("\n", add_special_tokens=False).input_ids[0]] = 1.1 * table[common]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """{family: (transformers model, its tokenizer, our model)}."""
    from transformers import AutoTokenizer, Blip2ForConditionalGeneration

    from lavis_ib import load_model

    root = tmp_path_factory.mktemp("hf_blip2")
    out = {}
    for fam, (arch, model_type) in TYPES.items():
        d = write_blip2_checkpoint(os.path.join(root, fam), fam)
        out[fam] = (Blip2ForConditionalGeneration.from_pretrained(d).eval(),
                    AutoTokenizer.from_pretrained(d),
                    load_model(arch, model_type, is_eval=True, pretrained=d), d)
    return out


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(seed))


def _ids(hf, tok, prompt: str, extra=()) -> torch.Tensor:
    return torch.tensor([[hf.config.image_token_index] * Q + tok(prompt).input_ids + list(extra)])


@pytest.mark.parametrize("fam", ["opt", "t5"])
def test_query_outputs_match_get_image_features(fam, pairs):
    hf, _, ours, _ = pairs[fam]
    images = _images(3, seed=1)
    with torch.no_grad():
        ref = hf.get_image_features(pixel_values=images).pooler_output
        got = ours.encode(images)
    assert got.shape == ref.shape == (3, Q, hf.config.text_config.hidden_size)
    assert (got - ref).abs().max().item() < 1e-4


@pytest.mark.parametrize("fam", ["opt", "t5"])
def test_greedy_generation_matches_transformers(fam, pairs):
    hf, tok, ours, _ = pairs[fam]
    images = _images(3, seed=2)
    eos = tok("\n", add_special_tokens=False).input_ids[0] if fam == "opt" else tok.eos_token_id
    ref = []
    for i in range(3):
        ids = _ids(hf, tok, PROMPTS[i])
        with torch.no_grad():
            out = hf.generate(pixel_values=images[i:i + 1], input_ids=ids,
                              attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1,
                              max_new_tokens=8, min_new_tokens=1, repetition_penalty=1.0,
                              eos_token_id=eos)
        new = out[:, ids.shape[1]:] if fam == "opt" else out
        ref.append(tok.batch_decode(new, skip_special_tokens=True)[0].strip())
    assert any(ref), "the oracle generated only empty strings; the test would be weak"
    if fam == "opt":   # some answers stopped at "\n" before max_new_tokens
        assert any(len(tok(r, add_special_tokens=False).input_ids) < 7 for r in ref), ref
    got = ours.generate({"image": images, "prompt": PROMPTS}, num_beams=1, max_length=8,
                        min_length=1, repetition_penalty=1.0)
    assert got == ref


def _opt_loss(hf, tok, image, caption, prompt, max_txt_len):
    """transformers' mean loss of LAVIS's OPT layout (the tokenizer cuts at max_txt_len,
    as LAVIS asks it to) and its target count."""
    ids = tok(caption + "\n", truncation=True, max_length=max_txt_len).input_ids
    n_prompt = len(tok(prompt).input_ids) if prompt else 0
    full = _ids(hf, tok, "", [])[:, :Q].tolist()[0] + ids
    labels = [-100] * (Q + n_prompt) + ids[n_prompt:]
    with torch.no_grad():
        out = hf(pixel_values=image[None], input_ids=torch.tensor([full]),
                 labels=torch.tensor([labels]))
    return out.loss.item(), len(ids) - n_prompt


def _t5_loss(hf, tok, image, prompt, target):
    tgt = tok(target).input_ids
    with torch.no_grad():
        out = hf(pixel_values=image[None], input_ids=_ids(hf, tok, prompt),
                 labels=torch.tensor([tgt]))
    return out.loss.item(), len(tgt)


@pytest.mark.parametrize("fam", ["opt", "t5"])
@pytest.mark.parametrize("prompt", ["", "a photo of"])
def test_loss_matches_transformers(fam, prompt, pairs):
    hf, tok, ours, _ = pairs[fam]
    images = _images(3, seed=3)
    if fam == "opt":
        texts = [f"{prompt} {c}".strip() for c in CAPTIONS]
        ref = [_opt_loss(hf, tok, images[i], texts[i], prompt, 32) for i in range(3)]
        samples = [{"text_input": [texts[i]]} for i in range(3)]
        batch = {"text_input": texts}
    else:
        prompts = [prompt or p for p in PROMPTS]
        ref = [_t5_loss(hf, tok, images[i], prompts[i], TARGETS[i]) for i in range(3)]
        samples = [{"text_input": [prompts[i]], "text_output": [TARGETS[i]]} for i in range(3)]
        batch = {"text_input": prompts, "text_output": TARGETS}
    old = ours.prompt, ours.max_txt_len
    ours.prompt, ours.max_txt_len = prompt, 32   # LAVIS's limit: the long caption is cut
    cut_before = ours.truncated
    try:
        with torch.no_grad():
            for i in range(3):
                out = ours({"image": images[i:i + 1], **samples[i]})
                assert out["num_tokens"].item() == ref[i][1]
                assert abs(out["loss"].item() - ref[i][0]) < 1e-4
            out = ours({"image": images, **batch})
    finally:
        ours.prompt, ours.max_txt_len = old
    if fam == "opt":   # the long caption is cut, and counted, once per call
        assert ours.truncated - cut_before == 2 * sum(len(tok(t + "\n").input_ids) > 32
                                                      for t in texts) > 0
    total, count = sum(l * n for l, n in ref), sum(n for _, n in ref)
    assert out["num_tokens"].item() == count
    assert abs(out["loss"].item() - total / count) < 1e-4


@pytest.mark.parametrize("fam", ["opt", "t5"])
def test_candidate_scores_match_a_masked_forward(fam, pairs):
    hf, tok, ours, _ = pairs[fam]
    images = _images(2, seed=4)
    prompts = PROMPTS[:2]
    candidates = [["yes", "no", "a red car"], ["cat", "two dogs"]]
    end = tok("\n", add_special_tokens=False).input_ids[0] if fam == "opt" else tok.eos_token_id
    for append_eos in (False, True):
        scores, mask = ours.score_candidates({"image": images, "prompt": prompts}, candidates,
                                             append_eos=append_eos)
        assert mask.tolist() == [[True] * 3, [True, True, False]]
        for i, cands in enumerate(candidates):
            for j, cand in enumerate(cands):
                tgt = tok(cand, add_special_tokens=False).input_ids + ([end] if append_eos else [])
                with torch.no_grad():
                    if fam == "opt":
                        ids = _ids(hf, tok, prompts[i], tgt)
                        logits = hf(pixel_values=images[i:i + 1], input_ids=ids).logits
                        logp = logits[0, -len(tgt) - 1:-1].log_softmax(-1)
                    else:
                        logits = hf(pixel_values=images[i:i + 1], input_ids=_ids(hf, tok, prompts[i]),
                                    labels=torch.tensor([tgt])).logits
                        logp = logits[0].log_softmax(-1)
                ref = logp.gather(-1, torch.tensor(tgt)[:, None]).sum().item()
                assert abs(scores[i, j].item() - ref) < 1e-3, (fam, append_eos, i, j)


@pytest.mark.parametrize("fam", ["opt", "t5"])
def test_save_pretrained_loads_back_in_transformers(fam, pairs, tmp_path):
    from transformers import Blip2ForConditionalGeneration

    from lavis_ib import load_model

    hf, _, ours, _ = pairs[fam]
    out = ours.save_pretrained(str(tmp_path / "saved"))
    back = Blip2ForConditionalGeneration.from_pretrained(out).eval()
    images = _images(2, seed=5)
    with torch.no_grad():
        ref = hf.get_image_features(pixel_values=images).pooler_output
        assert torch.allclose(back.get_image_features(pixel_values=images).pooler_output, ref,
                              atol=1e-5)
    again = load_model(*TYPES[fam], is_eval=True, pretrained=out)
    assert again.ln_vision.eps == ours.ln_vision.eps
    kwargs = dict(num_beams=1, max_length=6, min_length=1, repetition_penalty=1.0)
    assert again.generate({"image": images, "prompt": PROMPTS[:2]}, **kwargs) == \
        ours.generate({"image": images, "prompt": PROMPTS[:2]}, **kwargs)


def test_a_directory_of_another_model_is_one_clear_error(pairs, tmp_path):
    from lavis_ib import load_model
    from lavis_ib.common.errors import LavisIbError

    (tmp_path / "config.json").write_text('{"model_type": "instructblip"}')
    with pytest.raises(LavisIbError, match="not BLIP-2|instructblip"):
        load_model("blip2_opt", "tiny_opt", pretrained=str(tmp_path))


def test_opt_with_text_output_scores_the_answer_after_the_instruction(pairs):
    """lavis_ib's instruction samples (text_input + text_output): the text is
    instruction + " " + answer + "\\n", the instruction's tokens (with `</s>`) unscored."""
    hf, tok, ours, _ = pairs["opt"]
    images = _images(2, seed=6)
    prompts, answers = PROMPTS[:2], ["a dog", "two birds"]
    ref = [_opt_loss(hf, tok, images[i], f"{prompts[i]} {answers[i]}", prompts[i], ours.max_txt_len)
           for i in range(2)]
    with torch.no_grad():
        out = ours({"image": images, "text_input": prompts, "text_output": answers})
    total, count = sum(l * n for l, n in ref), sum(n for _, n in ref)
    assert out["num_tokens"].item() == count == sum(
        len(tok(f" {a}\n", add_special_tokens=False).input_ids) for a in answers)
    assert abs(out["loss"].item() - total / count) < 1e-4
