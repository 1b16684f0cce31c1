"""Project composition faults (reliability audit probes C1a, C1b, C5b, C6): an `includes:` of a
file that is not a project never echoes its content, an unset `${oc.env:NAME}` is one line
naming the variable and the key, and a plugin module that fails while being imported
(exception, SyntaxError, missing dependency, `sys.exit`) is one line in check, train and
evaluate alike."""
from __future__ import annotations

import sys

import pytest

import lavis_ib.common.registry as registry_module
from lavis_ib.common.config import Config
from lavis_ib.common.errors import ConfigError

MODEL = "model: {arch: instructblip, model_type: tiny_vicuna}\n"
# the start of a system password file: plain text that YAML reads as one long scalar
PASSWD = ("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
          "secret-hash:$6$abcdefgh\n")


def _including(tmp_path, target, body=MODEL):
    path = tmp_path / "inc.yaml"
    path.write_text(f"includes: ['{target}']\n{body}")
    return str(path)


# (row id, content of the included file, the line expected)
INCLUDES = [
    ("C1a passwd-like text", PASSWD, "included project file '{target}' must hold a mapping at the top "
                                     "level; it holds plain text."),
    ("C1b one word (a hostname)", "vm\n", "included project file '{target}' must hold a mapping at the "
                                          "top level; it holds plain text."),
    ("a list", "- 1\n- 2\n", "included project file '{target}' must hold a mapping at the top level; "
                             "it holds a list."),
    ("YAML of other keys", "services: {web: 1}\nmodel: {}\nvolumes: []\n",
     "{path}: included file 'other' is not a project file: its top-level key 'services' (and 1 more) "
     "is not one of model, datasets, run, plugins, includes."),
    ("a long key", "root:x:0:0:root:/root:/bin/bash daemon: 1\n",
     "{path}: included file 'other' is not a project file: its top-level key of 38 characters "
     "(not a name) is not one of model, datasets, run, plugins, includes."),
]


@pytest.mark.parametrize("content,expected", [r[1:] for r in INCLUDES], ids=[r[0] for r in INCLUDES])
def test_an_include_that_is_not_a_project_is_one_line_without_its_content(tmp_path, content, expected):
    target = tmp_path / "other"
    target.write_text(content)
    path = _including(tmp_path, "other")
    with pytest.raises(ConfigError) as err:
        Config(path)
    message = str(err.value)
    assert message == expected.format(target=target, path=path)
    assert "root:x" not in message and "abcdefgh" not in message and "\n" not in message


def test_a_long_unknown_key_of_the_project_itself_is_described_not_quoted(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(MODEL + "root:x:0:0:root:/root:/bin/bash daemon: 1\n")
    with pytest.raises(ConfigError) as err:
        Config(str(path))
    assert str(err.value) == (f"{path}: unknown top-level key of 38 characters (not a name). "
                              f"Allowed: model, datasets, run, plugins, includes.")


def test_an_unset_env_variable_names_the_variable_and_the_key(tmp_path, monkeypatch):
    monkeypatch.delenv("LAVIS_IB_AUDIT_NOPE", raising=False)
    path = tmp_path / "env.yaml"
    path.write_text(MODEL + "run: {output_dir: '${oc.env:LAVIS_IB_AUDIT_NOPE}/x'}\n")
    with pytest.raises(ConfigError) as err:
        Config(str(path))
    assert str(err.value) == (f"{path}: run.output_dir: environment variable $LAVIS_IB_AUDIT_NOPE is "
                              f"not set (in '${{oc.env:LAVIS_IB_AUDIT_NOPE}}/x'); set it, or give a "
                              f"default: ${{oc.env:LAVIS_IB_AUDIT_NOPE,DEFAULT}}.")
    # set, given a default, or replaced by an option: the project composes
    assert Config(str(path), ["run.output_dir=/tmp/x"]).run_cfg.output_dir == "/tmp/x"
    monkeypatch.setenv("LAVIS_IB_AUDIT_NOPE", str(tmp_path))
    assert Config(str(path)).run_cfg.output_dir == f"{tmp_path}/x"
    monkeypatch.delenv("LAVIS_IB_AUDIT_NOPE")
    path.write_text(MODEL + "run: {output_dir: '${oc.env:LAVIS_IB_AUDIT_NOPE,out}/x'}\n")
    assert Config(str(path)).run_cfg.output_dir == "out/x"


def test_an_unset_env_variable_in_an_option_or_a_dataset_entry(tmp_path, monkeypatch):
    monkeypatch.delenv("LAVIS_IB_AUDIT_NOPE", raising=False)
    path = tmp_path / "p.yaml"
    path.write_text(MODEL + "datasets: {coco_caption: {build_info: {images: {storage: "
                            "['${oc.env:LAVIS_IB_AUDIT_NOPE}']}}}}\n")
    with pytest.raises(ConfigError, match=r": datasets\.coco_caption\.build_info\.images\.storage\[0\]: "
                                          r"environment variable \$LAVIS_IB_AUDIT_NOPE is not set"):
        Config(str(path))
    path.write_text(MODEL)
    with pytest.raises(ConfigError, match=r"^--options: run\.output_dir: environment variable "
                                          r"\$LAVIS_IB_AUDIT_NOPE is not set"):
        Config(str(path), ["run.output_dir=${oc.env:LAVIS_IB_AUDIT_NOPE}"])
    with pytest.raises(ConfigError, match=r"output_dir: Interpolation key 'run\.nope' not found$"):
        Config(str(path), ["run.output_dir=${run.nope}"])


# (row id, the plugin module's source, the error part of the line)
PLUGINS = [
    ("raises", "raise RuntimeError('plugin broke at import')\n", "RuntimeError: plugin broke at import"),
    ("missing dependency", "import missing_dependency_xyz\n",
     "ModuleNotFoundError: No module named 'missing_dependency_xyz'"),
    ("SyntaxError", "def f(:\n", "SyntaxError: invalid syntax ({file}, line 1)"),
    ("sys.exit", "import sys\nsys.exit(3)\n", "it called sys.exit(3)"),
]


@pytest.fixture()
def broken_plugin(tmp_path, monkeypatch, request):
    """A project naming one broken plugin module of the given source."""
    name = f"lavis_ib_broken_plugin_{request.node.callspec.id.replace('.', '_').replace(' ', '_')}"
    source, error = request.param
    module = tmp_path / f"{name}.py"
    module.write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    project = tmp_path / "plugged.yaml"
    project.write_text(MODEL + f"plugins: [{name}]\n")
    yield str(project), name, error.format(file=module)
    sys.modules.pop(name, None)


@pytest.mark.parametrize("broken_plugin", [r[1:] for r in PLUGINS], ids=[r[0] for r in PLUGINS],
                         indirect=True)
def test_a_plugin_that_fails_at_import_is_one_line_in_check_train_and_evaluate(broken_plugin, capsys):
    import lavis_ib.cli.evaluate
    import lavis_ib.cli.train
    from lavis_ib.cli.dispatch import main

    project, name, error = broken_plugin
    expected = (f"{project}: plugins: plugin module '{name}' failed while being imported: {error}. "
                f"Fix the module (or its missing dependency), or remove it from the plugins.")
    assert main(["check", project]) == 2
    assert capsys.readouterr().err.strip() == f"lavis-ib check: error: {expected}"
    for command in (lavis_ib.cli.train.main, lavis_ib.cli.evaluate.main):
        with pytest.raises(ConfigError) as err:
            command(["--cfg-path", project])
        assert str(err.value) == expected


def test_an_entry_point_plugin_that_fails_at_import_is_one_line(tmp_path, monkeypatch):
    from importlib.metadata import EntryPoint

    (tmp_path / "lavis_ib_broken_ep.py").write_text("raise ImportError('needs a GPU library')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry_module, "_plugins_loaded", False)
    broken = EntryPoint(name="mine", value="lavis_ib_broken_ep", group=registry_module.ENTRY_POINT_GROUP)
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: [broken])
    with pytest.raises(ConfigError) as err:
        registry_module.load_entry_point_plugins()
    assert str(err.value) == ("entry point 'mine' of group 'lavis_ib.plugins': plugin module "
                              "'lavis_ib_broken_ep' failed while being imported: ImportError: needs a "
                              "GPU library. Fix the module (or its missing dependency), or remove it "
                              "from the plugins.")
