"""`python -m lavis_ib.evaluate --cfg-path PROJECT.yaml`: LAVIS's spelling of `lavis-ib evaluate`.

A shim kept so LAVIS users' commands keep working; the command lives in `lavis_ib.cli.evaluate`."""
import sys

from lavis_ib.cli.evaluate import main

if __name__ == "__main__":
    from lavis_ib.cli.entry import run_entry

    sys.exit(run_entry(main, None, "python -m lavis_ib.evaluate"))
