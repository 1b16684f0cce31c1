"""`lavis-ib serve`: the real command serves the page on loopback; bad arguments fail in
pre-flight with one line, before a model is loaded."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from lavis_ib.cli import dispatch as cli
from lavis_ib.cli.serve import is_loopback
from tests.web.test_serve_limits import _upload


@pytest.mark.timeout(180)
@pytest.mark.integration
def test_serve_command_serves_the_page_on_loopback(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "GRADIO_TEMP_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "lavis_ib.cli.dispatch", "serve", "--model",
                             "instructblip:tiny_vicuna", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        url, seen = None, []
        deadline = time.monotonic() + 150
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            seen.append(line)
            match = re.search(r"on (http://127\.0\.0\.1:\d+/)", line)
            url = match.group(1) if match else None
        assert url, "".join(seen)
        page = None
        while page is None and time.monotonic() < deadline:
            try:
                page = urllib.request.urlopen(url, timeout=10).read().decode()
            except OSError:
                time.sleep(0.5)
        assert page and "lavis_ib: instructblip:tiny_vicuna" in page
        status, body = _upload(url, b"\x89PNG" + b"0" * 100)
        assert status == 200, body
        assert os.path.isfile(json.loads(body)[0])
    finally:
        proc.send_signal(signal.SIGTERM)    # stops it as Ctrl+C does
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0     # closed, not killed
    # the server's upload folder (inside GRADIO_TEMP_DIR) went with it
    assert not [p for p in os.listdir(tmp_path) if p.startswith("lavis-ib-serve-")]


@pytest.fixture
def no_model_load(monkeypatch):
    """Pre-flight failures must come before the (slow) model load."""
    from lavis_ib.models import loading

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(loading, "load_model_and_preprocess", refuse)


def test_busy_port_fails_before_the_model_loads(no_model_load, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = cli.main(["serve", "--model", "instructblip:tiny_vicuna", "--port", str(port)])
    assert code == 2
    assert f"--port {port} is in use on 127.0.0.1" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--model", "instructblip"], "write NAME:TYPE"),
    (["--model", "instructblip:tiny_vicuna", "--device", "tpu"], "'tpu' is not one of"),
    (["--model", "instructblip:tiny_vicuna", "--port", "70000"], "--port 70000: use 0"),
    (["--model", "instructblip:tiny_vicuna", "--options", "pretrained"], "--options"),
    (["--model", "instructblip:tiny_vicuna", "--options", "max_txt_len=0"],
     "model.max_txt_len must be an integer >= 1"),
    (["--model", "instructblip:tiny_vicuna", "--options", "llm_quantization=nf4"],
     "'nf4' needs bitsandbytes on a CUDA GPU"),
    (["--model", "instructblip:tiny_vicuna", "--options", "llm_lora={r: 0}"],
     "r must be an integer >= 1"),
])
def test_bad_arguments_are_one_line(no_model_load, capsys, args, message):
    assert cli.main(["serve", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lavis-ib serve: error:") and message in err and "Traceback" not in err


def test_missing_gradio_names_the_extra(no_model_load, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    assert cli.main(["serve", "--model", "instructblip:tiny_vicuna", "--port", "0"]) == 2
    assert "pip install 'lavis_ib[demo]'" in capsys.readouterr().err


def test_loopback_hosts():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")


def test_page_sends_nothing_by_construction(demo, monkeypatch):
    """Analytics off (environment and Blocks), no 'share' buttons (they post to Hugging Face),
    a theme of system fonts only (Gradio's own fetches web fonts)."""
    monkeypatch.delenv("GRADIO_ANALYTICS_ENABLED", raising=False)
    from lavis_ib.web.page import build_app, local_theme, require_gradio

    gr = require_gradio()
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    app = build_app(demo)
    assert app.analytics_enabled is False
    with_share = [type(b).__name__ for b in app.blocks.values()
                  if "share" in (getattr(b, "buttons", None) or [])]
    assert with_share == []
    assert local_theme(gr)._stylesheets == []  # Gradio's own would list fonts.googleapis.com
    css = local_theme(gr)._get_theme_css()
    assert "@import" not in css and not re.search(r"url\(\s*['\"]?(https?:)?//", css)
