"""`lavis-ib zoo [--markdown]`: the registered models and model types, or (`--markdown`) the README's
model-zoo tables.
"""
from __future__ import annotations

from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """List registered models and types; `--markdown`: the README's model-zoo tables
    (parameters per part, bf16 weight memory, Table 1 rows, weights; lavis_ib/report/zoo.py)."""
    import argparse

    parser = argparse.ArgumentParser(prog="lavis-ib zoo", description=main.__doc__.split(";")[0])
    parser.add_argument("--markdown", action="store_true", help="print the README's model-zoo tables")
    if parser.parse_args(argv).markdown:
        from lavis_ib.report.zoo import zoo_markdown

        print(zoo_markdown())
        return 0
    from lavis_ib.models.loading import model_zoo

    print(model_zoo)
    return 0
