"""`run.loggers`: log.jsonl always, TensorBoard by default, wandb on request (offline
without an API key or a server), checked in pre-flight. No test here reaches a network:
WANDB_MODE is offline, or wandb.init is replaced before it could connect."""
import glob
import json
import os
import struct
import time

import pytest

from runner_helpers import losses, write_project
from lavis_ib.common.config import Config
from lavis_ib.common.errors import ConfigError, LavisIbError
from lavis_ib.common.schema import validate_run
from lavis_ib.runners import run_log
from lavis_ib.runners.run_log import RunLogger


@pytest.fixture(autouse=True)
def _wandb_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))


def wandb_records(run_dir, timeout_s=30.0):
    """The protobuf records of the one offline wandb run under `run_dir`, once its exit
    record is there (wandb's service process may still be writing when `finish()` has
    returned)."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = _read_wandb_file(run_dir)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or \
                time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def _read_wandb_file(run_dir):
    """The records of the .wandb file (wandb's LevelDB-style log: 32 KiB blocks of
    [crc32, length, type] + data), parsed with wandb's own Record message, independently
    of lavis_ib; a record still being written is left out."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = glob.glob(os.path.join(run_dir, "wandb", "offline-run-*", "run-*.wandb"))
    data, pos, chunk, out = open(path, "rb").read(), 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:          # a block's tail too short for a header
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if pos + 7 + length > len(data):     # the writer is not done with this one
            break
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):                   # a full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(chunk)
            out.append(record)
            chunk = b""
    return out


def wandb_history(records):
    """[{key: value}] of the logged rows, with their `_step`."""
    rows = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            rows.append({"/".join(i.nested_key) or i.key: json.loads(i.value_json)
                         for i in r.history.item})
    return rows


def test_loggers_default_to_tensorboard_and_are_checked_before_running(tmp_path, toys):
    from lavis_ib.cli.preflight import checked_config

    with pytest.raises(ConfigError, match="run.loggers: unknown logger 'mlflow'"):
        checked_config(write_project(tmp_path, loggers=["tensorboard", "mlflow"]))
    assert list(validate_run({}).loggers) == ["tensorboard"]
    assert list(validate_run({"loggers": "wandb"}).loggers) == ["wandb"]
    with pytest.raises(ConfigError, match="unknown logger 'tensorbord'. Did you mean 'tensorboard'"):
        validate_run({"loggers": ["tensorbord"]})


def test_wandb_without_the_package_is_one_clear_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'lavis_ib\[wandb\]'"):
        validate_run({"loggers": ["tensorboard", "wandb"]})


def test_no_loggers_writes_log_jsonl_only(tmp_path):
    log = RunLogger(str(tmp_path), 2, loggers=[])
    log.step(1, 1.5, 0.1, 0.3, samples=4, tokens=10, log=True)
    log.close()
    assert sorted(os.listdir(tmp_path)) == ["log.jsonl"]
    with pytest.raises(LavisIbError, match="unknown"):
        RunLogger(str(tmp_path), 2, loggers=["mlflow"])


@pytest.mark.integration
def test_wandb_logs_the_scalars_of_log_jsonl_on_a_tiny_training_run(tmp_path, toys):
    from lavis_ib.cli.session import build
    from lavis_ib.runners.strategies import setup_distributed

    path = write_project(tmp_path, loggers=["tensorboard", "wandb"])
    cfg = Config(path)
    _, _, _, runner = build(cfg, setup_distributed(cfg.run_cfg))
    runner.train()
    out = cfg.run_cfg.output_dir
    assert os.path.isdir(os.path.join(out, "tb"))
    events = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    (started,) = [e for e in events if e.get("event") == "wandb"]
    assert started["mode"] == "offline" and started["dir"].startswith(os.path.join(out, "wandb"))
    records = wandb_records(out)
    rows = wandb_history(records)
    logged = {row["_step"]: row["train/loss"] for row in rows if "train/loss" in row}
    assert logged == pytest.approx(losses(out)) and len(logged) == 6
    vals = [e for e in events if e["type"] == "val"]
    val_rows = {row["_step"]: row for row in rows if "val/select_score" in row}
    assert {v["step"]: v["score"] for v in vals} == \
        pytest.approx({s: r["val/select_score"] for s, r in val_rows.items()})
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["run"]["max_iters"] == 6 and run.run_group == "run"
    (exit_record,) = [r.exit for r in records if r.WhichOneof("record_type") == "exit"]
    assert exit_record.exit_code == 0


def test_a_failing_run_finishes_its_wandb_run_as_failed(tmp_path):
    with pytest.raises(RuntimeError):
        log = RunLogger(str(tmp_path), 3, loggers=["wandb"], config={"run": {"seed": 1}})
        try:
            log.step(1, 2.0, 0.1, 0.5, samples=2, tokens=8, log=True)
            raise RuntimeError("the step failed")
        finally:
            log.close()
    records = wandb_records(str(tmp_path))
    rows = wandb_history(records)
    assert rows and rows[0]["train/loss"] == 2.0, [r.WhichOneof("record_type") for r in records]
    (exit_record,) = [r.exit for r in records if r.WhichOneof("record_type") == "exit"]
    assert exit_record.exit_code == 1


def test_no_api_key_means_offline_and_no_server_falls_back_offline(tmp_path, monkeypatch, caplog):
    import wandb

    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("HOME", str(tmp_path))   # no ~/.netrc login
    log = RunLogger(str(tmp_path / "a"), 1, loggers=["wandb"])
    log.close()
    events = [json.loads(line) for line in open(tmp_path / "a" / "log.jsonl")]
    assert [e["mode"] for e in events if e.get("event") == "wandb"] == ["offline"]

    real_init, modes = wandb.init, []

    def init(mode, **kwargs):   # a server that does not answer, without any network use
        modes.append(mode)
        if mode == "online":
            raise wandb.errors.CommError("timed out")
        return real_init(mode=mode, **kwargs)

    monkeypatch.setattr(wandb, "init", init)
    monkeypatch.setattr(run_log, "_has_wandb_login", lambda: True)
    log = RunLogger(str(tmp_path / "b"), 1, loggers=["wandb"])
    log.close()
    assert modes == ["online", "offline"] and "logging offline" in caplog.text
    events = [json.loads(line) for line in open(tmp_path / "b" / "log.jsonl")]
    assert [e["event"] for e in events] == ["wandb_offline", "wandb"]
    monkeypatch.setenv("WANDB_MODE", "online")   # the user's choice is kept: no fallback
    with pytest.raises(LavisIbError, match="WANDB_MODE=offline"):
        RunLogger(str(tmp_path / "c"), 1, loggers=["wandb"])
