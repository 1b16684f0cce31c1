"""Helpers of the fault matrix (test_fault_matrix.py): in-process training runs through
the entry point, checkpoint paths, the "nothing was lost" check, and a pickle payload
whose only effect is to create a marker file.
"""
from __future__ import annotations

import json
import os

from lavis_ib.cli.entry import run_entry
from lavis_ib.runners.checkpointing.files import list_checkpoints, manifest, verify

PROG = "python -m lavis_ib.train"
STEPS = [2, 3, 4, 6]  # save_every 2, val_every 3, max_iters 6


class Payload:
    """Unpickling this creates `marker`: the proof that a reader executed pickled code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def _train(argv):
    from lavis_ib.cli import train

    return train.main(argv)


def train(ctx, capsys, *options, env=None, monkeypatch=None):
    """(exit code, the error lines on stderr) of an in-process training run."""
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()
    argv = ["--cfg-path", ctx["path"], *(["--options", *options] if options else [])]
    code = run_entry(_train, argv, PROG)
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.startswith(f"{PROG}: error:")], err


def ckpt(ctx, step):
    return os.path.join(ctx["out"], "checkpoints", f"step_{step:08d}")


def intact(ctx, steps):
    """Nothing lost: these checkpoints verify, no .tmp-* folder, no payload ran."""
    root = os.path.join(ctx["out"], "checkpoints")
    assert [s for s, _ in list_checkpoints(root)] == steps
    assert all(verify(p) is None for _, p in list_checkpoints(root))
    assert not [n for n in os.listdir(root) if n.startswith(".tmp-")]
    assert not os.path.exists(ctx["marker"])


def reseal(folder):
    """What an attacker does after doctoring a file: rewrite meta.json's checksums."""
    with open(os.path.join(folder, "meta.json")) as f:
        meta = json.load(f)
    meta["files"] = manifest(folder)
    with open(os.path.join(folder, "meta.json"), "w") as f:
        json.dump(meta, f)


def events(ctx, name):
    with open(os.path.join(ctx["out"], "log.jsonl")) as f:
        return [r for r in map(json.loads, f) if r.get("event") == name]
