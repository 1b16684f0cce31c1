"""`lavis-ib check PROJECT.yaml`: every pre-flight check of a project, nothing built or loaded;
exit 0 when it is fine, 2 with every problem listed otherwise.
"""
from __future__ import annotations

from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Compose a project and run every pre-flight check (lavis_ib/cli/preflight.py); nothing is
    built or loaded. Exit 0 when it is fine, 2 (all problems listed) otherwise."""
    import argparse

    from lavis_ib.cli.preflight import checked_config

    parser = argparse.ArgumentParser(prog="lavis-ib check", description=main.__doc__.split("\n")[0])
    parser.add_argument("config", help="project YAML file")
    parser.add_argument("--options", nargs="+", default=[], help="overrides: key=value")
    args = parser.parse_args(argv)
    cfg = checked_config(args.config, args.options)
    model = cfg.config.get("model")
    names = ", ".join(map(str, (cfg.config.get("datasets") or {}).keys())) or "no datasets"
    what = f"{model.arch}:{model.model_type}" if model is not None else "no model"
    print(f"{args.config}: OK ({what}; {names})")
    return 0
