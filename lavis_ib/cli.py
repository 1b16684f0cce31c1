"""`lavis-ib`: one command line for training, evaluation, prediction and tooling.

    lavis-ib train    --cfg-path PROJECT.yaml [--options k=v ...]
    lavis-ib evaluate --cfg-path PROJECT.yaml [--options k=v ...]
    lavis-ib predict  --model instructblip:tiny_vicuna --image a.jpg --prompt "..."
    lavis-ib check    PROJECT.yaml [--options k=v ...]   (pre-flight checks only; exit 0 or 2)
    lavis-ib data check PROJECT.yaml [--options k=v ...] (data files present / missing, samples)
    lavis-ib zoo      [--markdown]  registered models and model types (--markdown: the README tables)
    lavis-ib export   RUN_DIR OUT_DIR   (Hugging Face layout)
    lavis-ib report   RUN_DIR           (Table-1 style report)
    lavis-ib serve    --model instructblip:tiny_vicuna [--port 0]   (web demo on 127.0.0.1)
"""
from __future__ import annotations

import importlib
import sys
from typing import Sequence

from lavis_ib.common.entry import run_entry
from lavis_ib.common.errors import did_you_mean

COMMANDS = {
    "train": ("lavis_ib.train", "instruction-tune a model from a project file"),
    "evaluate": ("lavis_ib.evaluate", "evaluate a project's eval splits"),
    "predict": ("lavis_ib.predict", "answer a prompt about images or a video"),
    "check": ("lavis_ib.cli", "check a project file (keys, values, files, metrics) without running it"),
    "data": ("lavis_ib.cli", "data check PROJECT: per dataset, files present and missing, samples found"),
    "zoo": ("lavis_ib.cli", "list registered models and model types"),
    "export": ("lavis_ib.export", "write a run's checkpoint in the Hugging Face layout"),
    "report": ("lavis_ib.report", "render a held-out results table beside the paper's"),
    "serve": ("lavis_ib.serve", "start the web demo (Gradio; pip install 'lavis_ib[demo]')"),
}


def _usage() -> str:
    rows = ["usage: lavis-ib COMMAND [ARGS]", "", "commands:"]
    rows += [f"  {name:<10}{help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(rows)


def zoo(argv: Sequence[str] | None = None) -> int:
    """List registered models and types; `--markdown`: the README's model-zoo tables
    (parameters per part, bf16 weight memory, Table 1 rows, weights; lavis_ib/zoo_table.py)."""
    import argparse

    parser = argparse.ArgumentParser(prog="lavis-ib zoo", description=zoo.__doc__.split(";")[0])
    parser.add_argument("--markdown", action="store_true", help="print the README's model-zoo tables")
    if parser.parse_args(argv).markdown:
        from lavis_ib.zoo_table import zoo_markdown

        print(zoo_markdown())
        return 0
    from lavis_ib.models.loading import model_zoo

    print(model_zoo)
    return 0


def check(argv: Sequence[str] | None = None) -> int:
    """Compose a project and run every pre-flight check (lavis_ib/preflight.py); nothing is
    built or loaded. Exit 0 when it is fine, 2 (all problems listed) otherwise."""
    import argparse

    from lavis_ib.preflight import checked_config

    parser = argparse.ArgumentParser(prog="lavis-ib check", description=check.__doc__.split("\n")[0])
    parser.add_argument("config", help="project YAML file")
    parser.add_argument("--options", nargs="+", default=[], help="overrides: key=value")
    args = parser.parse_args(argv)
    cfg = checked_config(args.config, args.options)
    model = cfg.config.get("model")
    names = ", ".join(map(str, (cfg.config.get("datasets") or {}).keys())) or "no datasets"
    what = f"{model.arch}:{model.model_type}" if model is not None else "no model"
    print(f"{args.config}: OK ({what}; {names})")
    return 0


def data(argv: Sequence[str] | None = None) -> int:
    """`lavis-ib data check PROJECT`: the data check of lavis_ib/data_check.py (exit 0 when
    every dataset's files are present, 2 otherwise)."""
    from lavis_ib.data_check import main as data_check

    args = list(argv or [])
    if not args or args[0] != "check":
        asked = args[:1] in (["-h"], ["--help"])
        print("usage: lavis-ib data check PROJECT.yaml [--options key=value ...]",
              file=sys.stdout if asked else sys.stderr)
        return 0 if asked else 2
    return data_check(args[1:])


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"lavis-ib: error: unknown command '{command}'.{did_you_mean(command, COMMANDS)}\n"
              f"{_usage()}", file=sys.stderr)
        return 2
    local = {"zoo": zoo, "check": check, "data": data}
    if command in local:
        return run_entry(local[command], rest, f"lavis-ib {command}")
    module = importlib.import_module(COMMANDS[command][0])
    return run_entry(module.main, rest, f"lavis-ib {command}")


if __name__ == "__main__":
    sys.exit(main())
