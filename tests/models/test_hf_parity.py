"""Parity with transformers' InstructBLIP on tiny random checkpoints written by transformers,
for each LLM family: LLaMA (Vicuna), T5 (FlanT5) and OPT (decoder-only, learned positions,
byte-level BPE whose `</s>` bos doubles as eos, tied output embedding).

Our model is loaded with `pretrained=<dir>`; the oracle is
`InstructBlipForConditionalGeneration.from_pretrained(<dir>)` fed the token layout
transformers' processor uses ([<image> x Q ; prompt ; target]).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.models.conftest import IMAGE, Q, hf_min_length

PROMPTS = ["What is in the picture?", "Describe it.", "A long instruction: is there a cat on the mat?"]
TARGETS = ["a dog", "two birds on a wire", "no"]
FAMILIES = ["llama", "t5", "opt"]


def _images(n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, IMAGE, IMAGE, generator=g)


def _qformer(processor, prompts):
    enc = processor.qformer_tokenizer(prompts, padding="longest", return_tensors="pt")
    return enc.input_ids, enc.attention_mask


def _hf_ids(processor, hf, prompt: str, extra: list[int] = (), frames: int = 1) -> torch.Tensor:
    image_id = hf.config.image_token_index
    ids = [image_id] * (Q * frames) + processor.tokenizer(prompt).input_ids + list(extra)
    return torch.tensor([ids])


def _target_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]


def _hf_loss(fam, hf, processor, image, prompt, target):
    """(mean loss, number of target tokens) of one sample from transformers."""
    qids, qmask = _qformer(processor, [prompt])
    tgt = _target_ids(processor.tokenizer, target)
    with torch.no_grad():
        if fam != "t5":   # decoder-only: the target follows the prompt
            ids = _hf_ids(processor, hf, prompt, tgt)
            labels = torch.full_like(ids, -100)
            labels[0, -len(tgt):] = torch.tensor(tgt)
            out = hf(pixel_values=image[None], qformer_input_ids=qids, qformer_attention_mask=qmask,
                     input_ids=ids, labels=labels)
        else:
            ids = _hf_ids(processor, hf, prompt)
            out = hf(pixel_values=image[None], qformer_input_ids=qids, qformer_attention_mask=qmask,
                     input_ids=ids, labels=torch.tensor([tgt]))
    return out.loss.item(), len(tgt)


@pytest.mark.parametrize("fam", FAMILIES)
def test_loss_matches_transformers(fam, hf_models, our_models):
    hf, processor = hf_models[fam]
    model = our_models[fam][0]
    images = _images(3)
    ref = [_hf_loss(fam, hf, processor, images[i], PROMPTS[i], TARGETS[i]) for i in range(3)]
    with torch.no_grad():
        for i in range(3):
            out = model({"image": images[i:i + 1], "text_input": [PROMPTS[i]],
                         "text_output": [TARGETS[i]]})
            assert out["num_tokens"].item() == ref[i][1]
            assert abs(out["loss"].item() - ref[i][0]) < 1e-4
        batch = model({"image": images, "text_input": PROMPTS, "text_output": TARGETS})
    total = sum(loss * n for loss, n in ref)
    count = sum(n for _, n in ref)
    assert batch["num_tokens"].item() == count
    assert abs(batch["loss_sum"].item() - total) < 1e-4 * count
    assert abs(batch["loss"].item() - total / count) < 1e-4


def _hf_greedy(fam, hf, processor, image, prompt, new_tokens, frames=1, video_model=None):
    qids, qmask = _qformer(processor, [prompt])
    ids = _hf_ids(processor, hf, prompt, frames=frames)
    model = video_model or hf
    with torch.no_grad():
        out = model.generate(pixel_values=image[None], qformer_input_ids=qids,
                             qformer_attention_mask=qmask, input_ids=ids,
                             attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1,
                             max_new_tokens=new_tokens, **hf_min_length(fam == "t5", 1))
    if fam != "t5":
        out = out[:, ids.shape[1]:]
    return processor.tokenizer.batch_decode(out, skip_special_tokens=True)[0].strip()


@pytest.mark.parametrize("fam", FAMILIES)
def test_greedy_generation_matches_transformers(fam, hf_models, our_models):
    hf, processor = hf_models[fam]
    model = our_models[fam][0]
    images = _images(3, seed=2)
    ref = [_hf_greedy(fam, hf, processor, images[i], PROMPTS[i], 8) for i in range(3)]
    assert any(ref), "the oracle generated only empty strings; the test would be weak"
    kwargs = dict(num_beams=1, max_length=8, min_length=1, repetition_penalty=1.0)
    single = [model.generate({"image": images[i:i + 1], "prompt": PROMPTS[i]}, **kwargs)[0]
              for i in range(3)]
    batched = model.generate({"image": images, "prompt": PROMPTS}, **kwargs)
    assert single == ref
    assert batched == ref


@pytest.mark.parametrize("fam", FAMILIES)
def test_candidate_scores_match_transformers(fam, hf_models, our_models):
    hf, processor = hf_models[fam]
    model = our_models[fam][0]
    images = _images(2, seed=3)
    prompts = PROMPTS[:2]
    candidates = [["yes", "no", "a red car"], ["cat", "two dogs"]]
    for append_eos in (True, False):
        scores, mask = model.score_candidates({"image": images, "prompt": prompts}, candidates,
                                              append_eos=append_eos, chunk_size=2)
        assert mask.tolist() == [[True, True, True], [True, True, False]]
        assert scores[1, 2] == float("-inf")
        for i, cands in enumerate(candidates):
            qids, qmask = _qformer(processor, [prompts[i]])
            for j, cand in enumerate(cands):
                tgt = processor.tokenizer(cand, add_special_tokens=False).input_ids
                tgt = tgt + [processor.tokenizer.eos_token_id] if append_eos else tgt
                with torch.no_grad():
                    if fam != "t5":
                        ids = _hf_ids(processor, hf, prompts[i], tgt)
                        logits = hf(pixel_values=images[i:i + 1], qformer_input_ids=qids,
                                    qformer_attention_mask=qmask, input_ids=ids).logits
                        logp = logits[0, -len(tgt) - 1:-1].log_softmax(-1)
                    else:
                        ids = _hf_ids(processor, hf, prompts[i])
                        logits = hf(pixel_values=images[i:i + 1], qformer_input_ids=qids,
                                    qformer_attention_mask=qmask, input_ids=ids,
                                    labels=torch.tensor([tgt])).logits
                        logp = logits[0].log_softmax(-1)
                ref = logp.gather(-1, torch.tensor(tgt)[:, None]).sum().item()
                assert abs(scores[i, j].item() - ref) < 1e-3, (fam, append_eos, i, j)
    order = model.predict_class({"image": images, "prompt": prompts}, candidates)
    assert order.shape == (2, 3) and order[1, 2].item() == 2  # the padded slot ranks last


def test_eval_preprocessing_matches_saved_processor(hf_models, our_models, hf_dirs):
    """Size, mean and std come from the directory. Resizing: transformers 5 reloads the
    saved processor with its torchvision backend, whose uint8 bicubic rounding differs from
    PIL's (ours, LAVIS's, transformers 4's) by at most one grey level in a few pixels; the
    PIL backend built from the same saved settings matches exactly."""
    from transformers import BlipImageProcessorPil

    _, processor = hf_models["llama"]
    vis = our_models["llama"][1]["eval"]
    pil_backend = BlipImageProcessorPil.from_pretrained(hf_dirs["llama"])
    assert list(vis.mean) == list(processor.image_processor.image_mean)
    assert list(vis.std) == list(processor.image_processor.image_std)
    one_level = 1 / 255 / min(processor.image_processor.image_std) + 1e-5
    rng = np.random.default_rng(0)
    for shape in [(61, 47, 3), (20, 90, 3)]:
        image = Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8))
        ours = vis(image)
        exact = pil_backend(image, return_tensors="pt").pixel_values[0]
        saved = processor.image_processor(image, return_tensors="pt").pixel_values[0]
        assert ours.shape == exact.shape == saved.shape == (3, IMAGE, IMAGE)
        assert torch.allclose(ours, exact, atol=1e-5)
        assert (ours - saved).abs().max() <= one_level
        assert (ours - saved).abs().mean() < 0.1 * one_level


def test_video_generation_matches_instructblip_video(hf_models, our_models):
    from transformers import InstructBlipVideoConfig, InstructBlipVideoForConditionalGeneration

    hf, processor = hf_models["llama"]
    model = our_models["llama"][0]
    cfg = hf.config
    vcfg = InstructBlipVideoConfig(vision_config=cfg.vision_config.to_dict(),
                                   qformer_config=cfg.qformer_config.to_dict(),
                                   text_config=cfg.text_config.to_dict(),
                                   num_query_tokens=cfg.num_query_tokens,
                                   video_token_index=cfg.image_token_index)
    video_model = InstructBlipVideoForConditionalGeneration(vcfg).eval()
    missing, unexpected = video_model.load_state_dict(hf.state_dict(), strict=False)
    assert not [k for k in missing if "position_ids" not in k] and not unexpected
    g = torch.Generator().manual_seed(5)
    videos = torch.randn(2, 3, 4, IMAGE, IMAGE, generator=g)          # ours: (B, C, T, H, W)
    prompts = PROMPTS[:2]
    ref = [_hf_greedy("llama", hf, processor, videos[i].permute(1, 0, 2, 3), prompts[i], 6,
                      frames=4, video_model=video_model) for i in range(2)]
    ours = model.generate({"image": videos, "prompt": prompts}, num_beams=1, max_length=6,
                          min_length=1, repetition_penalty=1.0)
    assert ours == ref
    # the frames matter: reversing time changes the soft prompts
    with torch.no_grad():
        a = model.encode(videos, prompts)
        b = model.encode(videos.flip(2), prompts)
    assert a.shape == (2, 4 * Q, model.llm.config.hidden_size)
    assert not torch.allclose(a, b)
