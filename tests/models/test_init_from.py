"""`init_from`: BLIP-2 (transformers) + BERT fill every trainable parameter, with a report."""
from __future__ import annotations

import os

import pytest
import torch

from lavis_ib import load_model
from lavis_ib.common.errors import LavisIbError


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    from transformers import BertConfig, BertModel, Blip2Config, Blip2ForConditionalGeneration

    root = tmp_path_factory.mktemp("init_sources")
    torch.manual_seed(3)
    blip2 = Blip2ForConditionalGeneration(Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=8),
        qformer_config=dict(vocab_size=194, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64,
                            max_position_embeddings=64, encoder_hidden_size=32),
        text_config=dict(model_type="llama", vocab_size=193, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=1, num_attention_heads=4),
        num_query_tokens=8))
    bert = BertModel(BertConfig(vocab_size=193, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=64,
                                max_position_embeddings=64))
    blip2.save_pretrained(os.path.join(root, "blip2"))
    bert.save_pretrained(os.path.join(root, "bert"))
    return {"blip2": os.path.join(root, "blip2"), "bert": os.path.join(root, "bert"),
            "blip2_state": blip2.state_dict(), "bert_state": bert.state_dict()}


def test_blip2_stage2_plus_bert_fill_everything(sources):
    model = load_model("instructblip", "tiny_vicuna",
                       init_from=[sources["blip2"], sources["bert"]], allow_random_init=False)
    report = model.init_report
    assert report["unfilled"] == []
    b2, bert = report[sources["blip2"]]["filled"], report[sources["bert"]]["filled"]
    assert "query_tokens" in b2 and "llm_proj.weight" in b2 and "ln_vision.weight" in b2
    assert "qformer.layers.0.cross_attn.k.weight" in b2 and "qformer.layers.1.ffn_query.fc2.weight" in b2
    assert "qformer.embed_norm.weight" in b2 and "qformer.layers.0.self_attn.q.weight" in b2
    assert sorted(bert) == sorted(
        ["qformer.word_embeddings.weight", "qformer.position_embeddings.weight"]
        + [f"qformer.layers.{i}.ffn_text.{p}.{leaf}" for i in range(2)
           for p in ("fc1", "fc2", "norm") for leaf in ("weight", "bias")])
    s2, sb = sources["blip2_state"], sources["bert_state"]
    assert torch.equal(model.query_tokens, s2["query_tokens"])
    assert torch.equal(model.qformer.layers[0].cross_attn.k.weight,
                       s2["qformer.encoder.layer.0.crossattention.attention.key.weight"])
    assert torch.equal(model.llm_proj.weight, s2["language_projection.weight"])
    assert torch.equal(model.ln_vision.weight, s2["vision_model.post_layernorm.weight"])
    assert torch.equal(model.qformer.layers[1].ffn_text.fc1.weight,
                       sb["encoder.layer.1.intermediate.dense.weight"])
    assert torch.equal(model.qformer.word_embeddings.weight[:193], sb["embeddings.word_embeddings.weight"])
    # the freezing decision still holds after initialisation
    assert {n.split(".")[0] for n, _ in model.trainable_parameters()} == {
        "query_tokens", "qformer", "ln_vision", "llm_proj"}


def test_unfilled_parameters_are_an_error(sources):
    with pytest.raises(LavisIbError, match="ffn_text|word_embeddings"):
        load_model("instructblip", "tiny_vicuna", init_from=[sources["blip2"]],
                   allow_random_init=False)
    model = load_model("instructblip", "tiny_vicuna", init_from=[sources["blip2"]],
                       allow_random_init=True)
    assert "qformer.word_embeddings.weight" in model.init_report["unfilled"]
    with pytest.raises(LavisIbError, match="does not exist"):
        load_model("instructblip", "tiny_vicuna", init_from=["/no/such/ckpt.pth"])


def test_lavis_pth_source(hf_dirs, hf_models, tmp_path):
    """A LAVIS-format .pth (written with the hand-made key table) restores a perturbed model."""
    from tests.models.test_lavis_route import write_lavis_files

    hf, processor = hf_models["llama"]
    files = write_lavis_files(hf_dirs["llama"], hf, processor, str(tmp_path / "lavis"), False)
    ref = load_model("instructblip", "tiny_vicuna", pretrained=hf_dirs["llama"])
    model = load_model("instructblip", "tiny_vicuna", pretrained=hf_dirs["llama"])
    with torch.no_grad():
        for _, p in model.trainable_parameters():
            p.normal_()
    report = model.init_from([files["checkpoint"]])
    assert report["unfilled"] == []
    for (name, a), (_, b) in zip(ref.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), name


def test_blip2_stage1_retrieval_checkpoint(tmp_path):
    """Stage 1 (Blip2ForImageTextRetrieval) holds the whole Q-Former incl. its text side;
    the projection to the LLM is the only part it cannot fill."""
    from transformers import Blip2Config, Blip2ForImageTextRetrieval

    torch.manual_seed(4)
    stage1 = Blip2ForImageTextRetrieval(Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=8),
        qformer_config=dict(vocab_size=194, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                            encoder_hidden_size=32, use_qformer_text_input=True),
        num_query_tokens=8))
    stage1.save_pretrained(str(tmp_path / "itm"))
    with pytest.raises(LavisIbError, match="llm_proj"):
        load_model("instructblip", "tiny_vicuna", init_from=[str(tmp_path / "itm")],
                   allow_random_init=False)
    model = load_model("instructblip", "tiny_vicuna", init_from=[str(tmp_path / "itm")],
                       allow_random_init=True)
    assert model.init_report["unfilled"] == ["llm_proj.weight", "llm_proj.bias"]
    state = stage1.state_dict()
    assert torch.equal(model.qformer.word_embeddings.weight, state["embeddings.word_embeddings.weight"])
    assert torch.equal(model.qformer.layers[1].ffn_text.fc2.weight,
                       state["qformer.encoder.layer.1.output.dense.weight"])
    assert torch.equal(model.qformer.embed_norm.weight, state["qformer.layernorm.weight"])
    with pytest.raises(LavisIbError, match="HF_HUB_OFFLINE|hub"):
        load_model("instructblip", "tiny_vicuna", init_from=["Salesforce/not-cached-anywhere"])
