"""`lavis-ib COMMAND`: the one command line; each command is a module `lavis_ib.cli.<name>`
with a `main(argv)`, imported only when that command runs (so `lavis-ib --help` is fast).
`COMMANDS` is the table the usage text, the README's command list and the tests read.
"""
from __future__ import annotations

import importlib
import sys
from typing import Sequence

from lavis_ib.cli.entry import run_entry
from lavis_ib.common.errors import did_you_mean

#: name -> one line of help; the module is `lavis_ib.cli.<name>`
COMMANDS = {
    "train": "train a model from a project file (instruction tuning, finetuning)",
    "evaluate": "evaluate a project's eval splits",
    "predict": "answer a prompt about images or a video",
    "check": "check a project file (keys, values, files, metrics) without running it",
    "data": "data check PROJECT: per dataset, files present and missing, samples found",
    "zoo": "list registered models and model types",
    "export": "write a run's checkpoint in the Hugging Face layout",
    "report": "render a held-out results table beside the paper's",
    "serve": "start the web demo (Gradio; pip install 'lavis_ib[demo]')",
    "demo": "the five-minute tour: fixtures, train, evaluate and report on tiny models",
    "fixtures": "write tiny copies of the datasets in their real formats",
}


def command_module(name: str) -> str:
    return f"lavis_ib.cli.{name}"


def usage() -> str:
    rows = ["usage: lavis-ib COMMAND [ARGS]", "", "commands:"]
    rows += [f"  {name:<10}{help_}" for name, help_ in COMMANDS.items()]
    return "\n".join(rows)


def commands_markdown() -> str:
    """The README's command list: a Markdown table of `COMMANDS`, one row per command."""
    rows = ["| command | what it does |", "|---|---|"]
    rows += [f"| `lavis-ib {name}` | {help_} |" for name, help_ in COMMANDS.items()]
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"lavis-ib: error: unknown command '{command}'.{did_you_mean(command, COMMANDS)}\n"
              f"{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(command_module(command))
    return run_entry(module.main, rest, f"lavis-ib {command}")


if __name__ == "__main__":
    sys.exit(main())
