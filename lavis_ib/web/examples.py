"""Example prompts per task family for the web demo, written the way the instruction
templates and evaluation prompts of this package write them, and an example image that an
installed package ships in the public domain (matplotlib's photograph of Grace Hopper), so
a first visitor has something to click before uploading anything."""
from __future__ import annotations

import os
import shutil
import tempfile

from lavis_ib.common.errors import DataError

#: family -> (prompt, candidates for the ranking tab or "")
EXAMPLES: dict[str, list[tuple[str, str]]] = {
    "Captioning": [("A short image caption:", ""),
                   ("Briefly describe the content of the image.", "")],
    "Visual question answering": [("Question: What is the person wearing? Short answer:",
                                   "a uniform, a dress, a coat"),
                                  ("Question: Is this photo in colour? Short answer:", "yes, no")],
    "Detailed description and reasoning": [
        ("Describe the image in detail.", ""),
        ("What might this person's job be? Explain why.", "")],
    "Classification by ranking": [("What is in the picture?",
                                   "a woman, a man, a dog, a building")],
    "Question generation": [("Given the image, generate a question whose answer is: a "
                             "uniform. Question:", "")],
    "Video question answering": [("Question: What is happening in the video? Short answer:",
                                  "")],
}

EXAMPLE_IMAGE = "grace_hopper.jpg"
EXAMPLE_IMAGE_CREDIT = ("Grace Hopper, U.S. Navy photograph (public domain), as shipped in "
                        "matplotlib's sample data")


def example_rows() -> list[list[str]]:
    """[family, prompt, candidates] rows for the page's example table."""
    return [[family, prompt, cands] for family, items in EXAMPLES.items()
            for prompt, cands in items]


def example_image_source() -> str:
    """The path of matplotlib's `sample_data/grace_hopper.jpg`; its absence is one error."""
    try:
        from matplotlib import cbook

        path = str(cbook.get_sample_data(EXAMPLE_IMAGE, asfileobj=False))
    except (ImportError, OSError, ValueError) as exc:
        raise DataError(f"the example image ({EXAMPLE_IMAGE} of matplotlib's sample data) is "
                        f"not available ({exc}); upload an image instead.") from None
    if not os.path.isfile(path):
        raise DataError(f"the example image {path} is missing; upload an image instead.")
    return path


def example_image_copy() -> str:
    """A copy of the example image in the upload folder (`GRADIO_TEMP_DIR`, set by
    `lavis-ib serve`), where the page may serve it and where it is removed with the
    other uploads."""
    folder = tempfile.mkdtemp(prefix="example-", dir=os.environ.get("GRADIO_TEMP_DIR") or None)
    return shutil.copy(example_image_source(), os.path.join(folder, EXAMPLE_IMAGE))
