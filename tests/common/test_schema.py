"""The typed `run` schema: OmegaConf structured config in struct mode, with LAVIS's names
mapped by a pre-pass and one-line errors naming the key."""
import dataclasses

import pytest
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from lavis_ib.common.errors import ConfigError
from lavis_ib.common.schema import RunConfig, validate_run


def test_defaults_are_typed_and_complete():
    run = validate_run({})
    assert isinstance(run, DictConfig) and OmegaConf.get_type(run) is RunConfig
    assert OmegaConf.is_struct(run)
    assert set(run.keys()) == {f.name for f in dataclasses.fields(RunConfig)}
    assert run.max_iters == 60000 and run.grad_clip is None and list(run.train_splits) == ["train"]


def test_values_are_converted_by_type():
    run = validate_run({"init_lr": 1, "max_iters": "7", "train_splits": "train",
                        "warmup_steps": 10.0, "grad_clip": 1})
    assert run.init_lr == 1.0 and isinstance(run.init_lr, float)
    assert run.max_iters == 7 and run.warmup_steps == 10 and isinstance(run.warmup_steps, int)
    assert list(run.train_splits) == ["train"] and run.grad_clip == 1.0


def test_unknown_key_names_it_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"^unknown key run\.max_iter\. Did you mean 'max_iters'"):
        validate_run({"max_iter": 5})
    with pytest.raises(ConfigError, match=r"unknown key run\.warmup\b"):
        validate_run({"warmup": 5})


@pytest.mark.parametrize("key, value, expected", [
    ("max_iters", "abc", "int"), ("max_iters", 2.5, "int"), ("max_iters", True, "int"),
    ("init_lr", "fast", "float"), ("evaluate_only", "maybe", "bool"),
    ("train_splits", 3, "list of str"), ("output_dir", None, "str"),
])
def test_wrong_type_names_the_key(key, value, expected):
    with pytest.raises(ConfigError, match=rf"^run\.{key}: expected {expected}, got "):
        validate_run({key: value})


@pytest.mark.parametrize("key, value", [("amp", "fp8"), ("distributed", "deepspeed")])
def test_bad_choice_lists_the_choices(key, value):
    with pytest.raises(ConfigError, match=rf"^run\.{key}: '{value}' is not one of "):
        validate_run({key: value})


def test_lavis_aliases_values_and_ignored_keys():
    run = validate_run({"iters_per_inner_epoch": 50, "amp": True, "distributed": True,
                        "resume_ckpt_path": "", "evaluate": True, "max_grad_norm": 2,
                        "lr_decay_steps": 7, "world_size": 8, "dist_url": "env://", "gpu": 0,
                        "rank": 0})
    assert (run.val_every, run.amp, run.distributed, run.resume, run.evaluate_only,
            run.grad_clip, run.lr_decay_every) == (50, "fp16", "ddp", "none", True, 2.0, 7)
    assert validate_run({"amp": False, "distributed": False}).amp == "none"
    with pytest.raises(ConfigError, match=r"run\.max_epoch is not supported"):
        validate_run({"max_epoch": 3})
    with pytest.raises(ConfigError, match=r"run\.max_grad_norm and run\.grad_clip both set"):
        validate_run({"max_grad_norm": 1.0, "grad_clip": 2.0})


def test_struct_mode_rejects_misspelt_reads_and_writes():
    run = validate_run({})
    with pytest.raises(ConfigAttributeError, match="max_iter"):
        run.max_iter  # noqa: B018
    with pytest.raises((ConfigAttributeError, ConfigKeyError)):
        run.max_iter = 3
    with pytest.raises(ValidationError):
        run.max_iters = "many"
    run.max_iters = 5  # a known key with its type is fine
    assert run.max_iters == 5


def test_stays_typed_inside_the_composed_config():
    config = OmegaConf.create({"run": validate_run({"seed": 3}), "model": {}})
    OmegaConf.resolve(config)
    assert OmegaConf.get_type(config.run) is RunConfig and config.run.seed == 3
    with pytest.raises(ConfigAttributeError):
        config.run.sed  # noqa: B018


def test_accepts_an_omegaconf_node():
    run = validate_run(OmegaConf.create({"max_iters": 9, "valid_splits": ["val", "test"],
                                         "amp": True}))
    assert run.max_iters == 9 and list(run.valid_splits) == ["val", "test"] and run.amp == "fp16"
