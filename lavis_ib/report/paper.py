"""InstructBLIP's published results as data: Table 1 here, Tables 2, 3 and Figure 4 in
`paper_tables`, all pinned to arXiv 2305.06500v2 (where each was read: `SOURCE_NOTE`).

Reports compare against numbers kept as data with their source, never typed into a report;
`TABLES` holds each table, and Table 1 keeps the names the single-run report always used."""
from __future__ import annotations

from lavis_ib.report.paper_tables import FIG_4, TABLE_2, TABLE_3
from lavis_ib.report.paper_types import (SOURCE_NOTE, V2, Column, PaperRow, PaperTable, Source,
                                        row_of)


# The 13 held-out datasets of Table 1, in the table's column order.
HELD_OUT = ("nocaps", "flickr30k", "gqa", "vsr", "iconqa", "textvqa", "visdial",
            "hateful_memes", "vizwiz_vqa", "scienceqa", "msvd_qa", "msrvtt_qa", "ivqa")
# Column titles of Table 1, in its order.
TITLES = {"nocaps": "NoCaps", "flickr30k": "Flickr30K", "gqa": "GQA", "vsr": "VSR",
          "iconqa": "IconQA", "textvqa": "TextVQA", "visdial": "Visdial",
          "hateful_memes": "HM", "vizwiz_vqa": "VizWiz", "scienceqa": "SciQA image",
          "msvd_qa": "MSVD QA", "msrvtt_qa": "MSRVTT QA", "ivqa": "iVQA"}
# The key of our `metrics.json` that matches each column, on the paper's scale: CIDEr x100,
# accuracies, AUC and MRR in percent.
METRIC = {"nocaps": "cider", "flickr30k": "cider", "gqa": "acc", "vsr": "acc",
          "iconqa": "acc", "textvqa": "acc", "visdial": "mrr", "hateful_memes": "auc",
          "vizwiz_vqa": "acc", "scienceqa": "acc", "msvd_qa": "acc", "msrvtt_qa": "acc",
          "ivqa": "acc"}
# What each metric key is, as the paper's caption of Table 1 words it.
METRIC_NAMES = {"cider": "CIDEr", "acc": "top-1 accuracy (%)", "mrr": "MRR", "auc": "AUC"}

T1_COLUMNS = tuple(Column(d, TITLES[d], "iVQA accuracy" if d == "ivqa" else METRIC_NAMES[METRIC[d]])
                   for d in HELD_OUT)


def _row(name: str, *values: float | None, note: str = "") -> PaperRow:
    return row_of(T1_COLUMNS, name, *values, note=note)


_FLAMINGO = "the paper prints '-' where Flamingo reports no zero-shot number"

TABLE_1 = PaperTable(
    key="1", title="Zero-shot results on the held-out datasets",
    columns=T1_COLUMNS,
    rows=(
        _row("Flamingo-3B", None, 60.6, None, None, None, 30.1, None, 53.7, 28.9, None,
             27.5, 11.0, 32.7, note=_FLAMINGO),
        _row("Flamingo-9B", None, 61.5, None, None, None, 31.8, None, 57.0, 28.8, None,
             30.2, 13.7, 35.2, note=_FLAMINGO),
        _row("Flamingo-80B", None, 67.2, None, None, None, 35.0, None, 46.4, 31.6, None,
             35.6, 17.4, 40.7, note=_FLAMINGO),
        _row("BLIP-2 FlanT5XL", 104.5, 76.1, 44.0, 60.5, 45.5, 43.1, 45.7, 53.0, 29.8, 54.9,
             33.7, 16.2, 40.4),
        _row("BLIP-2 FlanT5XXL", 98.4, 73.7, 44.6, 68.2, 45.4, 44.1, 46.9, 52.0, 29.4, 64.5,
             34.4, 17.4, 45.8),
        _row("BLIP-2 Vicuna-7B", 107.5, 74.9, 38.6, 50.0, 39.7, 40.1, 44.9, 50.6, 25.3, 53.8,
             18.3, 9.2, 27.5),
        _row("BLIP-2 Vicuna-13B", 103.9, 71.6, 41.0, 50.9, 40.6, 42.5, 45.1, 53.7, 19.6, 61.0,
             20.3, 10.3, 23.5),
        _row("InstructBLIP FlanT5XL", 119.9, 84.5, 48.4, 64.8, 50.0, 46.6, 46.6, 56.6, 32.7,
             70.4, 43.4, 25.0, 53.1),
        _row("InstructBLIP FlanT5XXL", 120.0, 83.5, 47.9, 65.6, 51.2, 46.6, 48.5, 54.1, 30.9,
             70.6, 44.3, 25.6, 53.8),
        _row("InstructBLIP Vicuna-7B", 123.1, 82.4, 49.2, 54.3, 43.1, 50.1, 45.2, 59.6, 34.5,
             60.5, 41.8, 22.1, 52.2),
        _row("InstructBLIP Vicuna-13B", 121.9, 82.8, 49.5, 52.1, 44.8, 50.7, 45.4, 57.5, 33.4,
             63.1, 41.2, 24.8, 51.0),
    ),
    source=Source(V2, "Sec. 3.1 (zero-shot evaluation)", "Table 1", "6", SOURCE_NOTE),
    note="ScienceQA: the questions with an image context only.")

# The rows with a number in every column (every row but Flamingo's: BLIP-2 and
# InstructBLIP), as plain dicts, TABLE1[row][dataset].
TABLE1: dict[str, dict[str, float]] = {
    r.name: {d: float(v) for d, v in r.values.items() if v is not None}
    for r in TABLE_1.rows if None not in r.values.values()}
# our model type -> its Table 1 row
ROW_OF_MODEL_TYPE = {"flant5xl": "InstructBLIP FlanT5XL", "flant5xxl": "InstructBLIP FlanT5XXL",
                     "vicuna7b": "InstructBLIP Vicuna-7B", "vicuna13b": "InstructBLIP Vicuna-13B",
                     # BLIP-2 (blip2_t5): the baseline row Table 1 gives for FlanT5-XL
                     "pretrain_flant5xl": "BLIP-2 FlanT5XL"}


def table1_value(row: str, dataset: str) -> float | None:
    """A Table 1 cell of any row (None: the paper prints none)."""
    return TABLE_1.row(row).values[dataset]


# every table as a `PaperTable`, by the name `lavis-ib report --table` takes
TABLES: dict[str, PaperTable] = {"1": TABLE_1, "2": TABLE_2, "3": TABLE_3, "fig4": FIG_4}
