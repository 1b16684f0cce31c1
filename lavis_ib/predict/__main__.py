"""`python -m lavis_ib.predict ...`: the same as `lavis-ib predict`.

Kept so the module spelling works next to the script; the command is `lavis_ib.cli.predict`."""
import sys

from lavis_ib.cli.entry import run_entry
from lavis_ib.cli.predict import main

sys.exit(run_entry(main, None, "python -m lavis_ib.predict"))
