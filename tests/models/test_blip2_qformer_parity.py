"""BLIP-2 stage 1 against transformers' `Blip2ForImageTextRetrieval` on a tiny random
checkpoint transformers itself wrote (weights, norms and biases perturbed away from their
init, the tiny type's architecture), loaded with `pretrained=<dir>`: ITM logits, ITC
similarities, `extract_features` and the retrieval interface agree to 1e-4; the training
forward's `loss_itc` equals LAVIS's formula applied to transformers' features (temperature
0.07, label smoothing 0.1, image-id-aware targets); `loss_lm` equals a reference built on
transformers' Q-Former with the ITG attention pattern written out as a mask; and
`save_pretrained` writes a directory transformers loads with the same outputs.
"""
from __future__ import annotations

import logging
import os

import pytest
import torch
import torch.nn.functional as F

Q, EMBED = 8, 16
TEXTS = ["a dog on the grass", "two birds", "a red car", "the cat sits on a mat"]


def write_stage1_checkpoint(directory: str, seed: int = 0) -> str:
    """A random `Blip2ForImageTextRetrieval` (the `tiny` type's sizes, no dropout) with the
    tiny BERT tokenizer and an image processor, saved by transformers."""
    from transformers import Blip2Config, Blip2ForImageTextRetrieval, BlipImageProcessorPil

    from lavis_ib.testing.tiny_assets import tiny_bert_tokenizer

    tok = tiny_bert_tokenizer()
    config = Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=8),
        qformer_config=dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64,
                            max_position_embeddings=64, encoder_hidden_size=32,
                            use_qformer_text_input=True, hidden_dropout_prob=0.0,
                            attention_probs_dropout_prob=0.0),
        num_query_tokens=Q, image_text_hidden_size=EMBED)
    torch.manual_seed(seed)
    model = Blip2ForImageTextRetrieval(config).eval()
    with torch.no_grad():   # away from init, so that every weight, norm and bias matters
        for name, p in model.named_parameters():
            if "norm" in name.lower() and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.normal_(0, 0.2)
            elif name == "query_tokens":
                p.normal_(0, 1.0)
            else:
                p.normal_(0, 0.3 if p.dim() > 1 and p.shape[-1] <= 64 else 0.1)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    BlipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(transformers model, its tokenizer, our blip2 model, our matching model, dir)."""
    from transformers import AutoTokenizer, Blip2ForImageTextRetrieval

    from lavis_ib import load_model

    d = write_stage1_checkpoint(str(tmp_path_factory.mktemp("stage1") / "hf"))
    theirs = Blip2ForImageTextRetrieval.from_pretrained(d).eval()
    ours = load_model("blip2", "tiny", pretrained=d)
    matching = load_model("blip2_image_text_matching", "tiny", is_eval=True, pretrained=d)
    return theirs, AutoTokenizer.from_pretrained(d), ours, matching, d


@pytest.fixture(scope="module")
def images():
    return torch.randn(len(TEXTS), 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _hf(theirs, tok, images, texts, itm: bool, **tok_args):
    enc = tok(texts, return_tensors="pt", padding=tok_args.pop("padding", "longest"), **tok_args)
    with torch.no_grad():
        return theirs(pixel_values=images, input_ids=enc.input_ids,
                      attention_mask=enc.attention_mask, use_image_text_matching_head=itm)


def test_itm_and_itc_heads_match_transformers(pair, images):
    theirs, tok, _, matching, _ = pair
    samples = {"image": images, "text_input": TEXTS}
    itm = matching(samples, match_head="itm")
    assert itm.shape == (4, 2)
    torch.testing.assert_close(itm, _hf(theirs, tok, images, TEXTS, True).logits_per_image,
                               atol=1e-4, rtol=1e-4)
    itc = matching(samples, match_head="itc")
    assert itc.shape == (4, 1)
    want = torch.diagonal(_hf(theirs, tok, images, TEXTS, False).logits_per_image)
    torch.testing.assert_close(itc[:, 0], want, atol=1e-4, rtol=1e-4)
    assert itm[:, 1].std() > 1e-3 and want.std() > 1e-3   # the pairs are told apart


def test_extract_features_match_transformers(pair, images):
    theirs, tok, ours, _, _ = pair
    ours.eval()
    samples = {"image": images, "text_input": TEXTS}
    itc = _hf(theirs, tok, images, TEXTS, False)
    image = ours.extract_features(samples, mode="image")
    torch.testing.assert_close(image.image_embeds_proj, itc.image_embeds, atol=1e-4, rtol=1e-4)
    assert image.image_embeds.shape == (4, Q, 32)
    torch.testing.assert_close(image.image_embeds_proj.norm(dim=-1), torch.ones(4, Q))
    text = ours.extract_features(samples, mode="text")
    torch.testing.assert_close(text.text_embeds_proj[:, 0], itc.text_embeds, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(text.text_embeds, itc.text_model_output.last_hidden_state,
                               atol=1e-4, rtol=1e-4)
    multimodal = ours.extract_features(samples, mode="multimodal")
    itm = _hf(theirs, tok, images, TEXTS, True)
    torch.testing.assert_close(multimodal.multimodal_embeds,
                               itm.text_model_output.last_hidden_state[:, :Q], atol=1e-4, rtol=1e-4)


def test_retrieval_interface_matches_transformers(pair, images):
    theirs, tok, ours, _, _ = pair
    ours.eval()
    embeds, feats = ours.retrieval_image_features(images)
    assert embeds.shape == (4, 1 + 16, 32) and feats.shape == (4, Q, EMBED)
    ids, mask, text_feats = ours.retrieval_text_features(TEXTS, max_length=35)
    assert ids.shape == mask.shape == (4, 35) and text_feats.shape == (4, EMBED)
    itc = _hf(theirs, tok, images, TEXTS, False, padding="max_length", max_length=35,
              truncation=True)
    torch.testing.assert_close(feats, itc.image_embeds, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(text_feats, itc.text_embeds, atol=1e-4, rtol=1e-4)
    with torch.no_grad():   # ViT + post_layernorm = our ln_vision(ViT)
        torch.testing.assert_close(embeds, theirs.vision_model(pixel_values=images)[0],
                                   atol=1e-4, rtol=1e-4)
    logit = ours.itm_match_logit(embeds, ids, mask)
    assert logit.shape == (4,)
    want = _hf(theirs, tok, images, TEXTS, True, padding="max_length", max_length=35,
               truncation=True).logits_per_image[:, 1]
    torch.testing.assert_close(logit, want, atol=1e-4, rtol=1e-4)


def _reference_itc(image_feats, text_feats, image_ids=None):
    """LAVIS's ITC from normalised features: (B, Q, d) and (B, d), temperature 0.07."""
    sim = torch.einsum("iqd,td->itq", image_feats, text_feats).max(-1).values / 0.07
    if image_ids is None:
        targets = torch.arange(sim.shape[0])
        return (F.cross_entropy(sim, targets, label_smoothing=0.1)
                + F.cross_entropy(sim.t(), targets, label_smoothing=0.1)) / 2
    ids = torch.tensor(image_ids)
    pos = (ids[:, None] == ids[None, :]).float()
    soft = 0.9 * pos / pos.sum(1, keepdim=True) + 0.1 / pos.shape[1]
    return (-(F.log_softmax(sim, 1) * soft).sum(1).mean()
            - (F.log_softmax(sim.t(), 1) * soft).sum(1).mean()) / 2


@pytest.mark.parametrize("image_ids", [None, [7, 7, 3, 9]])
def test_training_itc_loss_equals_lavis_formula_on_transformers_features(pair, images, image_ids):
    theirs, tok, ours, _, _ = pair
    itc = _hf(theirs, tok, images, TEXTS, False)
    want = _reference_itc(itc.image_embeds, itc.text_embeds, image_ids)
    ours.train()
    samples = {"image": images, "text_input": TEXTS}
    if image_ids is not None:
        samples["image_id"] = image_ids
    with torch.no_grad():
        out = ours(samples)
    torch.testing.assert_close(out["loss_itc"], want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["loss"], out["loss_itc"] + out["loss_itm"] + out["loss_lm"])
    assert int(out["num_tokens"]) == 4
    torch.testing.assert_close(out["loss_sum"], 4 * out["loss"])


def _reference_itg(theirs, tok, ours, images, texts):
    """ITG as described: the caption with [DEC] for [CLS] after the queries, one pass of
    transformers' Q-Former with an explicit mask (queries see only queries; token i sees
    every query and the non-padding tokens j <= i), BERT's MLM head (dense, GELU,
    LayerNorm, word embeddings transposed, bias) on the text outputs, next-token
    cross-entropy with label smoothing 0.1 averaged over the target tokens."""
    enc = tok(texts, return_tensors="pt", padding="max_length", max_length=32, truncation=True)
    ids, mask = enc.input_ids.clone(), enc.attention_mask
    ids[:, 0] = tok.convert_tokens_to_ids("[DEC]")
    b, n = ids.shape
    keys = torch.zeros(b, Q + n, Q + n, dtype=torch.bool)
    keys[:, :, :Q] = True
    keys[:, Q:, Q:] = torch.tril(torch.ones(n, n, dtype=torch.bool))[None] & mask.bool()[:, None, :]
    additive = torch.zeros(keys.shape).masked_fill(~keys, torch.finfo(torch.float32).min)[:, None]
    with torch.no_grad():
        image_embeds = theirs.vision_model(pixel_values=images)[0]
        queries = theirs.query_tokens.expand(b, -1, -1)
        hidden = theirs.qformer(query_embeds=theirs.embeddings(input_ids=ids, query_embeds=queries),
                                query_length=Q, attention_mask=additive,
                                encoder_hidden_states=image_embeds).last_hidden_state[:, Q:]
        head = ours.lm_head
        h = F.layer_norm(F.gelu(hidden @ head.dense.weight.t() + head.dense.bias), (32,),
                         head.norm.weight, head.norm.bias, eps=1e-12)
        logits = h @ theirs.embeddings.word_embeddings.weight.t() + head.bias
    labels = ids.masked_fill(mask == 0, -100)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=-100, label_smoothing=0.1)


def test_itg_loss_equals_reference_on_transformers_qformer(pair, images):
    theirs, tok, ours, _, _ = pair
    with torch.no_grad():   # a head away from its init
        for p in ours.lm_head.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    want = _reference_itg(theirs, tok, ours, images, TEXTS)
    ours.train()
    with torch.no_grad():
        got = ours({"image": images, "text_input": TEXTS})["loss_lm"]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_hf_directory_without_side_file_starts_temp_and_itg_head_as_lavis(pair, caplog):
    _, _, ours, _, d = pair
    assert not os.path.exists(os.path.join(d, "lavis_ib_stage1.safetensors"))
    from lavis_ib import load_model

    with caplog.at_level(logging.WARNING):
        fresh = load_model("blip2", "tiny", pretrained=d)
    assert "no ITC temperature and no ITG head" in caplog.text
    assert fresh.temp.item() == pytest.approx(0.07)
    assert fresh.load_report["side"] == "BERT-style random init"
    assert fresh.preprocess_overrides["image_size"] == 32


def test_save_pretrained_loads_in_transformers_and_back(pair, images, tmp_path, caplog):
    from transformers import AutoTokenizer, Blip2ForImageTextRetrieval

    from lavis_ib import load_model

    d = pair[4]
    ours = load_model("blip2", "tiny", is_eval=True, pretrained=d)
    with torch.no_grad():
        ours.temp.fill_(0.031)
        ours.lm_head.bias.normal_()
    out = str(tmp_path / "export")
    with caplog.at_level(logging.INFO):
        ours.save_pretrained(out)
    assert "lavis_ib_stage1.safetensors" in caplog.text
    theirs = Blip2ForImageTextRetrieval.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    itm = _hf(theirs, tok, images, TEXTS, True).logits_per_image
    ids, mask = ours.tokenize(TEXTS, None)
    with torch.no_grad():
        torch.testing.assert_close(ours.itm_logits(ours.image_embeds(images), ids, mask), itm,
                                   atol=1e-4, rtol=1e-4)
    back = load_model("blip2", "tiny", pretrained=out)
    assert back.load_report["side"] == "lavis_ib_stage1.safetensors"
    for name, tensor in ours.state_dict().items():
        assert torch.equal(tensor, back.state_dict()[name]), name
