"""A private folder for one server's uploads, removed with everything in it when the
server stops: Gradio keeps uploads in its temporary folder (`GRADIO_TEMP_DIR`) and, left
alone, leaves them there after the server is gone."""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from typing import Iterator

log = logging.getLogger(__name__)
ENV = "GRADIO_TEMP_DIR"   # the folder Gradio stores uploads in (read at build, launch and use)


@contextlib.contextmanager
def upload_folder() -> Iterator[str]:
    """A fresh folder made Gradio's upload folder while the block runs (inside the one a
    user's `GRADIO_TEMP_DIR` names, else the system's temporary folder); on the way out the
    previous setting is back and the folder is deleted, its file count logged. Build and
    launch the app inside the block: Gradio reads the setting then."""
    folder = tempfile.mkdtemp(prefix="lavis-ib-serve-", dir=os.environ.get(ENV) or None)
    previous = os.environ.get(ENV)
    os.environ[ENV] = folder
    try:
        yield folder
    finally:
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous
        files = sum(len(names) for _, _, names in os.walk(folder))
        shutil.rmtree(folder, ignore_errors=True)
        if os.path.exists(folder):
            log.warning("the upload folder %s could not be removed entirely; delete it by hand",
                        folder)
        else:
            log.info("removed the upload folder %s (%d file(s))", folder, files)
