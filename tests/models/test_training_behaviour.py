"""What trains, what stays frozen (and which frozen part keeps its dropout), the ablation
switch, batching invariances, bad input."""
from __future__ import annotations

import pytest
import torch

from lavis_ib import load_model
from lavis_ib.common.errors import ConfigError, LavisIbError

BATCH = {"text_input": ["what is this?", "describe the photo in detail", "count"],
         "text_output": ["a small cat", "trees", "3"]}


def _batch(n=3, seed=0, video=False):
    g = torch.Generator().manual_seed(seed)
    shape = (n, 3, 4, 32, 32) if video else (n, 3, 32, 32)
    return {"image": torch.randn(*shape, generator=g),
            "text_input": BATCH["text_input"][:n], "text_output": BATCH["text_output"][:n]}


@pytest.mark.parametrize("fixture", ["tiny_vicuna", "tiny_flant5", "tiny_opt"])
def test_only_trainable_parts_get_gradients(fixture, request):
    model = request.getfixturevalue(fixture)
    model.train()
    model.zero_grad(set_to_none=True)
    model(_batch())["loss"].backward()
    trainable = dict(model.trainable_parameters())
    assert {n.split(".")[0] for n in trainable} == {"query_tokens", "qformer", "ln_vision", "llm_proj"}
    for name, p in model.named_parameters():
        if name in trainable:
            assert p.requires_grad
        else:
            assert not p.requires_grad and p.grad is None, name
    # the instruction path trains too (text embeddings and text FFNs of the Q-Former)
    assert model.qformer.word_embeddings.weight.grad.abs().sum() > 0
    assert model.qformer.layers[0].ffn_text.fc1.weight.grad.abs().sum() > 0
    assert model.query_tokens.grad.abs().sum() > 0 and model.ln_vision.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    model.eval()


NO_QFORMER_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def _llm_dropout_model(mode=None):
    """tiny_flant5 (T5's dropout_rate 0.1, as FlanT5's config has it) without the Q-Former's
    dropout, so that any randomness left in a training forward is the frozen LLM's."""
    extra = {} if mode is None else {"llm_train_mode": mode}
    return load_model("instructblip", "tiny_flant5", qformer=NO_QFORMER_DROPOUT, **extra)


def _loss(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        return model(_batch())["loss"].item()


def test_the_frozen_llm_trains_as_lavis_by_default():
    """LAVIS freezes the LLM with requires_grad=False only, so the runner's model.train()
    reaches it: its dropout is active in training (the frozen ViT stays in eval mode)."""
    model = _llm_dropout_model()
    assert model.llm_train_mode == "lavis"
    model.train()
    assert model.qformer.training and all(m.training for m in model.llm.modules())
    assert not any(m.training for m in model.visual_encoder.modules())
    assert not any(p.requires_grad for p in model.llm.parameters())
    assert _loss(model, 1) != _loss(model, 2)            # dropout: the draws change the loss
    assert _loss(model, 1) == _loss(model, 1)
    # the reference: every module in train mode by torch's own Module.train, ViT frozen
    torch.nn.Module.train(model, True)
    model.visual_encoder.eval()
    reference = _loss(model, 1)
    model.train()
    assert _loss(model, 1) == reference
    model.eval()
    assert not any(m.training for m in model.modules())
    assert _loss(model, 1) == _loss(model, 2)


def test_llm_train_mode_eval_keeps_the_frozen_llm_in_eval_mode():
    model = _llm_dropout_model("eval")
    model.train()
    assert model.qformer.training and model.training
    assert not any(m.training for m in model.llm.modules())
    assert not any(m.training for m in model.visual_encoder.modules())
    assert _loss(model, 1) == _loss(model, 2)            # nothing random is left
    model.eval()
    eval_loss = _loss(model, 3)
    model.train()
    assert _loss(model, 1) == eval_loss
    model.set_llm_train_mode("lavis")                    # switchable on a built model
    assert model.llm.training and _loss(model, 1) != _loss(model, 2)
    with pytest.raises(ConfigError, match="llm_train_mode: 'train' is not one of lavis, eval"):
        model.set_llm_train_mode("train")
    with pytest.raises(ConfigError, match="llm_train_mode: 'off' is not one of lavis, eval"):
        load_model("instructblip", "tiny_flant5", llm_train_mode="off")
    from lavis_ib.models.config import model_problems     # the pre-flight says it first

    assert model_problems({"arch": "blip2_t5", "llm_train_mode": "off"}) == \
        ["model.llm_train_mode: 'off' is not one of lavis, eval."]


def test_ablation_switch_removes_the_instruction_path(tiny_vicuna):
    model = tiny_vicuna
    images = _batch()["image"][:1]
    with torch.no_grad():
        a = model.encode(images, ["what is this?"])
        b = model.encode(images, ["count the birds"])
        assert not torch.allclose(a, b)     # instruction-aware: the instruction changes the queries
        model.qformer_text_input = False
        try:
            c = model.encode(images, ["what is this?"])
            d = model.encode(images, ["count the birds"])
            direct = model.llm_proj(model.qformer(
                model.query_tokens, model.ln_vision(model.visual_encoder.forward_features(images))))
        finally:
            model.qformer_text_input = True
    assert torch.equal(c, d) and torch.allclose(c, direct)
    ablated = load_model("instructblip", "tiny_vicuna", qformer_text_input=False)
    assert ablated.qformer_text_input is False


@pytest.mark.parametrize("fixture", ["tiny_vicuna", "tiny_flant5", "tiny_opt"])
def test_split_batches_sum_to_the_full_batch(fixture, request):
    """loss_sum / num_tokens let the runner normalise by the global token count."""
    model = request.getfixturevalue(fixture)
    batch = _batch()
    with torch.no_grad():
        full = model(batch)
        parts = [model({k: v[i:i + 1] for k, v in batch.items()}) for i in range(3)]
    assert full["num_tokens"] == sum(p["num_tokens"] for p in parts)
    assert torch.allclose(full["loss_sum"], sum(p["loss_sum"] for p in parts), atol=1e-4)
    assert torch.allclose(full["loss"], full["loss_sum"] / full["num_tokens"])


@pytest.mark.parametrize("fixture", ["tiny_vicuna", "tiny_flant5", "tiny_opt"])
def test_padded_beam_search_equals_one_at_a_time(fixture, request):
    model = request.getfixturevalue(fixture)
    batch = _batch(seed=3)
    prompts = ["what?", "a much longer prompt with many more tokens in it", "hi"]
    kwargs = dict(num_beams=3, max_length=5, min_length=2, repetition_penalty=1.5)
    together = model.generate({"image": batch["image"], "prompt": prompts}, **kwargs)
    alone = [model.generate({"image": batch["image"][i:i + 1], "prompt": p}, **kwargs)[0]
             for i, p in enumerate(prompts)]
    assert together == alone
    two = model.generate({"image": batch["image"][:1], "prompt": "x"}, num_beams=3,
                         num_captions=2, max_length=4)
    assert len(two) == 2


def test_video_forward_and_ranking(tiny_vicuna):
    batch = _batch(n=2, video=True)
    with torch.no_grad():
        out = tiny_vicuna(batch)
        scores, mask = tiny_vicuna.score_candidates({"image": batch["image"], "prompt": "q?"},
                                                    ["yes", "no", "maybe"])
    assert torch.isfinite(out["loss"]) and scores.shape == (2, 3) and mask.all()
    assert tiny_vicuna.encode(batch["image"], ["a", "b"]).shape[1] == 4 * tiny_vicuna.query_tokens.shape[1]


def test_chunking_and_one_list_per_sample_agree(tiny_vicuna):
    images = _batch(n=2, seed=4)["image"]
    cands = ["yes", "no", "a red car", "blue", "maybe not"]
    s1, _ = tiny_vicuna.score_candidates({"image": images, "prompt": "q?"}, cands, append_eos=True,
                                         chunk_size=1)
    s2, _ = tiny_vicuna.score_candidates({"image": images, "prompt": "q?"}, [cands, cands],
                                         append_eos=True, chunk_size=64)
    s3, _ = tiny_vicuna.score_candidates({"image": images[1:], "prompt": "q?"}, cands,
                                         append_eos=True)
    assert torch.allclose(s1, s2, atol=1e-4) and torch.allclose(s1[1:], s3, atol=1e-4)
    without, _ = tiny_vicuna.score_candidates({"image": images, "prompt": "q?"}, cands, append_eos=False)
    assert (without > s1).all()   # one log-prob (<0) fewer per candidate
    answers = tiny_vicuna.predict_answers({"image": images, "text_input": ["a", "b"]},
                                          inference_method="rank", answer_list=cands,
                                          prompt="Question: {} Short answer:")
    ranked, _ = tiny_vicuna.score_candidates(
        {"image": images, "prompt": ["Question: a Short answer:", "Question: b Short answer:"]}, cands,
        append_eos=True)
    assert answers == [cands[int(i)] for i in ranked.argmax(-1)]


def test_bad_input_raises_clear_errors(tiny_vicuna):
    image = torch.randn(1, 3, 32, 32)
    with pytest.raises(LavisIbError, match="text_output"):
        tiny_vicuna({"image": image, "text_input": ["x"]})
    with pytest.raises(LavisIbError, match="shape"):
        tiny_vicuna.generate({"image": torch.randn(3, 32, 32), "prompt": "x"})
    with pytest.raises(LavisIbError, match="one per sample"):
        tiny_vicuna.score_candidates({"image": image, "prompt": "x"}, [["a"], ["b"]])
    with pytest.raises(LavisIbError, match="no tokens"):
        tiny_vicuna.score_candidates({"image": image, "prompt": "x"}, ["", "a"], append_eos=False)
    with pytest.raises(ConfigError, match="qformer_text_inputs"):
        load_model("instructblip", "tiny_vicuna", qformer_text_inputs=False)
    with pytest.raises(LavisIbError, match="HF_HUB_OFFLINE|hub"):
        load_model("instructblip", "tiny_vicuna", pretrained="Salesforce/does-not-exist-here")
    with pytest.raises(LavisIbError, match="neither an existing directory"):
        load_model("instructblip", "tiny_vicuna", pretrained="/no/such/dir")


def test_gradient_checkpointing_gives_the_same_gradients(tiny_vicuna):
    model = tiny_vicuna
    batch = _batch(n=2)
    grads = []
    for flag in (False, True):
        model.set_gradient_checkpointing(vit=flag, qformer=flag)
        model.train()
        for m in model.qformer.modules():   # no dropout: compare exactly
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
            if hasattr(m, "attn_dropout"):
                m.attn_dropout = 0.0
        model.zero_grad(set_to_none=True)
        model(batch)["loss"].backward()
        grads.append(model.qformer.layers[0].self_attn.q.weight.grad.clone())
    model.set_gradient_checkpointing(False, False)
    spec = model.qformer_spec
    for m in model.qformer.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = spec.hidden_dropout_prob
        if hasattr(m, "attn_dropout"):
            m.attn_dropout = spec.attention_probs_dropout_prob
    model.zero_grad(set_to_none=True)
    model.eval()
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_units_for_fsdp(tiny_vicuna, tiny_flant5):
    for model in (tiny_vicuna, tiny_flant5):
        units = model.shard_units()
        assert len(model.checkpoint_units()) >= 2
        assert len(units) == (len(model.visual_encoder.blocks) + len(model.qformer.layers)
                              + len(model.checkpoint_units()))
        for unit in units:
            assert len({p.dtype for p in unit.parameters()}) == 1


@pytest.mark.parametrize("fixture", ["tiny_vicuna", "tiny_flant5", "tiny_opt"])
def test_lengths_count_generated_tokens_only(fixture, request):
    """max_length/min_length bound the generated tokens for both families, whatever the
    prompt length (the prompt reaches the LLM as embeddings only)."""
    model = request.getfixturevalue(fixture)
    images = _batch(n=2)["image"]
    prompts = ["hi", "a much longer prompt " * 5]
    with torch.no_grad():
        prefix = model.encode(images, prompts)
        ids = model.adapter.generate(prefix, model.adapter.tokenize_prompts(prompts),
                                     use_nucleus_sampling=False, num_beams=1, max_length=4,
                                     min_length=4, top_p=0.9, repetition_penalty=1.0,
                                     length_penalty=1.0, num_captions=1, temperature=1.0)
    start = 1 if model.adapter.is_encoder_decoder else 0   # T5 output begins with its start token
    assert ids.shape == (2, 4 + start)
    assert (ids[:, start:] != model.adapter.eos_id).all()  # min_length kept EOS away


def test_prompt_placeholders():
    from lavis_ib.models.components.lavis_prompts import fill_prompt

    assert fill_prompt("Question: {} Short answer:", "what?", None) == "Question: what? Short answer:"
    assert fill_prompt("OCR tokens: {}. Question: {} Short answer:", "why?", ["a", "b"]) == \
        "OCR tokens: a, b. Question: why? Short answer:"
    assert fill_prompt("plain", None, None) == "plain"
    with pytest.raises(LavisIbError, match="slot"):
        fill_prompt("Context: {} Question: {} Options: {}.", "q", None)
    with pytest.raises(LavisIbError, match="slot"):
        fill_prompt("Question: {}", None, None)


def test_per_sample_prompts_are_verbatim_and_templates_are_filled(tiny_vicuna):
    images = _batch(n=2)["image"]
    samples = {"image": images, "text_input": ["what {} is it?", "why"]}
    verbatim = tiny_vicuna._prompts({**samples, "prompt": ["Q: {} A:", "x {y}"]})
    assert verbatim == ["Q: {} A:", "x {y}"]
    filled = tiny_vicuna._prompts({**samples, "prompt": "Question: {} Short answer:"})
    assert filled == ["Question: what {} is it? Short answer:", "Question: why Short answer:"]
    ocr = tiny_vicuna._prompts({**samples, "prompt": "OCR: {}. Q: {}", "ocr_tokens": [["a"], ["b", "c"]]})
    assert ocr == ["OCR: a. Q: what {} is it?", "OCR: b, c. Q: why"]


def test_unfrozen_vit_trains_when_asked():
    model = load_model("instructblip", "tiny_vicuna", freeze_vit=False)
    model.train()
    assert model.visual_encoder.training and model.llm.training     # llm_train_mode: lavis
    model(_batch(n=1))["loss"].backward()
    assert model.visual_encoder.blocks[0].attn.qkv.weight.grad is not None
    assert all(p.grad is None for p in model.llm.parameters())


def test_predict_answers_generate_path(tiny_flant5):
    images = _batch(n=2)["image"]
    answers = tiny_flant5.predict_answers({"image": images, "text_input": ["what?", "who?"]},
                                          num_beams=2, max_len=3, min_len=1,
                                          prompt="Question: {} Short answer:")
    direct = tiny_flant5.generate({"image": images, "prompt": ["Question: what? Short answer:",
                                                               "Question: who? Short answer:"]},
                                  num_beams=2, max_length=3, min_length=1, length_penalty=0,
                                  repetition_penalty=1.0)
    assert answers == direct
    with pytest.raises(LavisIbError, match="inference_method"):
        tiny_flant5.predict_answers({"image": images, "text_input": ["a", "b"]}, inference_method="x")
