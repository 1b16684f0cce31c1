"""`lavis-ib fixtures ROOT [NAME ...]`: write tiny copies of the datasets in their real
formats (`lavis_ib.testing.fixtures`) and print the overrides that point projects at them.
"""
from __future__ import annotations

import json
import sys
from typing import Sequence

from lavis_ib.testing.fixtures import WRITERS, write_fixtures


def main(argv: Sequence[str] | None = None) -> int:
    """``lavis-ib fixtures ROOT [NAME ...]``: write fixtures, print the
    overrides as JSON."""
    import argparse

    parser = argparse.ArgumentParser(prog="lavis-ib fixtures",
                                     description="Write tiny copies of the datasets in their real formats.")
    parser.add_argument("root")
    parser.add_argument("names", nargs="*", help=f"datasets (default: all): {', '.join(WRITERS)}")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(json.dumps(write_fixtures(args.root, args.names or None, args.seed), indent=1))
    return 0


if __name__ == "__main__":
    from lavis_ib.cli.entry import run_entry

    sys.exit(run_entry(main, None, "lavis-ib fixtures"))
