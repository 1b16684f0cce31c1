"""Third-party noise stays out of the console, everything else gets through, and
LAVIS_IB_LOG_LEVEL=DEBUG keeps it all (lavis_ib.common.quiet)."""
import logging
import subprocess
import sys

import pytest

from lavis_ib.common import quiet

SPEED = "PTBTokenizer tokenized 59 tokens at 1527.29 tokens per second."
CHILD = ("import sys; sys.stderr.write('" + SPEED + "\\nreal problem: java said this\\n'); "
         "sys.stderr.flush()")


def _child_writes_to_stderr():
    subprocess.run([sys.executable, "-c", CHILD], check=True)


@pytest.mark.integration
def test_the_tokenizer_speed_line_is_dropped_and_other_lines_kept(capfd, monkeypatch):
    monkeypatch.delenv(quiet.LOG_LEVEL_ENV, raising=False)
    with quiet.child_stderr_without(quiet.PTB_SPEED_LINE):
        _child_writes_to_stderr()
    err = capfd.readouterr().err
    assert "PTBTokenizer" not in err and "real problem: java said this" in err
    monkeypatch.setenv(quiet.LOG_LEVEL_ENV, "debug")
    with quiet.child_stderr_without(quiet.PTB_SPEED_LINE):
        _child_writes_to_stderr()
    assert SPEED in capfd.readouterr().err


def test_caption_metrics_print_no_tokenizer_line(capfd, monkeypatch):
    """The real Java tokenizer of the COCO caption metrics (needs java)."""
    import shutil

    if shutil.which("java") is None:
        pytest.skip("java is not installed")
    from lavis_ib.tasks.metrics.caption import caption_scores

    monkeypatch.delenv(quiet.LOG_LEVEL_ENV, raising=False)
    scores = caption_scores({1: "a dog runs"}, {1: ["a dog runs", "a dog is running"]},
                            meteor=False)
    assert scores["bleu4"] >= 0
    assert "PTBTokenizer" not in capfd.readouterr().err


def test_noisy_loggers_are_raised_to_error_and_ours_are_not(monkeypatch, caplog):
    monkeypatch.delenv(quiet.LOG_LEVEL_ENV, raising=False)
    for name in quiet.NOISY_LOGGERS:
        monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)
    quiet.quiet_third_party()
    with caplog.at_level(logging.INFO):
        logging.getLogger("torch.utils._pytree").warning("<enum 'X'> is an Enum subclass")
        logging.getLogger("matplotlib.font_manager").warning("building the font cache")
        logging.getLogger("lavis_ib.runners.eval_loop").warning("a real problem of ours")
        logging.getLogger("transformers.generation").warning("a third-party warning we keep")
    assert "Enum subclass" not in caplog.text and "font cache" not in caplog.text
    assert "a real problem of ours" in caplog.text and "we keep" in caplog.text


def test_debug_level_keeps_every_third_party_line(monkeypatch):
    monkeypatch.setenv(quiet.LOG_LEVEL_ENV, "DEBUG")
    logger = logging.getLogger("torch.utils._pytree")
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    quiet.quiet_third_party()
    assert logger.level == logging.NOTSET and quiet.log_level() == logging.DEBUG
    monkeypatch.setenv(quiet.LOG_LEVEL_ENV, "not-a-level")
    assert quiet.log_level() == logging.INFO


def test_the_web_demos_pandas_warning_from_gradio_is_dropped_and_others_kept(monkeypatch):
    import warnings

    from lavis_ib.common.quiet import quiet_web_demo

    monkeypatch.delenv("LAVIS_IB_LOG_LEVEL", raising=False)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_web_demo()
        message = "The copy keyword is deprecated and will be removed in a future version."
        warnings.warn_explicit(message, FutureWarning, "queueing.py", 178, module="gradio.queueing")
        warnings.warn_explicit(message, FutureWarning, "mine.py", 1, module="my_code")
        warnings.warn_explicit("other", FutureWarning, "queueing.py", 9, module="gradio.queueing")
    assert [(str(w.message)[:5], w.filename) for w in seen] == [("The c", "mine.py"),
                                                                ("other", "queueing.py")]


class _Kept(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_the_pytree_enum_filter_is_scoped_to_its_block(monkeypatch):
    """Inside the block only torch's Enum records are dropped; after it nothing is."""
    monkeypatch.delenv(quiet.LOG_LEVEL_ENV, raising=False)
    pytree = logging.getLogger(quiet.NOISY_LOGGERS[0])
    monkeypatch.setattr(pytree, "level", logging.NOTSET)
    kept = _Kept()
    pytree.addHandler(kept)
    enum = "<enum 'KernelPreference'> is an Enum subclass and is now natively supported"
    try:
        with quiet.quiet_torchao_import():
            pytree.warning(enum)
            pytree.warning("another pytree warning")
        pytree.warning(enum)
    finally:
        pytree.removeHandler(kept)
    assert kept.messages == ["another pytree warning", enum]
    assert pytree.filters == []


@pytest.mark.integration
def test_a_plain_load_model_and_preprocess_prints_no_pytree_warnings():
    """A fresh interpreter (torchao is imported once per process, by transformers, while
    the model is built): nothing on stderr mentions torchao's Enums."""
    import os

    code = ("from lavis_ib import load_model_and_preprocess; "
            "load_model_and_preprocess('instructblip', 'tiny_vicuna')")
    env = {k: v for k, v in os.environ.items() if k != quiet.LOG_LEVEL_ENV}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env={**env, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert quiet.PYTREE_ENUM_WARNING not in proc.stderr, proc.stderr[-2000:]
    assert "_pytree" not in proc.stderr
