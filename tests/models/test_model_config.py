"""The typed `model:` node (`models/config.py`): the keys each shipped model reads (written
out below as data, as the builders accepted them before the config existed), settings that
agree with the model constructors' signatures, every shipped default YAML inside its
config, ranges and unknown keys reported in the pre-flight, plugin configs, and an import
that loads no torch."""
from __future__ import annotations

import dataclasses
import glob
import os
import subprocess
import sys
import textwrap

import pytest
import yaml

from lavis_ib.common.errors import ConfigError, LavisIbError, RegistryError
from lavis_ib.models.config import (LAVIS_ROUTE, OPTION, SETTING, Blip2Config, InstructBlipConfig,
                                    ModelConfig, accepted_keys, config_class, key,
                                    model_problems, register_model_config, INT_AT_LEAST_1)
from tests.conftest import REPO_ROOT

# The keys the builders accepted before this config (their hand-kept tuples, plus the
# options every Q-Former node took), written out.
INSTRUCTBLIP_KEYS = {
    "arch", "model_type", "pretrained", "checkpoint", "vit_weights", "llm_model", "llm_tokenizer",
    "qformer_tokenizer", "init_from", "allow_random_init", "num_query_token", "vision", "qformer",
    "llm_config", "ln_vision_eps", "vit_grad_ckpt", "qformer_grad_ckpt", "qformer_text_input",
    "max_txt_len", "max_output_txt_len", "prompt", "freeze_vit", "vit_precision", "llm_precision",
    "llm_quantization", "llm_lora", "random_init_seed", "llm_train_mode"}
BLIP2_KEYS = INSTRUCTBLIP_KEYS - {"qformer_tokenizer", "init_from", "allow_random_init",
                                  "qformer_text_input"}
INSTRUCTBLIP_SETTINGS = {"qformer_text_input", "max_txt_len", "max_output_txt_len", "prompt",
                         "freeze_vit", "vit_precision", "llm_precision"}


def test_keys_roles_and_builtin_names():
    assert InstructBlipConfig.keys() == INSTRUCTBLIP_KEYS
    assert Blip2Config.keys() == BLIP2_KEYS | {"stage2_objective", "init_from", "allow_random_init"}
    assert set(InstructBlipConfig.keys_with(SETTING)) == INSTRUCTBLIP_SETTINGS
    assert set(Blip2Config.keys_with(SETTING)) == \
        INSTRUCTBLIP_SETTINGS - {"qformer_text_input"} | {"stage2_objective"}
    assert InstructBlipConfig.keys_with(LAVIS_ROUTE) == ("checkpoint", "vit_weights", "llm_model")
    assert set(InstructBlipConfig.keys_with(OPTION)) == {"llm_quantization", "llm_lora",
                                                         "random_init_seed"}
    assert config_class("instructblip") is InstructBlipConfig
    assert config_class("blip2_opt") is config_class("blip2_t5") is config_class("blip2_llm") is Blip2Config


def test_builtin_models_all_declare_a_config():
    from lavis_ib import registry

    builtin = [n for n in registry.list_models()
               if registry.get_model_class(n).__module__.startswith("lavis_ib.")]
    assert builtin and all(config_class(n) is not None for n in builtin), builtin


def test_settings_agree_with_the_constructors():
    """Each setting is a keyword of the model class's constructor, with the same default
    (checked through the signature, as torchtune checks a config against its component)."""
    from lavis_ib.models.blip2.decoder_only import Blip2LLM
    from lavis_ib.models.blip2.model import Blip2OPT, Blip2T5
    from lavis_ib.models.instructblip.model import InstructBLIP

    assert InstructBlipConfig.signature_problems(InstructBLIP) == []
    assert Blip2Config.signature_problems(Blip2OPT) == [] == Blip2Config.signature_problems(Blip2T5)
    assert Blip2Config.signature_problems(Blip2LLM) == []
    # Blip2Config on InstructBLIP: its lengths default to 128/256 there, not 32/32, and it has
    # no stage-2 objective
    assert [p.split(" defaults")[0].split(" is a")[0]
            for p in Blip2Config.signature_problems(InstructBLIP)] == [
        "Blip2Config.max_txt_len", "Blip2Config.max_output_txt_len", "Blip2Config.stage2_objective"]

    @dataclasses.dataclass
    class Extra(InstructBlipConfig):
        dropout_rate: float = key(0.1, role=SETTING)

    assert Extra.signature_problems(InstructBLIP) == [
        "Extra.dropout_rate is a model setting, but InstructBLIP() takes no 'dropout_rate'."]
    with pytest.raises(LavisIbError, match=r"Extra declares model setting\(s\) \['dropout_rate'\]"):
        Extra.checked({"dropout_rate": 0.2}, builder=InstructBLIP)


def _shipped_model_nodes():
    for path in sorted(glob.glob(os.path.join(REPO_ROOT, "lavis_ib", "configs", "models", "*", "*.yaml"))):
        with open(path) as f:
            yield os.path.relpath(path, REPO_ROOT), yaml.safe_load(f)["model"]


@pytest.mark.parametrize("path,node", list(_shipped_model_nodes()),
                         ids=[p for p, _ in _shipped_model_nodes()])
def test_every_shipped_default_yaml_is_inside_its_config(path, node):
    config = config_class(node["arch"])
    assert set(node) <= config.keys(), set(node) - config.keys()
    assert config.keys() - set(node) <= set(config.keys_with(OPTION))   # all else is spelt out
    assert model_problems(node) == []


def test_out_of_range_values_one_line_each():
    node = {"arch": "instructblip", "max_txt_len": 0, "num_query_token": "32",
            "random_init_seed": -1, "freeze_vit": "yes", "vit_precision": "fp8",
            "llm_precision": "bf16", "prompt": "", "max_output_txt_len": True}
    assert model_problems(node) == [
        "model.max_txt_len must be an integer >= 1; got 0.",
        "model.max_output_txt_len must be an integer >= 1; got True.",
        "model.num_query_token must be an integer >= 1; got '32'.",
        "model.random_init_seed must be an integer >= 0; got -1.",
        "model.freeze_vit must be true or false; got 'yes'.",
        "model.vit_precision: 'fp8' is not one of fp32, bf16, fp16 (or a per-device mapping "
        "such as {cuda: fp16, cpu: fp32})."]


def test_a_misspelt_key_gets_its_did_you_mean_everywhere():
    from lavis_ib.models.instructblip.model import InstructBLIP

    node = {"arch": "instructblip", "model_type": "tiny_vicuna", "max_txt_lenn": 3}
    line = model_problems(node)[0]
    assert line.startswith("model config: unknown keys ['max_txt_lenn']. Did you mean "
                           "'max_txt_len'? Known: ['allow_random_init', 'arch',")
    with pytest.raises(ConfigError) as err:     # the builder says the same
        InstructBLIP.from_config(node)
    assert str(err.value) == line
    with pytest.raises(ConfigError, match="model.llm_precision must be one of fp32, bf16, fp16; "
                                          "got 'int4'"):
        InstructBLIP.from_config({"llm_precision": "int4"})


def test_the_preflight_reports_a_misspelt_model_key_before_building(tmp_path):
    from lavis_ib.cli.preflight import checked_config

    path = tmp_path / "project.yaml"
    path.write_text(textwrap.dedent("""\
        model: {arch: blip2_opt, model_type: tiny_opt, freez_vit: false}
        run: {max_iters: 2, val_every: 0, output_dir: out}
        """))
    with pytest.raises(ConfigError, match=r"unknown keys \['freez_vit'\]\. Did you mean 'freeze_vit'\?"):
        checked_config(str(path))


def test_load_model_overrides_follow_the_config():
    node = {"arch": "instructblip", "max_txt_len": 64}
    assert accepted_keys("instructblip", node) == INSTRUCTBLIP_KEYS
    assert accepted_keys("plugin_without_config", {"width": 3}) == {
        "width", "llm_quantization", "llm_lora", "random_init_seed"}


def test_a_plugin_declares_its_own_config(monkeypatch):
    import lavis_ib.models.config as config_module

    monkeypatch.setattr(config_module, "_CONFIGS", dict(config_module._CONFIGS))

    @register_model_config("toy_for_config_test")
    @dataclasses.dataclass
    class ToyConfig(ModelConfig):
        width: int = key(16, rule=INT_AT_LEAST_1)   # channels
        label: str = key("toy")

    assert config_class("toy_for_config_test") is ToyConfig
    assert model_problems({"arch": "toy_for_config_test", "width": 0, "labl": "x"}) == [
        "model config: unknown keys ['labl']. Did you mean 'label'? Known: ['arch', 'label', "
        "'model_type', 'width'].",
        "model.width must be an integer >= 1; got 0."]
    # a model without a config: the shipped models' ranges on the keys it shares, no key check
    assert model_problems({"arch": "undeclared_toy", "width": 0, "max_txt_len": 0}) == [
        "model.max_txt_len must be an integer >= 1; got 0."]
    with pytest.raises(RegistryError, match="already registered"):
        register_model_config("toy_for_config_test", InstructBlipConfig)
    with pytest.raises(RegistryError, match="must be a dataclass subclassing"):
        register_model_config("not_a_config", dict)


def test_precision_names_are_the_dtype_table():
    from lavis_ib.common.precision import DTYPES
    from lavis_ib.models.config import PRECISIONS

    assert PRECISIONS == tuple(DTYPES)


@pytest.mark.integration
def test_importing_the_config_and_generation_modules_loads_no_torch():
    code = ("import sys; import lavis_ib.models.config, lavis_ib.models.generation; "
            "heavy = {'torch', 'torchvision', 'transformers', 'timm'} & set(sys.modules); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT,
                   env={**os.environ, "PYTHONPATH": REPO_ROOT})
