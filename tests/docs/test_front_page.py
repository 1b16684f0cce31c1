"""The README is a front page (at most 160 lines: what it is, install, quick start, the
commands, the model zoo, the docs index) and every page reads in short paragraphs (at
most 8 lines). Commands have one spelling, `lavis-ib COMMAND`, and the command list is
generated from the dispatcher's table. Every guide is linked from docs/index.md."""
from __future__ import annotations

import os
import re

import pytest

from docs_helpers import EXAMPLES
from docs_pages import marked_section, pages, paragraphs, read

README_MAX_LINES = 160
PARAGRAPH_MAX_LINES = 8
README_SECTIONS = ("## Install", "## Quick start", "## Commands", "## Model zoo", "## Documentation")


def test_readme_is_a_front_page():
    text = read("README.md")
    assert len(text.splitlines()) <= README_MAX_LINES, \
        f"README.md has {len(text.splitlines())} lines; move detail to docs/ (at most {README_MAX_LINES})"
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == list(README_SECTIONS), headings
    assert "](docs/index.md)" in text


@pytest.mark.parametrize("page", pages())
def test_no_paragraph_is_longer_than_eight_lines(page):
    lines = read(page).splitlines()
    long = [f"{page}:{start}: {n} lines: {lines[start - 1][:60]}..."
            for start, n in paragraphs(read(page)) if n > PARAGRAPH_MAX_LINES]
    assert not long, "split these paragraphs (or make them lists or tables):\n" + "\n".join(long)


def test_the_paragraph_counter():
    prose = "\n".join(f"line {i} of a paragraph" for i in range(9))
    assert paragraphs(prose) == [(1, 9)]
    assert paragraphs("# Title\n\n" + prose + "\n\nshort\n") == [(3, 9), (13, 1)]
    assert paragraphs("intro\n- item\n  continued\n  again\n- item two\nlazy line\n") == [(1, 1)]
    assert paragraphs("| a | b |\n|---|---|\n" + "| x | y |\n" * 20) == []
    assert paragraphs("```\n" + prose + "\n```\n") == []
    assert paragraphs("    indented code\n" * 12) == []
    assert paragraphs("1. first\n   more\n2. second\n\nafter the list\n") == [(5, 1)]


def test_readme_and_index_command_lists_are_the_dispatcher_table():
    from lavis_ib.cli.dispatch import COMMANDS, commands_markdown

    table = commands_markdown()
    assert table.count("\n") == len(COMMANDS) + 1
    for name, help_line in COMMANDS.items():
        assert f"| `lavis-ib {name}` | {help_line} |" in table
    for page in ("README.md", "docs/index.md"):
        assert marked_section(read(page), "commands") == table, \
            (f"{page}'s command list is stale: paste lavis_ib.cli.dispatch.commands_markdown() "
             f"between its commands markers")


def test_commands_have_one_spelling():
    """`lavis-ib COMMAND` everywhere; `python -m lavis_ib.train` named once, in the README,
    as the LAVIS-compatible form (torchrun starts `--no-python lavis-ib ...`)."""
    found = [(page, line) for page in pages() for line in read(page).splitlines()
             if re.search(r"-m lavis_ib\b", line)]
    assert len(found) == 1 and found[0][0] == "README.md", found
    assert "python -m lavis_ib.train" in found[0][1]
    for name in sorted(os.listdir(EXAMPLES)):   # shown verbatim in the guides
        path = os.path.join(EXAMPLES, name)
        if os.path.isfile(path) and not name.endswith(".pyc"):
            with open(path, encoding="utf-8") as f:
                assert not re.search(r"-m lavis_ib\b", f.read()), f"{name}: use `lavis-ib COMMAND`"


def test_every_page_is_linked_from_the_index():
    index = read("docs/index.md")
    unlinked = [p for p in pages() if p.startswith("docs/") and p != "docs/index.md"
                and f"]({os.path.basename(p)})" not in index]
    assert not unlinked, f"docs/index.md does not link: {unlinked}"


def test_zoo_sizes_are_rounded_to_three_significant_digits():
    from lavis_ib.report.zoo import _memory, _rounded

    assert [_rounded(n) for n in (985_894_528, 6_738_423_808, 13_015_874_560, 23_776, 2_112,
                                  999_499, 999_500, 999)] == \
        ["986M", "6.74B", "13B", "23.8K", "2.11K", "999K", "1M", "999"]
    # 2 bytes x 7,913,155,712 = 15,826,311,424 bytes = 14.739 GiB; 2 x 171,360 = 335 KiB
    assert [_memory(n) for n in (15_826_311_424, 342_720)] == ["14.7 GiB", "335 KiB"]
    zoo = marked_section(read("README.md"), "zoo-table")
    assert not re.search(r"\d,\d{3}", zoo), "the README's zoo table shows unrounded counts"
