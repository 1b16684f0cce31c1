"""docs/checkpoints.md, run: the Hugging Face -> lavis_ib -> LAVIS files -> lavis_ib round
trip of docs/examples/lavis_files.py, the parameter-name table against the conversion
functions, and the errors the guide quotes."""
from __future__ import annotations

import os
import re

import pytest
import torch

from docs_includes import REPO
from lavis_ib import load_model
from lavis_ib.common.errors import ConfigError, LavisIbError
from lavis_ib.models.weights.param_names import to_hf, to_lavis

GUIDE = os.path.join(REPO, "docs", "checkpoints.md")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = load_model("instructblip", "tiny_vicuna", is_eval=True)
    return model.save_pretrained(str(tmp_path_factory.mktemp("hf") / "tiny"))


def test_hf_to_lavis_files_and_back_is_exact(hf_dir, tmp_path):
    from lavis_files import write_lavis_files

    hf = load_model("instructblip", "tiny_vicuna", is_eval=True, pretrained=hf_dir)
    paths = write_lavis_files(hf, str(tmp_path / "lavis"))
    assert set(os.listdir(tmp_path / "lavis")) == {"instruct_blip_trimmed.pth", "eva_vit_g.pth",
                                                   "llm", "qformer_tokenizer"}
    trimmed = torch.load(paths["checkpoint"], weights_only=True)["model"]
    assert "query_tokens" in trimmed and "llm_proj.weight" in trimmed
    assert any(k.startswith("Qformer.bert.encoder.layer.0.crossattention.") for k in trimmed)
    assert not any(k.startswith(("visual_encoder.", "llm.")) for k in trimmed)
    # llm_tokenizer=None: use the tokenizer in llm_model, not tiny_vicuna's packaged one
    lavis = load_model("instructblip", "tiny_vicuna", is_eval=True, llm_tokenizer=None, **paths)
    a, b = hf.state_dict(), lavis.state_dict()
    assert set(a) == set(b)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    image = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    samples = {"image": image, "prompt": ["what is it?", "describe the image."]}
    assert hf.generate(samples, num_beams=2, max_length=5) == \
        lavis.generate(samples, num_beams=2, max_length=5)
    # LAVIS -> Hugging Face: save_pretrained, read by transformers itself
    from transformers import InstructBlipForConditionalGeneration

    out = lavis.save_pretrained(str(tmp_path / "hf_again"))
    theirs = InstructBlipForConditionalGeneration.from_pretrained(out)
    assert torch.equal(theirs.query_tokens.detach(), hf.query_tokens.detach())


def name_table() -> list[tuple[str, str, str]]:
    text = open(GUIDE).read()
    section = text.split("### Parameter names in the three formats", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            rows.append(tuple(cells))
    return rows


def first_code(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def test_parameter_name_table_matches_the_conversion_functions():
    model = load_model("instructblip", "tiny_vicuna")
    ours_keys = set(model.state_dict())
    rows = name_table()
    assert len(rows) >= 12
    for ours_cell, lavis_cell, hf_cell in rows:
        ours = first_code(ours_cell)[0].replace(".N.", ".0.")
        assert ours in ours_keys, ours
        hf = first_code(hf_cell)[0].replace(".N.", ".0.")
        assert to_hf(ours) == hf, ours
        lavis_names = [n.replace(".N.", ".0.") for n in first_code(lavis_cell)]
        if ours.startswith("llm."):
            assert "not in LAVIS files" in lavis_cell
            with pytest.raises(KeyError):
                to_lavis(ours, t5=False)
            continue
        assert to_lavis(ours, t5=False) == lavis_names[0], ours
        if len(lavis_names) > 1:              # the FlanT5 spelling
            assert to_lavis(ours, t5=True) == lavis_names[1], ours


def test_errors_quoted_in_the_guide(tmp_path, monkeypatch):
    from lavis_ib.runners.checkpointing.manager import load_trainable_weights

    with pytest.raises(ConfigError, match="unknown setting 'pretrain'. Did you mean 'pretrained'"):
        load_model("instructblip", "vicuna7b", pretrain="x")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf_home"))
    with pytest.raises(LavisIbError, match="is a hub id, it is not in the local Hugging Face cache"):
        load_model("instructblip", "tiny_vicuna", pretrained="Salesforce/instructblip-vicuna-7b")
    (tmp_path / "half").mkdir()
    with pytest.raises(ConfigError, match="is not a complete lavis_ib checkpoint"):
        from lavis_ib.runners.checkpointing.manager import _check_complete

        _check_complete(str(tmp_path / "half"))
    with pytest.raises(ConfigError, match="no complete checkpoint under"):
        load_trainable_weights(load_model("instructblip", "tiny_vicuna"), str(tmp_path / "half"))


def test_init_from_leaves_nothing_unfilled_silently(hf_dir):
    from transformers import BertConfig, BertModel

    # an InstructBLIP directory fills every trainable parameter; a BERT alone does not
    model = load_model("instructblip", "tiny_vicuna", init_from=[hf_dir], allow_random_init=False)
    assert model.init_report["unfilled"] == []
    bert_dir = os.path.join(os.path.dirname(hf_dir), "bert")
    BertModel(BertConfig(vocab_size=193, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(bert_dir)
    with pytest.raises(LavisIbError, match="init_from left .* trainable parameters uninitialised"):
        load_model("instructblip", "tiny_vicuna", init_from=[bert_dir], allow_random_init=False)
    model = load_model("instructblip", "tiny_vicuna", init_from=[bert_dir], allow_random_init=True)
    report = model.init_report
    assert report[bert_dir]["kind"] == "bert" and report[bert_dir]["filled"]
    assert "query_tokens" in report["unfilled"]


def test_code_blocks_use_existing_model_settings():
    """Keyword arguments of load_model* calls and `model:` keys in the guide's YAML blocks
    are model config keys (a misspelt one would fail when the user runs it)."""
    import ast

    import yaml

    from lavis_ib.models.config import InstructBlipConfig

    KNOWN_KEYS = InstructBlipConfig.keys()

    text = open(GUIDE).read()
    blocks = re.findall(r"```(\w+)\n(.*?)```", text, re.DOTALL)
    calls = yamls = 0
    for lang, body in blocks:
        if lang == "python":
            for node in ast.walk(ast.parse(body)):
                if isinstance(node, ast.Call) and getattr(node.func, "id", "").startswith("load_model"):
                    calls += 1
                    keys = {k.arg for k in node.keywords} - {"is_eval", "device"}
                    assert keys <= KNOWN_KEYS, keys - KNOWN_KEYS
        elif lang == "yaml" and "model:" in body:
            yamls += 1
            node = yaml.safe_load(body)["model"]
            assert set(node) <= KNOWN_KEYS, set(node) - KNOWN_KEYS
    assert calls >= 3 and yamls >= 1
