"""Keeping third-party chatter out of the console, and only that: lines that say nothing
about the run (torch's warnings about torchao's Enums, matplotlib's font cache, the Java PTB
tokenizer's speed) would drown our own log lines, so they are dropped; our warnings and any
other third-party warning still print, and `LAVIS_IB_LOG_LEVEL=DEBUG` keeps everything.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from typing import Iterator

#: DEBUG keeps everything (no logger raised, nothing filtered) and sets our loggers to
#: DEBUG; WARNING prints only warnings and errors (docs/projects.md, "Console output")
LOG_LEVEL_ENV = "LAVIS_IB_LOG_LEVEL"
# third-party loggers whose INFO/WARNING lines are noise in a training console
NOISY_LOGGERS = (
    "torch.utils._pytree",        # "<enum ...> is an Enum subclass ...": torchao's import
    "matplotlib.font_manager",    # "Matplotlib is building the font cache"
)
#: the words of torch's pytree warning for each Enum torchao registers (on its import)
PYTREE_ENUM_WARNING = "is an Enum subclass"
# the Java PTB tokenizer's speed report, printed on every tokenisation of the COCO caption
# metrics: filtered out of its stderr (`child_stderr_without`)
PTB_SPEED_LINE = re.compile(r"^PTBTokenizer tokenized \d+ tokens at [\d.]+ tokens per second\.\s*$")


def log_level(default: int = logging.INFO) -> int:
    """The level asked for in $LAVIS_IB_LOG_LEVEL (a name such as DEBUG), else `default`."""
    name = os.environ.get(LOG_LEVEL_ENV, "").strip().upper()
    level = logging.getLevelName(name) if name else default
    return level if isinstance(level, int) else default


def verbose() -> bool:
    """True when $LAVIS_IB_LOG_LEVEL asks for DEBUG: every third-party line is kept."""
    return log_level() <= logging.DEBUG


#: a pandas 3 deprecation gradio's own queue code triggers on every request of the web demo
GRADIO_PANDAS_WARNING = r"The copy keyword is deprecated"


def quiet_web_demo() -> None:
    """Drop the deprecation warning gradio's queue raises through pandas on each request
    (gradio's code, not ours or the user's: nothing to act on); unless `verbose()`."""
    if verbose():
        return
    import warnings

    warnings.filterwarnings("ignore", message=GRADIO_PANDAS_WARNING, module=r"gradio\.")


def quiet_third_party() -> None:
    """Raise the noisy third-party loggers to ERROR (unless `verbose()`). The command-line
    entry points call it for the whole process; a library call (`load_model_and_preprocess`
    in a user's script) changes no logger and uses `quiet_torchao_import` instead."""
    if verbose():
        return
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


class _DropMessages(logging.Filter):
    """Drops the records whose message contains `text`."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


@contextlib.contextmanager
def quiet_torchao_import() -> Iterator[None]:
    """Within the block, torch's pytree logger drops its "<enum ...> is an Enum subclass"
    records (torchao's Enums, registered when transformers imports torchao on building a
    model: nothing a user can act on); every other record passes. The filter is removed
    when the block ends; `verbose()` keeps everything."""
    if verbose():
        yield
        return
    pytree = logging.getLogger(NOISY_LOGGERS[0])
    drop = _DropMessages(PYTREE_ENUM_WARNING)
    pytree.addFilter(drop)
    try:
        yield
    finally:
        pytree.removeFilter(drop)


@contextlib.contextmanager
def child_stderr_without(pattern: re.Pattern[str]) -> Iterator[None]:
    """Drop the lines matching `pattern` from what child processes started inside the
    block write to stderr (they write to file descriptor 2 directly, out of reach of
    Python's logging); every other line is written back to stderr when the block ends."""
    if verbose():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable descriptor 2: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace")
            kept = [line for line in text.splitlines(keepends=True) if not pattern.match(line)]
            if kept:
                os.write(2, "".join(kept).encode())
