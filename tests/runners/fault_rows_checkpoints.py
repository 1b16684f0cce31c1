"""Fault-matrix rows of the checkpoint area (collected by test_fault_matrix.py): a damaged
or NaN `best/`, NaN weights in every checkpoint, doctored `meta.json` file lists, plugins
named only by a run folder, a full disk outside the shard write.

The NaN weights, the doctored lists and the damaged shards are written here with torch's
own DCP reader and writer, then re-sealed as an attacker would; the reference numbers
come from the uninterrupted run (its losses, its step-6 validation metrics and weights).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import sys
import warnings

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter

from fault_helpers import STEPS, ckpt, events, intact, reseal, train
from runner_helpers import losses
from lavis_ib.cli.entry import run_entry
from lavis_ib.runners.checkpointing.files import verify

EXPORT = "lavis-ib export"
EVALUATE = "python -m lavis_ib.evaluate"


# -- helpers ---------------------------------------------------------------------------
def _best(ctx):
    return os.path.join(ctx["out"], "checkpoints", "best")


def _read_model(folder):
    """A checkpoint's trainable tensors, read with torch's own DCP reader (our files)."""
    model = os.path.join(folder, "model")
    index = FileSystemReader(model).read_metadata().state_dict_metadata
    state = {k: torch.empty(tuple(v.size), dtype=v.properties.dtype) for k, v in index.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load(state, storage_reader=FileSystemReader(model), no_dist=True)
    return state


def _poison(folder):
    """NaN in one trainable tensor of a checkpoint's model/, re-sealed (meta.json's
    checksums rewritten), as the probe's doctored checkpoint was."""
    state = _read_model(folder)
    state[sorted(state)[0]].fill_(float("nan"))
    model = os.path.join(folder, "model")
    shutil.rmtree(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(state, storage_writer=FileSystemWriter(model), no_dist=True)
    reseal(folder)


def _truncate_shard(folder):
    shard = os.path.join(folder, "model", "__0_0.distcp")
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) // 2)
    return shard


def _cli(capsys, main, argv, prog):
    """(exit code, the 'prog: error:' lines, stdout, stderr) of an in-process command."""
    capsys.readouterr()
    code = run_entry(main, argv, prog)
    out, err = capsys.readouterr()
    return code, [l for l in err.splitlines() if l.startswith(f"{prog}: error:")], out, err


def _export(ctx, capsys, *extra):
    from lavis_ib.cli import export

    hf = os.path.join(ctx["tmp"], "hf")
    return _cli(capsys, export.main, [ctx["out"], hf, *extra], EXPORT)


def _evaluate(ctx, capsys, name="again"):
    from lavis_ib.cli import evaluate

    out = os.path.join(ctx["tmp"], name)
    argv = ["--cfg-path", ctx["path"], "--checkpoint", ctx["out"],
            "--options", "run.evaluate_only=true", f"run.output_dir={out}"]
    return _cli(capsys, evaluate.main, argv, EVALUATE)


def _metrics(folder, name):
    with open(os.path.join(folder, name, "metrics.json")) as f:
        return json.load(f)


def _step6_metrics(ctx):
    """The run's own validation of step 6 (written while it trained)."""
    return {n: _metrics(os.path.join(ctx["out"], "eval", "step_00000006"), n)
            for n in ("toy_a_val", "toy_b_val")}


# -- A7c / A7d: a damaged best/ ---------------------------------------------------------
def row_damaged_best_falls_back(ctx, capsys, monkeypatch):
    """best/ with a truncated shard: evaluate --checkpoint RUN and export RUN OUT use the
    newest checkpoint that verifies (step 6), with a warning naming best/ and the file."""
    shard = _truncate_shard(_best(ctx))
    code, lines, out, err = _evaluate(ctx, capsys)
    assert code == 0 and not lines
    assert f"not using {_best(ctx)}" in err and shard in err and ckpt(ctx, 6) in err
    assert f"with {ckpt(ctx, 6)}" in out
    again = os.path.join(ctx["tmp"], "again", "eval")
    assert {n: _metrics(again, n) for n in ("toy_a_val", "toy_b_val")} == _step6_metrics(ctx)
    code, lines, out, err = _export(ctx, capsys, "--plugins", "runner_toys")
    assert code == 0 and not lines and f"not using {_best(ctx)}" in err
    assert f"exported {ckpt(ctx, 6)}" in out
    exported = torch.load(os.path.join(ctx["tmp"], "hf", "toy_model.pt"))
    assert all(torch.equal(exported[k], v) for k, v in _read_model(ckpt(ctx, 6)).items())
    intact(ctx, STEPS)


# -- F11 / F12: NaN weights ------------------------------------------------------------
def row_nan_best_falls_back(ctx, capsys, monkeypatch):
    """NaN weights in a re-sealed best/ (it verifies): export falls back to step 6."""
    _poison(_best(ctx))
    assert verify(_best(ctx)) is None   # re-sealed: only the values give it away
    code, lines, out, err = _export(ctx, capsys, "--plugins", "runner_toys")
    assert code == 0 and not lines
    assert f"not using {_best(ctx)}" in err and "non-finite weights" in err, (out, err)
    assert f"exported {ckpt(ctx, 6)}" in out
    exported = torch.load(os.path.join(ctx["tmp"], "hf", "toy_model.pt"))
    assert all(torch.isfinite(v).all() for v in exported.values())
    assert all(torch.equal(exported[k], v) for k, v in _read_model(ckpt(ctx, 6)).items())


def row_nan_weights_refused(ctx, capsys, monkeypatch):
    """NaN weights in best/ and the newest step (both re-sealed): export, evaluate and
    resume each stop with one line naming the checkpoint; nothing is exported or scored."""
    _poison(_best(ctx))
    _poison(ckpt(ctx, 6))
    code, lines, _, err = _export(ctx, capsys, "--plugins", "runner_toys")
    assert code == 2 and len(lines) == 1, err[-2000:]
    assert f"checkpoint '{ckpt(ctx, 6)}' holds non-finite weights" in lines[0]
    assert not os.path.exists(os.path.join(ctx["tmp"], "hf"))
    code, lines, _, err = _evaluate(ctx, capsys)
    assert code == 2 and len(lines) == 1, err[-2000:]
    assert f"checkpoint '{ckpt(ctx, 6)}' holds non-finite weights" in lines[0]
    scored = os.path.join(ctx["tmp"], "again", "eval", "toy_a_val", "metrics.json")
    assert not os.path.exists(scored)
    assert "Traceback" not in err
    code, lines, err = train(ctx, capsys)   # resume: auto reads the newest checkpoint
    assert code == 2 and len(lines) == 1
    assert f"checkpoint '{ckpt(ctx, 6)}' holds non-finite weights" in lines[0]


# -- A10a / A10b: meta.json file lists -------------------------------------------------
def _edit_meta(folder, edit):
    path = os.path.join(folder, "meta.json")
    with open(path) as f:
        meta = json.load(f)
    edit(meta["files"])
    with open(path, "w") as f:
        json.dump(meta, f)


def row_meta_entry_not_an_object(ctx, capsys, monkeypatch):
    """`"files": {"trainer.json": 1}`: resume auto skips the checkpoint as damaged (and
    continues from step 4 to the reference losses); given explicitly, one line."""
    _edit_meta(ckpt(ctx, 6), lambda files: files.update({"trainer.json": 1}))
    code, lines, _ = train(ctx, capsys, f"run.resume={ckpt(ctx, 6)}")
    assert code == 2 and len(lines) == 1 and "is damaged" in lines[0]
    assert "entry 'trainer.json' is int 1, not an object" in lines[0]
    code, lines, err = train(ctx, capsys)
    assert code == 0 and "skipping checkpoint" in err and "not an object" in err
    assert [e["step"] for e in events(ctx, "resume")] == [4]
    got = losses(ctx["out"])
    assert {s: got[s] for s in (5, 6)} == {s: ctx["ref"][s] for s in (5, 6)}
    intact(ctx, STEPS)


def row_meta_lists_files_outside(ctx, capsys, monkeypatch):
    """meta.json naming `../../../outside.bin`, an absolute path, or a symlink leading out
    (each with the outside file's true size and sha256): damaged, one line, and the
    outside file is never opened or hashed."""
    from lavis_ib.runners.checkpointing import files as ckpt_files

    outside = os.path.join(ctx["tmp"], "outside.bin")
    with open(outside, "wb") as f:
        f.write(b"not a checkpoint file\n" * 10)
    entry = {"size": os.path.getsize(outside), "sha256": ckpt_files.sha256(outside)}
    touched = []
    real_sha, real_size = ckpt_files.sha256, os.path.getsize
    monkeypatch.setattr(ckpt_files, "sha256", lambda p: touched.append(p) or real_sha(p))
    monkeypatch.setattr(os.path, "getsize", lambda p: touched.append(p) or real_size(p))
    folder = ckpt(ctx, 6)
    os.symlink(outside, os.path.join(folder, "model", "link.bin"))
    rel = os.path.relpath(outside, folder)
    assert rel.startswith("..")
    for name, why in ((rel, "climbs out"), (outside, "not a relative path"),
                      ("model/link.bin", "outside the checkpoint folder (a symlink)")):
        _edit_meta(folder, lambda files: files.update({name: entry}))
        code, lines, _ = train(ctx, capsys, f"run.resume={folder}")
        assert code == 2 and len(lines) == 1, lines
        assert f"lists '{name}'" in lines[0] and why in lines[0]
        _edit_meta(folder, lambda files: files.pop(name))
    assert not [p for p in touched if os.path.realpath(p) == outside]
    assert verify(folder) is None   # the undoctored list still verifies


# -- A11: a run folder's plugins --------------------------------------------------------
def row_run_folder_plugins_not_imported(ctx, capsys, monkeypatch):
    """The run's config.yaml lists a module whose import creates a marker: export refuses
    with one line naming it, evaluate --checkpoint RUN and resume never import it; the
    command line's --plugins allows it."""
    module = f"marker_plugin_{os.path.basename(str(ctx['tmp']))}".replace("-", "_")
    plugins = os.path.join(ctx["tmp"], "plugins")
    os.makedirs(plugins)
    with open(os.path.join(plugins, f"{module}.py"), "w") as f:
        f.write(f"open({ctx['marker']!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(plugins)
    config = os.path.join(ctx["out"], "config.yaml")
    text = open(config).read()
    assert "- runner_toys\n" in text
    with open(config, "w") as f:
        f.write(text.replace("- runner_toys\n", f"- runner_toys\n- {module}\n", 1))
    try:
        code, lines, _, _ = _export(ctx, capsys)
        assert code == 2 and len(lines) == 1 and f"--plugins runner_toys {module}" in lines[0]
        assert "a run folder is data" in lines[0] and config in lines[0]
        assert _evaluate(ctx, capsys)[0] == 0
        assert train(ctx, capsys)[0] == 0   # resume: auto of the finished run
        assert not os.path.exists(ctx["marker"]) and module not in sys.modules
        code, lines, _, _ = _export(ctx, capsys, "--plugins", "runner_toys", module)
        assert code == 0 and not lines and os.path.exists(ctx["marker"])
    finally:
        sys.modules.pop(module, None)


# -- A15: a full disk outside the shard write --------------------------------------------
def _enospc(path):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def row_disk_full_trainer_state(ctx, capsys, monkeypatch):
    """ENOSPC writing the step-4 `trainer.json` (after the shards): the disk_full line,
    no .tmp-* left; resume: auto then completes with the reference losses."""
    from lavis_ib.common import durable_files

    def full_open(path, *args, **kwargs):
        if path.startswith(os.path.join(ctx["out"], "checkpoints", ".tmp-step_00000004",
                                        "trainer.json")):
            raise _enospc(path)
        return open(path, *args, **kwargs)

    shutil.rmtree(ctx["out"])
    monkeypatch.setattr(durable_files, "open", full_open, raising=False)
    code, lines, _ = train(ctx, capsys)
    root = os.path.join(ctx["out"], "checkpoints")
    assert code == 2 and len(lines) == 1, lines
    assert f"could not write the step-4 checkpoint in {root}" in lines[0]
    assert "No space left on device" in lines[0] and "earlier checkpoints are intact" in lines[0]
    intact(ctx, [2, 3])
    monkeypatch.delattr(durable_files, "open")
    assert train(ctx, capsys)[0] == 0
    assert losses(ctx["out"]) == ctx["ref"]


def row_disk_full_best_copy(ctx, capsys, monkeypatch):
    """ENOSPC while copying step 3's weights into best/: one line naming best/, no .tmp-*;
    the step-3 checkpoint stays unvalidated, so resume: auto validates it again, writes
    best/ and completes with the reference losses."""
    real = shutil.copyfile

    def full_copy(src, dst, *args, **kwargs):
        if os.sep + ".tmp-best" + os.sep in dst:
            open(dst, "wb").close()   # the file was created, then the disk was full
            raise _enospc(dst)
        return real(src, dst, *args, **kwargs)

    shutil.rmtree(ctx["out"])
    monkeypatch.setattr(shutil, "copyfile", full_copy)
    code, lines, _ = train(ctx, capsys)
    best = _best(ctx)
    assert code == 2 and len(lines) == 1, lines
    assert f"could not write the best checkpoint (step 3, {best})" in lines[0]
    assert "No space left on device" in lines[0]
    intact(ctx, [2, 3])
    assert not os.path.exists(best)
    monkeypatch.setattr(shutil, "copyfile", real)
    assert train(ctx, capsys)[0] == 0
    assert losses(ctx["out"]) == ctx["ref"]
    assert [e["step"] for e in events(ctx, "best")][:1] == [3]
    assert verify(best) is None
    intact(ctx, STEPS)
