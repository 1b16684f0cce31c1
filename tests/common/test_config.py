import sys
import textwrap

import pytest
from omegaconf import OmegaConf

from lavis_ib.common.config import Config
from lavis_ib.common.project_files import parse_options
from lavis_ib.common.errors import ConfigError
from lavis_ib.common.registry import registry
from lavis_ib.common.schema import validate_run

PLUGIN = '''
import os
from lavis_ib import registry
from lavis_ib.models import BaseModel
from lavis_ib.datasets.builders import BaseDatasetBuilder

HERE = os.path.dirname(os.path.abspath(__file__))


@registry.register_model("cfgtest_model")
class CfgTestModel(BaseModel):
    PRETRAINED_MODEL_CONFIG_DICT = {"small": os.path.join(HERE, "small.yaml"),
                                    "large": os.path.join(HERE, "large.yaml")}


class ListDataset(list):
    pass


@registry.register_builder("cfgtest_ds")
class CfgTestBuilder(BaseDatasetBuilder):
    DATASET_CONFIG_DICT = {"default": os.path.join(HERE, "ds.yaml")}

    def build(self):
        return {split: ListDataset(range(int(self.config.size)))
                for split in self.config.build_info.annotations}
'''


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cfgplugin")
    (root / "cfgtest_plugin.py").write_text(PLUGIN)
    (root / "small.yaml").write_text(textwrap.dedent("""
        model:
          arch: cfgtest_model
          hidden_size: 8
          num_layers: 2
          dropout: 0.1
        preprocess: {}
    """))
    (root / "large.yaml").write_text(textwrap.dedent("""
        model:
          arch: cfgtest_model
          hidden_size: 64
          num_layers: 12
          dropout: 0.0
    """))
    (root / "ds.yaml").write_text(textwrap.dedent("""
        datasets:
          cfgtest_ds:
            size: 3
            sample_ratio: 1.0
            build_info:
              annotations:
                train: {storage: a.json}
                val: {storage: b.json}
    """))
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    registry.models.unregister("cfgtest_model")
    registry.builders.unregister("cfgtest_ds")
    sys.modules.pop("cfgtest_plugin", None)


@pytest.fixture
def project(plugin_dir, tmp_path):
    path = tmp_path / "project.yaml"
    path.write_text(textwrap.dedent("""
        plugins: [cfgtest_plugin]
        model:
          arch: cfgtest_model
          model_type: small
          num_layers: 3
        datasets:
          cfgtest_ds:
            size: 5
        run:
          max_iters: 100
          init_lr: 1.0e-4
    """))
    return str(path)


def test_plugin_module_is_imported_and_its_builder_used(project):
    cfg = Config(project)
    builder = registry.get_builder_class("cfgtest_ds")(cfg.datasets_cfg.cfgtest_ds)
    splits = builder.build_datasets()
    assert sorted(splits) == ["train", "val"] and len(splits["train"]) == 5


def test_override_precedence(project):
    cfg = Config(project, ["model.dropout=0.5", "run.max_iters=7", "datasets.cfgtest_ds.size=9"])
    model = cfg.model_cfg
    assert model.hidden_size == 8          # default YAML
    assert model.num_layers == 3           # project over default
    assert model.dropout == 0.5            # option over default
    assert cfg.run_cfg.max_iters == 7      # option over project
    assert cfg.run_cfg.init_lr == 1e-4     # project over schema default
    assert cfg.run_cfg.warmup_steps == 1000  # schema default
    assert cfg.datasets_cfg.cfgtest_ds.size == 9
    assert cfg.datasets_cfg.cfgtest_ds.sample_ratio == 1.0


def test_lavis_pair_form_of_options(project):
    cfg = Config(project, ["run.max_iters", "11", "model.dropout", "0.2"])
    assert cfg.run_cfg.max_iters == 11 and cfg.model_cfg.dropout == 0.2
    assert parse_options(["a.b=c=d", "x.y", "1"]) == [("a.b", "c=d"), ("x.y", "1")]


def test_model_type_option_selects_its_default_yaml(project):
    cfg = Config(project, ["model.model_type=large"])
    assert cfg.model_cfg.model_type == "large"
    assert cfg.model_cfg.hidden_size == 64   # from large.yaml, not small.yaml
    assert cfg.model_cfg.num_layers == 3     # the project still overrides the default


def test_misspelt_run_key_fails_with_suggestion(project):
    with pytest.raises(ConfigError, match=r"run\.max_iter\b.*Did you mean 'max_iters'"):
        Config(project, ["run.max_iter=5"])


def test_wrong_type_names_the_key(project):
    with pytest.raises(ConfigError, match=r"run\.max_iters: expected int"):
        Config(project, ["run.max_iters=abc"])
    with pytest.raises(ConfigError, match=r"run\.amp: 'fp8' is not one of"):
        Config(project, ["run.amp=fp8"])


def test_unknown_override_key_suggests_and_plus_adds(project):
    with pytest.raises(ConfigError, match="Did you mean 'hidden_size'"):
        Config(project, ["model.hiden_size=3"])
    cfg = Config(project, ["+model.extra_flag=true"])
    assert cfg.model_cfg.extra_flag is True
    with pytest.raises(ConfigError, match="no dataset 'cfgtest_dz'.*Did you mean 'cfgtest_ds'"):
        Config(project, ["datasets.cfgtest_dz.size=1"])


def test_unknown_model_type_and_arch(project):
    with pytest.raises(ConfigError, match="unknown model_type 'smal'.*Did you mean 'small'"):
        Config(project, ["model.model_type=smal"])
    with pytest.raises(Exception, match="unknown model 'cfgtest_modl'.*Did you mean 'cfgtest_model'"):
        Config(project, ["model.arch=cfgtest_modl"])


def test_bad_files_give_one_line_errors(plugin_dir, tmp_path):
    with pytest.raises(ConfigError, match="project file '.*nope.yaml' does not exist"):
        Config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        Config(str(bad))
    top = tmp_path / "top.yaml"
    top.write_text("rnu: {}\n")
    with pytest.raises(ConfigError, match="unknown top-level key 'rnu'.*Did you mean 'run'"):
        Config(str(top))
    plug = tmp_path / "plug.yaml"
    plug.write_text("plugins: [no_such_plugin_module]\n")
    with pytest.raises(ConfigError, match="plugin module 'no_such_plugin_module' cannot be imported"):
        Config(str(plug))


def test_bad_option_syntax(project):
    with pytest.raises(ConfigError, match="cannot read"):
        Config(project, ["=oops"])


def test_config_saved_in_run_folder(project, tmp_path):
    cfg = Config(project, ["run.max_iters=3"])
    path = cfg.save(str(tmp_path / "run"))
    saved = OmegaConf.load(path)
    assert saved.run.max_iters == 3 and saved.model.num_layers == 3


def test_includes_merge_in_order_beneath_the_including_file(project, tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(f"includes: [{project}]\nrun: {{max_iters: 50, init_lr: 2.0e-4}}\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "other.yaml").write_text("run: {max_iters: 60, warmup_steps: 7}\n")
    (sub / "ablation.yaml").write_text(
        "includes: [../base.yaml, other.yaml]\nmodel: {dropout: 0.3}\nrun: {max_iters: 70}\n")
    cfg = Config(str(sub / "ablation.yaml"), ["run.init_lr=3.0e-4"])
    assert cfg.run_cfg.max_iters == 70              # the including file wins
    assert cfg.run_cfg.warmup_steps == 7            # the later include over the earlier
    assert cfg.run_cfg.init_lr == 3e-4              # --options over all files
    assert cfg.model_cfg.num_layers == 3 and cfg.model_cfg.dropout == 0.3
    assert "includes" not in cfg.config and cfg.datasets_cfg.cfgtest_ds.size == 5


def test_include_errors_are_one_line(plugin_dir, tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("includes: [b.yaml]\n")
    b.write_text("includes: [a.yaml]\n")
    with pytest.raises(ConfigError, match=r"includes form a cycle \(a.yaml -> b.yaml -> a.yaml\)"):
        Config(str(a))
    a.write_text("includes: [missing.yaml]\n")
    with pytest.raises(ConfigError, match="included file 'missing.yaml' does not exist"):
        Config(str(a))
    a.write_text("includes: b.yaml\n")
    with pytest.raises(ConfigError, match="includes must be a list"):
        Config(str(a))
    b.write_text("run: {max_iters: 5}\n")
    with pytest.raises(ConfigError, match="unknown top-level key 'includes'"):
        Config(str(b), ["includes=[x]"])


def test_builder_key_reuses_a_registered_builder_under_another_name(project, tmp_path):
    path = tmp_path / "two_ways.yaml"
    path.write_text(textwrap.dedent(f"""
        includes: [{project}]
        datasets:
          small_copy: {{builder: cfgtest_ds, size: 2}}
    """))
    cfg = Config(str(path), ["datasets.small_copy.size=4"])
    entry = cfg.datasets_cfg.small_copy
    assert entry.sample_ratio == 1.0 and entry.size == 4     # the builder's defaults beneath
    from lavis_ib.tasks.base_task import TrainTask

    built = TrainTask(cfg.config).build_datasets(cfg.config)
    assert len(built["small_copy"]["train"]) == 4 and len(built["cfgtest_ds"]["train"]) == 5
    with pytest.raises(Exception, match="Did you mean 'cfgtest_ds'"):
        Config(str(path), ["datasets.small_copy.builder=cfgtest_dz"])


def test_switching_task_or_inference_drops_the_defaults_protocol():
    from lavis_ib.common.config import compose_dataset

    entry = compose_dataset("gqa")
    assert entry.task == "gqa" and entry.metric == "exact" and entry.generate.num_beams == 5
    switched = compose_dataset("gqa", {"task": "vqa"})
    assert not {"prompt", "generate", "metric", "inference"} & set(switched)
    assert switched.build_info == entry.build_info
    ranked = compose_dataset("gqa", {"inference": "rank"})
    assert "generate" not in ranked and ranked.prompt == entry.prompt
    replaced = compose_dataset("gqa", {"generate": {"num_beams": 1}})
    assert dict(replaced.generate) == {"num_beams": 1}       # replaced as a whole
    merged = compose_dataset("gqa", None, {"generate": {"num_beams": 1}})
    assert merged.generate.num_beams == 1 and merged.generate.max_length == 10  # --options


def test_run_schema_aliases():
    run = validate_run({"iters_per_inner_epoch": 50, "amp": True, "distributed": False,
                        "resume_ckpt_path": None, "world_size": 8, "dist_url": "env://"})
    assert run["val_every"] == 50 and run["amp"] == "fp16"
    assert run["distributed"] == "none" and run["resume"] == "none"
    with pytest.raises(ConfigError, match="max_epoch is not supported"):
        validate_run({"max_epoch": 3})
    with pytest.raises(ConfigError, match="both set"):
        validate_run({"iters_per_inner_epoch": 5, "val_every": 6})


def test_every_run_key_is_documented():
    import dataclasses
    import os

    from lavis_ib.common.schema import ALIASES, RunConfig

    doc = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "projects.md")).read()
    for f in dataclasses.fields(RunConfig):
        assert f"| `{f.name}` |" in doc, f"run.{f.name} is missing from docs/projects.md"
    for alias in ALIASES:
        assert f"`{alias}`" in doc, f"LAVIS alias {alias} is missing from docs/projects.md"
