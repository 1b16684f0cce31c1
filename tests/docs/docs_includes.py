"""The guides in docs/ show the example files verbatim: each is included as

    <!-- include: docs/examples/my_vqa.py -->
    ```python
    ...the file's exact contents...
    ```

`find_includes` lists them (the tests compare each block with its file);
`python tests/docs/docs_includes.py` rewrites every block from its file after an edit.
"""
from __future__ import annotations

import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUIDES = ("docs/adding_a_dataset.md", "docs/adding_a_task.md", "docs/adding_a_model.md",
          "docs/checkpoints.md")
INCLUDE = re.compile(r"<!-- include: (?P<path>\S+) -->\n```(?P<lang>\w*)\n(?P<body>.*?)```\n",
                     re.DOTALL)


def find_includes(guide: str) -> list[tuple[str, str]]:
    """(included path, code block text) of every include marker in a guide."""
    with open(os.path.join(REPO, guide)) as f:
        text = f.read()
    return [(m.group("path"), m.group("body")) for m in INCLUDE.finditer(text)]


def sync(guide: str) -> bool:
    """Rewrite the guide's included blocks from their files; True when it changed."""
    path = os.path.join(REPO, guide)
    with open(path) as f:
        text = f.read()

    def block(m: re.Match) -> str:
        with open(os.path.join(REPO, m.group("path"))) as f:
            body = f.read()
        return f"<!-- include: {m.group('path')} -->\n```{m.group('lang')}\n{body}```\n"

    new = INCLUDE.sub(block, text)
    if new != text:
        with open(path, "w") as f:
            f.write(new)
    return new != text


if __name__ == "__main__":
    changed = [g for g in GUIDES if os.path.isfile(os.path.join(REPO, g)) and sync(g)]
    print("updated: " + (", ".join(changed) or "nothing"))
    sys.exit(0)
