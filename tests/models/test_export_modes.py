"""Exported model directories are readable by the people they are written for: every file
`save_pretrained` writes (what `lavis-ib export` calls) gets the mode an ordinary file
gets, 0644 under umask 022; safetensors alone would leave `model.safetensors` at 0600."""
from __future__ import annotations

import os
import stat

import pytest


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _modes(directory):
    return {os.path.relpath(os.path.join(root, name), directory):
            stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode)
            for root, _, files in os.walk(directory) for name in files}


def test_instructblip_export_files_are_0644(tiny_vicuna, tmp_path, umask_022):
    tiny_vicuna.save_pretrained(str(tmp_path / "hf"))
    modes = _modes(tmp_path / "hf")
    assert "model.safetensors" in modes and "config.json" in modes
    assert {name: oct(m) for name, m in modes.items() if m != 0o644} == {}


def test_blip2_export_files_are_0644(tmp_path, umask_022):
    from lavis_ib import load_model

    load_model("blip2_opt", "tiny_opt").save_pretrained(str(tmp_path / "hf"))
    modes = _modes(tmp_path / "hf")
    assert "model.safetensors" in modes
    assert {name: oct(m) for name, m in modes.items() if m != 0o644} == {}


def test_the_mode_follows_the_umask(tiny_vicuna, tmp_path):
    old = os.umask(0o077)
    try:
        tiny_vicuna.save_pretrained(str(tmp_path / "private"))
    finally:
        os.umask(old)
    assert set(_modes(tmp_path / "private").values()) == {0o600}
