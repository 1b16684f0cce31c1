"""`python -m lavis_ib.train --cfg-path PROJECT.yaml`: LAVIS's spelling of `lavis-ib train`.

A shim kept so LAVIS users' commands keep working; the command lives in `lavis_ib.cli.train`."""
import sys

from lavis_ib.cli.train import main

if __name__ == "__main__":
    from lavis_ib.cli.entry import run_entry

    sys.exit(run_entry(main, None, "python -m lavis_ib.train"))
