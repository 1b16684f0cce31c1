"""Helpers shared by the guide tests (a module of its own: `conftest` is a name every test
folder uses, so test modules import from here instead)."""
from __future__ import annotations

import json
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(REPO, "docs", "examples")

QUESTIONS = ("What color is the square?", "Is there a circle?", "How many shapes are there?")
ANSWERS = (["red", "red", "dark red"], ["no", "no", "no"], ["2", "two", "2", "2"])
COLORS = ((200, 30, 30), (30, 200, 30), (30, 30, 200))


def write_my_vqa(root: str, n_train: int = 6, n_val: int = 3) -> str:
    """A tiny my_vqa copy in the documented layout under `root`; returns `root`."""
    from PIL import Image

    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    for split, indices in (("train", range(n_train)), ("val", range(n_train, n_train + n_val))):
        with open(os.path.join(root, "annotations", f"{split}.jsonl"), "w") as f:
            for i in indices:
                Image.new("RGB", (48, 40), COLORS[i % 3]).save(os.path.join(root, "images", f"{i:03d}.jpg"))
                f.write(json.dumps({"question_id": f"q{i}", "image": f"{i:03d}.jpg",
                                    "question": QUESTIONS[i % 3], "answers": ANSWERS[i % 3]}) + "\n")
    return root
