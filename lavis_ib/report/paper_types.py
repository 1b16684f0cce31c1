"""The shape of a published results table, so every table of the paper is data of one kind:
its columns (each with the metric its numbers are), its rows (a number or None per column,
notes for the cells the paper or we leave empty) and where it was read (version, section,
table or figure, page); `SOURCE_NOTE` says how the numbers of every table reached us.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

#: How the numbers reached the data, for every table of the paper.
SOURCE_NOTE = (
    "Numbers of arXiv:2305.06500v2 (15 Jun 2023, 17 pages). The PDF itself could not be "
    "opened where these tables were written (the stored copy of the arxiv-vanity page "
    "returns its opening only); each number was taken from a third-party reading of the "
    "v2 PDF that cites the PDF page of every table and figure, and cross-checked: Table "
    "1's BLIP-2 FlanT5XL row and four InstructBLIP rows equal the ones this code held "
    "before (audited against the paper), Table 2's FlanT5XL rows equal a second, "
    "independent summary, drops printed beside them included, and Table 3's ScienceQA "
    "90.7 is the abstract's. arXiv v1 (11 May 2023) calls Figure 4 'Table 4'; v1 was not "
    "read. Check a number against the PDF before citing it.")
V2 = "arXiv:2305.06500v2"


@dataclass(frozen=True)
class Column:
    """One column: `key` names it in our data, `title` is the paper's heading, `metric`
    says what its numbers are (CIDEr, top-1 accuracy, ...)."""

    key: str
    title: str
    metric: str


@dataclass(frozen=True)
class Source:
    """Where a table's numbers are printed: `version` pins the arXiv version, `item` is the
    paper's own label ("Table 2", "Figure 4"), `pages` the PDF page(s); `read_via` says how
    the numbers reached this file."""

    version: str
    section: str
    item: str
    pages: str
    read_via: str

    def cite(self) -> str:
        return f"{self.version}, {self.section}, {self.item}, p. {self.pages}"


@dataclass(frozen=True)
class PaperRow:
    """One row. `values[column key]` is the paper's number or None (an empty cell: the
    paper prints none, or we could not read it; `notes[column key]` says which). A row
    read off a bar chart has `from_figure=True`: its numbers are the figure's labels, not
    a table's."""

    name: str
    values: Mapping[str, float | None]
    notes: Mapping[str, str] = field(default_factory=dict)
    note: str = ""
    from_figure: bool = False


@dataclass(frozen=True)
class PaperTable:
    """A results table or figure of the paper. `figure` is True where the paper shows it
    as a bar chart (the report then draws one)."""

    key: str
    title: str
    columns: tuple[Column, ...]
    rows: tuple[PaperRow, ...]
    source: Source
    figure: bool = False
    note: str = ""

    def __post_init__(self) -> None:
        keys = [c.key for c in self.columns]
        if len(set(keys)) != len(keys):
            raise ValueError(f"table {self.key}: duplicate column keys {keys}")
        names = [r.name for r in self.rows]
        if len(set(names)) != len(names):
            raise ValueError(f"table {self.key}: duplicate row names {names}")
        for row in self.rows:
            if set(row.values) != set(keys):
                raise ValueError(f"table {self.key}, row '{row.name}': values for "
                                 f"{sorted(row.values)}, columns are {keys}")
            unknown = set(row.notes) - set(keys)
            if unknown:
                raise ValueError(f"table {self.key}, row '{row.name}': notes for unknown "
                                 f"columns {sorted(unknown)}")

    @property
    def row_names(self) -> list[str]:
        return [r.name for r in self.rows]

    def row(self, name: str) -> PaperRow:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def cells(self) -> int:
        """Every cell, empty ones included."""
        return len(self.rows) * len(self.columns)

    def filled(self) -> int:
        """The cells holding a number."""
        return sum(v is not None for r in self.rows for v in r.values.values())


def row_of(columns: tuple[Column, ...], name: str, *values: float | None,
           notes: Mapping[str, str] | None = None, note: str = "",
           from_figure: bool = False) -> PaperRow:
    """A row from its values in column order (None: an empty cell)."""
    if len(values) != len(columns):
        raise ValueError(f"row '{name}' needs {len(columns)} values, got {len(values)}")
    return PaperRow(name, dict(zip((c.key for c in columns), values)), dict(notes or {}), note,
                    from_figure)
