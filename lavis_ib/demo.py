"""`python -m lavis_ib.demo` (what `make demo` runs): the same as `lavis-ib demo`.

A shim kept so the spelling works before the `lavis-ib` script is on the PATH."""
import sys

from lavis_ib.cli.demo import main

if __name__ == "__main__":
    from lavis_ib.cli.entry import run_entry

    sys.exit(run_entry(main, None, "python -m lavis_ib.demo"))
