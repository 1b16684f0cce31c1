"""What the docs tests read: every page (README.md and docs/*.md), the paragraphs of a page,
and the text between a page's generated-section markers."""
from __future__ import annotations

import glob
import os
import re

from docs_includes import REPO

LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s")
NOT_PROSE = ("#", "|", "<!--", ">")


def pages() -> list[str]:
    """README.md and every docs/*.md, as paths relative to the repository."""
    docs = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "*.md")))
    return ["README.md", *docs]


def read(path: str) -> str:
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
        return f.read()


def paragraphs(text: str) -> list[tuple[int, int]]:
    """(first line number, number of lines) of each paragraph: consecutive non-blank lines
    that are not a list item (or its continuation), a table row, a heading, an HTML
    comment, a fenced or indented code block."""
    found, start, length = [], 0, 0
    fence = in_list = previous_nonblank = False
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        prose = False
        if stripped.startswith(("```", "~~~")):
            fence = not fence
        elif fence or not stripped:
            pass
        elif LIST_ITEM.match(line):
            in_list = True
        elif in_list and (line[0] in " \t" or previous_nonblank):
            pass    # a list item's indented continuation, or a lazy one right below it
        elif line.startswith(("    ", "\t")):
            pass    # an indented code block
        elif stripped.startswith(NOT_PROSE):
            in_list = False
        else:
            in_list, prose = False, True
        previous_nonblank = bool(stripped) and not fence
        if prose:
            if not length:
                start = number
            length += 1
        elif length:
            found.append((start, length))
            length = 0
    if length:
        found.append((start, length))
    return found


def marked_section(text: str, name: str) -> str:
    """The lines between `<!-- NAME:start -->` and `<!-- NAME:end -->` (exactly one pair)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    assert text.count(start) == 1 and text.count(end) == 1, f"no single {start} ... {end} pair"
    return text.split(start, 1)[1].split(end, 1)[0].strip("\n")
