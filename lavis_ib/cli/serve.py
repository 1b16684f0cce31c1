"""`lavis-ib serve`: the web demo for one model, in a browser.

Loads the model once and hands it to the page (`lavis_ib.web`) on 127.0.0.1 unless `--host`
says otherwise; the port is checked before the model loads. Needs the demo extra
(`pip install 'lavis_ib[demo]'`); docs/web_demo.md describes the page and its options."""
from __future__ import annotations

import argparse
import errno
import ipaddress
import logging
import socket
import sys
from typing import Sequence

from lavis_ib.cli.entry import run_entry
from lavis_ib.common.errors import ConfigError

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lavis-ib serve", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="NAME:TYPE, e.g. instructblip:vicuna7b")
    p.add_argument("--options", nargs="+", default=[],
                   help="model config overrides key=value, e.g. pretrained=/path/to/dir")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; "
                        "0.0.0.0 exposes the demo to the network)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0: any free port)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    return p


def split_model(spec: str) -> tuple[str, str]:
    name, sep, model_type = spec.partition(":")
    if not sep or not name or not model_type:
        raise ConfigError(f"--model '{spec}': write NAME:TYPE, e.g. instructblip:vicuna7b.")
    return name, model_type


def free_port(host: str, port: int) -> int:
    """`port` if it can be bound on `host` now (0: a free one chosen by the system), checked
    before the model loads so a busy port fails in a second, not after minutes of loading."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: use 0 (any free port) or 1-65535.")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except socket.gaierror:
            raise ConfigError(f"--host '{host}' is not an address of this machine.") from None
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"--port {port} is in use on {host}; pick another or use "
                                  f"--port 0 for any free port.") from None
            raise ConfigError(f"--host {host} --port {port} cannot be bound: {exc.strerror}.") from None
        return sock.getsockname()[1]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    name, model_type = split_model(args.model)
    from lavis_ib.common.devices import resolve_device
    from lavis_ib.common.project_files import model_overrides
    from lavis_ib.web.page import build_app, launch, require_gradio

    overrides = model_overrides(args.options)
    device = resolve_device(args.device, key="--device")
    from lavis_ib.models.loading import check_model_config

    check_model_config(name, model_type, overrides, args.device)
    port = free_port(args.host, args.port)  # seconds to check; a model load can take minutes
    require_gradio()
    if not is_loopback(args.host):
        log.warning("--host %s: the demo is reachable from other machines, without any "
                    "login; use the default 127.0.0.1 to keep it on this one.", args.host)

    from lavis_ib.models.loading import load_model_and_preprocess
    from lavis_ib.web.model import DemoModel

    model, vis, _ = load_model_and_preprocess(name, model_type, is_eval=True, device=device,
                                              **overrides)
    app = build_app(DemoModel(model, vis, f"{name}:{model_type}"))
    print(f"lavis-ib serve: {name}:{model_type} on http://{args.host}:{port}/ "
          f"(Ctrl+C stops it)", flush=True)
    launch(app, args.host, port, block=True)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(run_entry(main, None, "lavis-ib serve"))
