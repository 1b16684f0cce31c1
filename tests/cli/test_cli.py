import subprocess
import sys

import pytest

from lavis_ib.cli import dispatch as cli
from lavis_ib.cli.entry import run_entry
from lavis_ib.common.errors import ConfigError


def test_usage_and_unknown_command(capsys):
    assert cli.main([]) == 2
    assert "commands:" in capsys.readouterr().out
    assert cli.main(["--help"]) == 0
    assert cli.main(["trian"]) == 2
    assert "Did you mean 'train'?" in capsys.readouterr().err


def test_run_entry_turns_library_errors_into_one_line(capsys):
    def broken(argv):
        raise ConfigError("run.max_iter: unknown key. Did you mean 'max_iters'?")

    assert run_entry(broken, [], "lavis-ib train") == 2
    err = capsys.readouterr().err
    assert err.strip() == "lavis-ib train: error: run.max_iter: unknown key. Did you mean 'max_iters'?"
    assert "Traceback" not in err


def test_run_entry_lets_real_bugs_through():
    def buggy(argv):
        raise ZeroDivisionError("bug")

    with pytest.raises(ZeroDivisionError):
        run_entry(buggy, [], "x")


@pytest.mark.integration
def test_zoo_command_lists_models():
    out = subprocess.run([sys.executable, "-m", "lavis_ib.cli.dispatch", "zoo"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Architectures" in out.stdout


def test_entry_points_share_one_module_and_import_no_other_entry_point():
    """Build and setup code lives in lavis_ib/cli/session.py; no command imports another."""
    import ast
    import os

    import lavis_ib

    root = os.path.dirname(lavis_ib.__file__)
    commands = {cli.command_module(name) for name in cli.COMMANDS}
    for module in sorted(commands):
        path = os.path.join(root, *module.split(".")[1:]) + ".py"
        tree = ast.parse(open(path).read())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {f"lavis_ib.{a.name}" for n in ast.walk(tree)
                     if isinstance(n, ast.ImportFrom) and n.module == "lavis_ib" for a in n.names}
        others = (commands - {module, "lavis_ib.cli.dispatch"}) & imported
        if module != "lavis_ib.cli.demo":  # the demo runs the other commands in turn, by design
            assert not others, f"{module} imports {sorted(others)}"


def _help_of(command):
    """(exit code, stdout) of `lavis-ib COMMAND --help`, run in-process."""
    try:
        return cli.main([command, "--help"])
    except SystemExit as exc:   # argparse exits after printing the help
        return exc.code


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_every_command_prints_its_help_under_its_lavis_ib_name(command, capsys):
    assert _help_of(command) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: lavis-ib {command}"), out[:200]
    assert "-h" in out or "PROJECT.yaml" in out


def test_each_command_is_one_module_of_the_cli_package():
    import importlib

    for name in cli.COMMANDS:
        module = importlib.import_module(cli.command_module(name))
        assert callable(module.main), name


@pytest.mark.parametrize("shim, command", [("lavis_ib.train", "train"), ("lavis_ib.evaluate", "evaluate"),
                                           ("lavis_ib.demo", "demo"), ("lavis_ib.predict", "predict"),
                                           ("lavis_ib.datasets.fixtures", "fixtures")])
def test_the_python_m_spellings_still_run_their_command(shim, command, monkeypatch, capsys):
    """LAVIS's `python -m lavis_ib.train` (and the other earlier spellings) run the command
    (run here as `python -m` runs them, in-process)."""
    import runpy

    monkeypatch.setattr(sys, "argv", [shim, "--help"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_module(shim, run_name="__main__", alter_sys=False)
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: lavis-ib {command}")
