"""`python -m lavis_ib.predict ...`: the same as `lavis-ib predict`."""
import sys

from lavis_ib.cli.entry import run_entry
from lavis_ib.cli.predict import main

sys.exit(run_entry(main, None, "python -m lavis_ib.predict"))
