"""The command-line plumbing every entry point shares (train, evaluate, export, predict,
demo, report, the fixtures writer): the `--cfg-path/--options` parser, error handling that
prints one line for bad input instead of a traceback, and logging per rank with the
third-party noise left out (`lavis_ib.common.quiet`; `LAVIS_IB_LOG_LEVEL=DEBUG` keeps it).
It imports no layer above `common`; what needs runners and tasks is in `lavis_ib.cli.session`.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

from lavis_ib.common.errors import LavisIbError
from lavis_ib.common.quiet import log_level, quiet_third_party


def project_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--cfg-path", required=True, help="project YAML file")
    parser.add_argument("--options", nargs="+", default=[],
                        help="overrides: key=value (or LAVIS's 'key value' pairs)")
    return parser


def run_entry(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None,
              prog: str) -> int:
    """Call `main(argv)`; a `LavisIbError` becomes 'prog: error: message' and exit code 2."""
    quiet_third_party()
    try:
        return int(main(argv) or 0)
    except LavisIbError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def setup_logging(rank: int) -> None:
    """INFO on rank 0 (or $LAVIS_IB_LOG_LEVEL), warnings only elsewhere (N ranks would
    print every line N times)."""
    quiet_third_party()
    logging.basicConfig(level=log_level() if rank == 0 else max(log_level(), logging.WARNING),
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
                        force=True)
