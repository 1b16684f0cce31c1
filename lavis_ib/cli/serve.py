"""`lavis-ib serve`: the web demo for one model (or two side by side), in a browser.
Loads each model once and hands it to the page (`lavis_ib.web`) on 127.0.0.1 unless `--host`
says otherwise; the port and the limits are checked before a model loads, and the uploads
are removed when the server stops. Needs the demo extra (`pip install 'lavis_ib[demo]'`);
docs/web_demo.md describes the page and its options."""
from __future__ import annotations

import argparse
import errno
import ipaddress
import logging
import signal
import socket
import sys
import threading
from typing import Sequence

from lavis_ib.cli.entry import run_entry
from lavis_ib.common.errors import ConfigError

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lavis-ib serve", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="NAME:TYPE, e.g. instructblip:vicuna7b")
    p.add_argument("--options", nargs="+", default=[],
                   help="model config overrides key=value, e.g. pretrained=/path/to/dir")
    p.add_argument("--compare", default=None, metavar="NAME:TYPE",
                   help="a second model shown beside the first (same image and prompt, "
                        "answers and rankings side by side), e.g. blip2_t5:pretrain_flant5xl")
    p.add_argument("--compare-options", nargs="+", default=[],
                   help="config overrides key=value of the --compare model")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; "
                        "0.0.0.0 exposes the demo to the network)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0: any free port)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    from lavis_ib.web.limits import ServeLimits   # light: no Gradio

    d = ServeLimits()
    p.add_argument("--max-upload-mb", type=float, default=d.max_upload_mb,
                   help=f"largest upload in MB (10^6 bytes); larger ones are refused "
                        f"(default {d.max_upload_mb:g})")
    p.add_argument("--queue-size", type=int, default=d.queue_size,
                   help=f"requests that may wait for the model; more are told the queue is "
                        f"full (default {d.queue_size})")
    p.add_argument("--max-prompt-chars", type=int, default=d.max_prompt_chars,
                   help=f"longest prompt in characters; longer ones are refused, as are "
                        f"prompts over the model's token limit (default {d.max_prompt_chars})")
    p.add_argument("--upload-max-age", type=int, default=d.upload_max_age_s,
                   help=f"seconds an upload is kept (all are removed when the server stops; "
                        f"default {d.upload_max_age_s})")
    return p


def serve_limits(args: argparse.Namespace):
    """The options' `ServeLimits`; one out of range is one error naming each bad option."""
    from lavis_ib.web.limits import ServeLimits

    limits = ServeLimits(max_upload_mb=args.max_upload_mb, queue_size=args.queue_size,
                         max_prompt_chars=args.max_prompt_chars,
                         upload_max_age_s=args.upload_max_age)
    problems = limits.problems()
    if problems:
        raise ConfigError("; ".join(problems) + ".")
    return limits


def _stop_on_sigterm() -> None:
    """SIGTERM stops the server as Ctrl+C does (Gradio closes it, the upload folder is
    removed) instead of ending the process on the spot."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


def split_model(spec: str, flag: str = "--model") -> tuple[str, str]:
    name, sep, model_type = spec.partition(":")
    if not sep or not name or not model_type:
        raise ConfigError(f"{flag} '{spec}': write NAME:TYPE, e.g. instructblip:vicuna7b.")
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
    models = [(name, model_type, args.options)]
    if args.compare:
        models.append((*split_model(args.compare, "--compare"), args.compare_options))
        if models[1][:2] == models[0][:2] and models[1][2] == models[0][2]:
            raise ConfigError(f"--compare {args.compare} is the --model itself; compare two "
                              f"different models (or the same one with other --compare-options).")
    limits = serve_limits(args)
    from lavis_ib.common.devices import resolve_device
    from lavis_ib.common.project_files import model_overrides
    from lavis_ib.web.page import build_app, launch, require_gradio
    from lavis_ib.web.uploads import upload_folder

    overrides = [model_overrides(options) for _, _, options in models]
    device = resolve_device(args.device, key="--device")
    from lavis_ib.models.loading import check_model_config

    for (model_name, kind, _), changes in zip(models, overrides):
        check_model_config(model_name, kind, changes, args.device)
    port = free_port(args.host, args.port)  # seconds to check; a model load can take minutes
    require_gradio()
    if not is_loopback(args.host):
        log.warning("--host %s: the demo is reachable from other machines, without any "
                    "login; use the default 127.0.0.1 to keep it on this one.", args.host)

    from lavis_ib.models.loading import load_model_and_preprocess
    from lavis_ib.web.model import DemoModel

    demos = []
    for (model_name, kind, _), changes in zip(models, overrides):   # each loaded once
        model, vis, _ = load_model_and_preprocess(model_name, kind, is_eval=True, device=device,
                                                  **changes)
        demos.append(DemoModel(model, vis, f"{model_name}:{kind}",
                               max_prompt_chars=limits.max_prompt_chars))
    _stop_on_sigterm()
    labels = " and ".join(d.label for d in demos)
    with upload_folder():
        app = build_app(demos[0] if len(demos) == 1 else demos, limits)
        print(f"lavis-ib serve: {labels} on http://{args.host}:{port}/ "
              f"(Ctrl+C stops it)", flush=True)
        launch(app, args.host, port, block=True, limits=limits)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(run_entry(main, None, "lavis-ib serve"))
