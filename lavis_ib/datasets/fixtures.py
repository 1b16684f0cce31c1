"""`python -m lavis_ib.datasets.fixtures ROOT [NAME ...]`: the earlier spelling of
`lavis-ib fixtures`; the fixture writer itself is `lavis_ib.testing.fixtures`.
"""
import sys

if __name__ == "__main__":
    from lavis_ib.cli.entry import run_entry
    from lavis_ib.cli.fixtures import main

    sys.exit(run_entry(main, None, "python -m lavis_ib.datasets.fixtures"))
