"""The command line: one module per `lavis-ib` command (`train`, `evaluate`, `predict`, ...),
the dispatcher (`dispatch`), the plumbing every command shares (`entry`), the checks made
before anything is built (`preflight`) and the build of a run (`session`).
"""


def main(argv=None) -> int:
    """`lavis-ib` itself (the console script's entry point)."""
    from lavis_ib.cli.dispatch import main as dispatch_main

    return dispatch_main(argv)
