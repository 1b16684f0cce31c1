"""Shared plumbing of the entry points: the `--cfg-path/--options` parser and error
handling that prints one line for bad input instead of a traceback."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from lavis_ib.common.errors import LavisIbError


def project_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--cfg-path", required=True, help="project YAML file")
    parser.add_argument("--options", nargs="+", default=[],
                        help="overrides: key=value (or LAVIS's 'key value' pairs)")
    return parser


def run_entry(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None,
              prog: str) -> int:
    """Call `main(argv)`; a `LavisIbError` becomes 'prog: error: message' and exit code 2."""
    try:
        return int(main(argv) or 0)
    except LavisIbError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
