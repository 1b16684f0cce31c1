"""BLIP-2 stage 1's losses and initialisation against transcriptions of LAVIS's rules: ITM's
hard negatives are `multinomial` draws over the softmax with the positives masked and never
a positive; the ITM batch is [pos, (text, negative image), (negative text, image)] with
labels 1, 0, 0; the temperature is used as it is (no clamp); the query feed-forward starts
as a copy of the text feed-forward; the training output fits the runner's contract.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lavis_ib.common.errors import ConfigError, LavisIbError
from lavis_ib.models.blip2_qformer import losses
from lavis_ib.models.blip2_qformer import model as model_module

TEXTS = ["a dog", "two birds", "a red car", "a cat", "the sun", "green"]


@pytest.fixture(scope="module")
def tiny():
    from lavis_ib import load_model

    model = load_model("blip2", "tiny", qformer={"hidden_dropout_prob": 0.0,
                                                  "attention_probs_dropout_prob": 0.0})
    return model.train()


def _batch(n=6, seed=0, image_id=None):
    images = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    batch = {"image": images, "text_input": TEXTS[:n]}
    if image_id is not None:
        batch["image_id"] = image_id
    return batch


def test_negatives_are_multinomial_draws_over_the_masked_softmax():
    gen = torch.Generator().manual_seed(0)
    sim_t2i, sim_i2t = torch.randn(3, 6, generator=gen) * 3, torch.randn(3, 6, generator=gen) * 3
    positives = torch.zeros(3, 6, dtype=torch.bool)
    positives[0, [0, 1]] = positives[1, [0, 1]] = positives[2, 4] = True   # image ids 5 5 _ _ 8 _
    w_t2i, has = losses.negative_weights(sim_t2i, positives)
    w_i2t, _ = losses.negative_weights(sim_i2t, positives)
    got = losses.draw_negatives(w_t2i, w_i2t, has, [torch.Generator().manual_seed(40 + i)
                                                    for i in range(3)], own=[0, 1, 4])
    want_images, want_texts = [], []
    for i in range(3):
        ref_t2i = torch.softmax(sim_t2i[i].masked_fill(positives[i], float("-inf")), 0)
        ref_i2t = torch.softmax(sim_i2t[i].masked_fill(positives[i], float("-inf")), 0)
        torch.testing.assert_close(w_t2i[i], ref_t2i)
        g = torch.Generator().manual_seed(40 + i)   # image first, then text, one generator
        want_images.append(int(torch.multinomial(ref_t2i, 1, generator=g)))
        want_texts.append(int(torch.multinomial(ref_i2t, 1, generator=g)))
    assert got[0].tolist() == want_images and got[1].tolist() == want_texts


def test_a_positive_is_never_chosen_even_when_it_is_by_far_the_most_similar():
    positives = torch.zeros(2, 5, dtype=torch.bool)
    positives[0, [0, 3]] = positives[1, 1] = True
    sim = torch.full((2, 5), -3.0).masked_fill(positives, 50.0)   # positives dominate
    weights, has = losses.negative_weights(sim, positives)
    assert has.all() and (weights[positives] == 0).all()
    for seed in range(200):
        gens = losses.sample_generators(seed, [0, 1])
        images, texts = losses.draw_negatives(weights, weights, has, gens, own=[0, 1])
        for i in range(2):
            assert not positives[i, images[i]] and not positives[i, texts[i]]


def test_per_sample_generators_depend_on_base_and_index_only():
    """The draws of world sample 5 are the same whether its rank holds samples 4..5 or
    the whole batch: resume and process split do not change them."""
    weights = torch.softmax(torch.randn(1, 8, generator=torch.Generator().manual_seed(3)), 1)
    has = torch.ones(1, dtype=torch.bool)
    alone = losses.draw_negatives(weights, weights, has, losses.sample_generators(11, [5]), [5])
    among = losses.sample_generators(11, [4, 5])[1]
    together = losses.draw_negatives(weights, weights, has, [among], [5])
    assert [t.tolist() for t in alone] == [t.tolist() for t in together]
    other = [losses.draw_negatives(weights, weights, has, losses.sample_generators(b, [5]), [5])
             for b in range(12, 20)]
    assert len({(int(a[0]), int(a[1])) for a in other}) > 1   # the base matters


def test_itc_with_one_positive_per_row_is_label_smoothed_cross_entropy():
    gen = torch.Generator().manual_seed(1)
    sim_i2t, sim_t2i = torch.randn(4, 4, generator=gen), torch.randn(4, 4, generator=gen)
    per_sample = losses.itc_loss(sim_i2t, sim_t2i, torch.eye(4, dtype=torch.bool))
    want = (F.cross_entropy(sim_i2t, torch.arange(4), label_smoothing=0.1)
            + F.cross_entropy(sim_t2i, torch.arange(4), label_smoothing=0.1)) / 2
    torch.testing.assert_close(per_sample.mean(), want)


def test_temperature_is_not_clamped(tiny):
    batch = _batch(4)
    with torch.no_grad():
        tiny.temp.fill_(5.0)   # BLIP-1 clamps to [0.001, 0.5]; BLIP-2 does not
        out = tiny(batch)
        tiny.temp.fill_(0.07)
    tiny.eval()
    image = tiny.extract_features(batch, mode="image").image_embeds_proj
    text = tiny.extract_features(batch, mode="text").text_embeds_proj[:, 0]
    tiny.train()
    sim = torch.einsum("iqd,td->itq", image, text).max(-1).values / 5.0
    want = (F.cross_entropy(sim, torch.arange(4), label_smoothing=0.1)
            + F.cross_entropy(sim.t(), torch.arange(4), label_smoothing=0.1)) / 2
    torch.testing.assert_close(out["loss_itc"], want, atol=1e-5, rtol=1e-5)


def test_itm_batch_negatives_and_labels(tiny, monkeypatch):
    drawn = {}

    def record(*args, **kwargs):
        drawn["out"] = losses.draw_negatives(*args, **kwargs)
        return drawn["out"]

    monkeypatch.setattr(model_module, "draw_negatives", record)
    ids = [3, 3, 4, 5, 5, 6]
    batch = _batch(6, image_id=ids)
    torch.manual_seed(0)
    with torch.no_grad():
        out = tiny(batch)
    neg_image, neg_text = drawn["out"]
    for i in range(6):
        assert ids[neg_image[i]] != ids[i] and ids[neg_text[i]] != ids[i]
    with torch.no_grad():
        embeds = tiny.image_embeds(batch["image"])
        tok_ids, mask = tiny.tokenize(TEXTS, tiny.max_txt_len, pad_to_max=True)
        pos = tiny.itm_logits(embeds, tok_ids, mask)
        neg_i = tiny.itm_logits(embeds[neg_image], tok_ids, mask)
        neg_t = tiny.itm_logits(embeds, tok_ids[neg_text], mask[neg_text])
    labels = torch.tensor([1] * 6 + [0] * 12)
    want = F.cross_entropy(torch.cat([pos, neg_i, neg_t]), labels)   # no label smoothing
    torch.testing.assert_close(out["loss_itm"], want, atol=1e-5, rtol=1e-5)


def test_a_batch_of_one_image_has_no_negatives_and_says_so(tiny, caplog):
    before = tiny.itm_without_negative
    with torch.no_grad():
        out = tiny(_batch(3, image_id=["coco_9"] * 3))
    assert tiny.itm_without_negative == before + 3
    assert "no negative" in caplog.text
    assert torch.isfinite(out["loss"])


def test_training_output_fits_the_runner_contract(tiny):
    out = tiny(_batch(5))
    assert set(out) == {"loss", "loss_itc", "loss_itm", "loss_lm", "loss_sum", "num_tokens"}
    assert int(out["num_tokens"]) == 5
    torch.testing.assert_close(out["loss_sum"], 5 * out["loss"])
    torch.testing.assert_close(out["loss"], out["loss_itc"] + out["loss_itm"] + out["loss_lm"])
    out["loss_sum"].backward()
    trained = {n.split(".")[0] for n, p in tiny.named_parameters() if p.grad is not None}
    assert trained == set(model_module.TRAINABLE_PARTS)
    assert all(p.grad is None for p in tiny.visual_encoder.parameters())
    tiny.zero_grad(set_to_none=True)


def test_initialisation_as_lavis(tiny):
    from lavis_ib import load_model
    from lavis_ib.runners.optim import param_groups

    fresh = load_model("blip2", "tiny")
    for layer in fresh.qformer.layers:
        for (name, a), (_, b) in zip(layer.ffn_query.state_dict().items(),
                                     layer.ffn_text.state_dict().items()):
            assert torch.equal(a, b), name
    assert fresh.temp.item() == pytest.approx(0.07)
    assert 0.01 < fresh.query_tokens.std().item() < 0.03
    tok = fresh.tokenizer
    assert tok.bos_token == "[DEC]" and tok.convert_tokens_to_ids("[DEC]") < fresh.qformer_spec.vocab_size
    assert tok.truncation_side == "right"
    assert not any(p.requires_grad for p in fresh.visual_encoder.parameters())
    # our optimizer keeps 0-dim and 1-dim parameters out of weight decay (LAVIS decays temp)
    groups = param_groups(fresh.named_parameters(), 0.05)
    assert "temp" in next(g for g in groups if g["weight_decay"] == 0.0)["names"]
    vit = load_model("blip2", "tiny", freeze_vit=False).train()
    assert all(p.requires_grad for p in vit.visual_encoder.parameters()) and vit.visual_encoder.training


def test_lavis_arch_names():
    from lavis_ib.common.registry import registry

    assert registry.get_model_class("blip2") is model_module.Blip2Qformer
    assert registry.get_model_class("blip2_feature_extractor") is model_module.Blip2Qformer
    matching = registry.get_model_class("blip2_image_text_matching")
    assert issubclass(matching, model_module.Blip2Qformer)
    assert set(matching.PRETRAINED_MODEL_CONFIG_DICT) == {"pretrain", "coco", "tiny"}


def test_bad_settings_are_one_clear_error():
    from lavis_ib import load_model
    from lavis_ib.models.config import model_problems

    assert model_problems({"arch": "blip2", "itc_gather": "nccl"}) == [
        "model.itc_gather: 'nccl' is not one of autograd, lavis."]

    with pytest.raises(ConfigError, match="itc_gather"):
        load_model("blip2", "tiny", itc_gather="nccl")
    with pytest.raises(ConfigError, match="no LLM"):
        load_model("blip2", "tiny", llm_lora={"r": 8})


def test_bad_inputs_are_one_clear_error(tiny):
    with pytest.raises(LavisIbError, match="mode"):
        tiny.extract_features({"image": torch.zeros(1, 3, 32, 32)}, mode="video")
    with pytest.raises(LavisIbError, match="text_input"):
        tiny.extract_features({"image": torch.zeros(1, 3, 32, 32)}, mode="text")
    with pytest.raises(LavisIbError, match="caption"):
        tiny({"image": torch.zeros(1, 3, 32, 32)})
