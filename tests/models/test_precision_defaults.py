"""Frozen-part precision per model type and device: the authors' dtypes on CUDA (LAVIS's
model configs and code, written out below as data), fp32 on CPU, bf16 one setting away.
Resolved at the function level for `cpu` and for a `cuda` device that need not exist, and
through the two places that know the device (load_model, the runner's build_model)."""
from __future__ import annotations

import logging

import pytest
import torch

from lavis_ib import load_model
from lavis_ib.common.config import Config
from lavis_ib.common.containers import to_plain
from lavis_ib.common.errors import ConfigError
from lavis_ib.common.paths import package_path
from lavis_ib.common.precision import (DEVICE_TYPES, DTYPES, device_type, resolve_precision,
                                       with_resolved_precisions)
from lavis_ib.models.config import PRECISION_DEVICES, model_problems
from lavis_ib.models.loading import model_config

# -- LAVIS, as data ---------------------------------------------------------------------
# ViT: `vit_precision` of lavis/configs/models/blip2/*.yaml (fp16 where the ViT is frozen,
# fp32 for the caption_coco types that train it). LLM: blip2_vicuna_instruct and blip2_opt
# load theirs with torch_dtype float16; blip2_t5 and blip2_t5_instruct cast T5 to bfloat16.
# blip2_llm vicuna: LAVIS has no such type; ours follows its Vicuna (fp16).
AUTHORS_ON_CUDA = {
    ("instructblip", "vicuna7b"): ("fp16", "fp16"),
    ("instructblip", "vicuna13b"): ("fp16", "fp16"),
    ("instructblip", "flant5xl"): ("fp16", "bf16"),
    ("instructblip", "flant5xxl"): ("fp16", "bf16"),
    ("blip2_opt", "pretrain_opt2.7b"): ("fp16", "fp16"),
    ("blip2_opt", "pretrain_opt6.7b"): ("fp16", "fp16"),
    ("blip2_opt", "caption_coco_opt2.7b"): ("fp32", "fp16"),
    ("blip2_opt", "caption_coco_opt6.7b"): ("fp32", "fp16"),
    ("blip2_t5", "pretrain_flant5xl"): ("fp16", "bf16"),
    ("blip2_t5", "pretrain_flant5xxl"): ("fp16", "bf16"),
    ("blip2_t5", "caption_coco_flant5xl"): ("fp32", "bf16"),
    ("blip2_llm", "vicuna7b"): ("fp16", "fp16"),
    ("blip2_llm", "vicuna13b"): ("fp16", "fp16"),
    ("blip2", "pretrain"): ("fp16", None),
    ("blip2", "coco"): ("fp32", None),
}
TINY = [("instructblip", "tiny_vicuna"), ("instructblip", "tiny_flant5"),
        ("instructblip", "tiny_opt"), ("blip2_opt", "tiny_opt"), ("blip2_t5", "tiny_flant5"),
        ("blip2_llm", "tiny_llama3"), ("blip2", "tiny")]
CUDA = torch.device("cuda")          # only named: nothing here needs a CUDA device


def _resolved(name, model_type, device, **overrides):
    node = with_resolved_precisions(model_config(name, model_type, overrides)[1], device)
    return node.get("vit_precision"), node.get("llm_precision")


@pytest.mark.parametrize("name, model_type", sorted(AUTHORS_ON_CUDA))
def test_each_type_resolves_to_the_authors_dtypes_on_cuda_and_fp32_on_cpu(name, model_type):
    assert model_problems(to_plain(model_config(name, model_type, {})[1])) == []
    vit, llm = AUTHORS_ON_CUDA[name, model_type]
    for cuda in (CUDA, "cuda", "cuda:1"):
        assert _resolved(name, model_type, cuda) == (vit, llm)
    assert _resolved(name, model_type, "cpu") == ("fp32", None if llm is None else "fp32")
    assert _resolved(name, model_type, torch.device("cpu"))[0] == "fp32"


@pytest.mark.parametrize("name, model_type", TINY)
def test_tiny_types_are_fp32_everywhere(name, model_type):
    for device in ("cpu", CUDA):
        assert set(_resolved(name, model_type, device)) <= {"fp32", None}


def test_bf16_is_one_setting_away():
    assert _resolved("instructblip", "vicuna7b", CUDA, llm_precision="bf16") == ("fp16", "bf16")
    assert _resolved("instructblip", "vicuna7b", "cpu", llm_precision="bf16") == ("fp32", "bf16")
    # a mapping merges into the type's: only the CUDA entry changes
    assert _resolved("instructblip", "flant5xl", CUDA, vit_precision={"cuda": "bf16"}) == \
        ("bf16", "bf16")
    assert _resolved("instructblip", "flant5xl", "cpu", vit_precision={"cuda": "bf16"}) == \
        ("fp32", "fp32")
    # the same through a project and --options
    project = package_path("configs/projects/instructblip/instruction_tuning_vicuna7b.yaml")
    for option, want in (([], ("fp16", "fp16")), (["model.llm_precision=bf16"], ("fp16", "bf16")),
                         (["model.vit_precision=bf16", "model.llm_precision=bf16"],
                          ("bf16", "bf16"))):
        node = with_resolved_precisions(Config(project, option).model_cfg, CUDA)
        assert (node.vit_precision, node.llm_precision) == want, option


def test_resolve_precision_rules():
    per_device = {"cuda": "fp16", "cpu": "bf16"}
    assert [resolve_precision(per_device, d) for d in (CUDA, "cpu")] == ["fp16", "bf16"]
    assert [resolve_precision("bf16", d) for d in (CUDA, "cpu")] == ["bf16", "bf16"]
    assert resolve_precision({"cuda": "fp16"}, "cpu") == "fp32"       # left out: fp32
    assert resolve_precision({"cpu": "fp16"}, CUDA) == "fp32"
    assert device_type(None) == device_type("auto") == \
        ("cuda" if torch.cuda.is_available() else "cpu")
    assert DEVICE_TYPES == PRECISION_DEVICES
    with pytest.raises(ConfigError, match=r"model.vit_precision: device types \['gpu'\]"):
        resolve_precision({"gpu": "fp16"}, CUDA, "model.vit_precision")
    with pytest.raises(ConfigError, match="model.llm_precision must be one of fp32, bf16, fp16; "
                                          "got 'fp8'"):
        resolve_precision({"cuda": "fp8"}, CUDA, "model.llm_precision")
    with pytest.raises(ConfigError, match="no precision is defined for device 'meta'"):
        resolve_precision({"cuda": "fp16"}, "meta")
    assert model_problems({"arch": "instructblip", "vit_precision": {"cuda": "fp16"}}) == []
    assert model_problems({"arch": "instructblip", "vit_precision": {"gpu": "fp16"}})[0] \
        .startswith("model.vit_precision: '{'gpu': 'fp16'}' is not one of fp32, bf16, fp16")


def test_load_model_builds_the_entry_of_its_device():
    model = load_model("instructblip", "tiny_vicuna", device="cpu",
                       vit_precision={"cuda": "bf16", "cpu": "fp16"},
                       llm_precision={"cuda": "fp16"})
    assert next(model.visual_encoder.parameters()).dtype == torch.float16
    assert next(model.llm.parameters()).dtype == torch.float32
    assert {p.dtype for _, p in model.trainable_parameters()} == {torch.float32}


def test_a_mapping_reaching_the_builder_takes_the_auto_device_and_says_so(caplog):
    from lavis_ib.models.instructblip.model import InstructBLIP

    node = model_config("instructblip", "tiny_vicuna", {"llm_precision": {"cpu": "bf16",
                                                                          "cuda": "fp16"}})[1]
    with caplog.at_level(logging.INFO, logger="lavis_ib.models.config"):
        model = InstructBLIP.from_config(node)
    want = "fp16" if torch.cuda.is_available() else "bf16"
    assert next(model.llm.parameters()).dtype == DTYPES[want]
    assert f"model.llm_precision {{'cpu': 'bf16', 'cuda': 'fp16'}}: {want} on" in caplog.text


def test_the_runner_builds_for_run_device(monkeypatch):
    """TrainTask.build_model hands the model class the entry of `run.device` (a pretend
    CUDA run is only resolved, not built), and leaves the run's config as it was."""
    from lavis_ib.models.instructblip.model import InstructBLIP
    from lavis_ib.tasks.base_task import TrainTask

    monkeypatch.setattr(InstructBLIP, "from_config", classmethod(lambda cls, cfg: cfg))
    project = package_path("configs/projects/instructblip/instruction_tuning_flant5xl.yaml")
    for device, want in (("cuda", ("fp16", "bf16")), ("cpu", ("fp32", "fp32"))):
        cfg = Config(project, [f"run.device={device}"])
        node = TrainTask().build_model(cfg.config)
        assert (node.vit_precision, node.llm_precision) == want, device
        assert to_plain(cfg.config.model.llm_precision) == {"cuda": "bf16", "cpu": "fp32"}


def test_int8_quantisation_reads_the_llm_precision_of_the_run_device():
    from lavis_ib.models.llm.quantization import quantization_problems

    def refused(precision, device):
        problems = quantization_problems({"llm_quantization": "int8", "llm_precision": precision},
                                         {"device": device})
        return any("computes in fp16" in p for p in problems)

    assert refused({"cuda": "fp32", "cpu": "bf16"}, "cuda")
    assert not refused({"cuda": "fp16", "cpu": "fp32"}, "cuda")
    assert refused({"cuda": "fp16", "cpu": "fp32"}, "cpu")
