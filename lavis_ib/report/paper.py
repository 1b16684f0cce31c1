"""InstructBLIP's published zero-shot results (the paper's Table 1), as data for the report.

`HELD_OUT` lists the 13 held-out datasets in the table's column order.
`TABLE1[row][dataset]` is the paper's number for one held-out dataset; `METRIC[dataset]`
names the key of our `metrics.json` that corresponds to it (all in the paper's scale:
CIDEr x100, accuracies, AUC and MRR in percent). `ROW_OF_MODEL_TYPE` maps our model
types to the row a run is compared with. Sources: docs/protocol.md.
"""
from __future__ import annotations

# The 13 held-out datasets of Table 1, in the table's column order.
HELD_OUT = ("nocaps", "flickr30k", "gqa", "vsr", "iconqa", "textvqa", "visdial",
            "hateful_memes", "vizwiz_vqa", "scienceqa", "msvd_qa", "msrvtt_qa", "ivqa")
# Column titles of Table 1, in its order.
TITLES = {"nocaps": "NoCaps", "flickr30k": "Flickr30K", "gqa": "GQA", "vsr": "VSR",
          "iconqa": "IconQA", "textvqa": "TextVQA", "visdial": "Visdial",
          "hateful_memes": "HM", "vizwiz_vqa": "VizWiz", "scienceqa": "SciQA image",
          "msvd_qa": "MSVD QA", "msrvtt_qa": "MSRVTT QA", "ivqa": "iVQA"}
METRIC = {"nocaps": "cider", "flickr30k": "cider", "gqa": "acc", "vsr": "acc",
          "iconqa": "acc", "textvqa": "acc", "visdial": "mrr", "hateful_memes": "auc",
          "vizwiz_vqa": "acc", "scienceqa": "acc", "msvd_qa": "acc", "msrvtt_qa": "acc",
          "ivqa": "acc"}


def _row(*values: float) -> dict[str, float]:
    if len(values) != len(HELD_OUT):
        raise ValueError(f"a Table 1 row needs {len(HELD_OUT)} values, got {len(values)}")
    return dict(zip(HELD_OUT, values))


TABLE1: dict[str, dict[str, float]] = {
    "BLIP-2 FlanT5XL": _row(104.5, 76.1, 44.0, 60.5, 45.5, 43.1, 45.7, 53.0, 29.8, 54.9,
                            33.7, 16.2, 40.4),
    "InstructBLIP FlanT5XL": _row(119.9, 84.5, 48.4, 64.8, 50.0, 46.6, 46.6, 56.6, 32.7,
                                  70.4, 43.4, 25.0, 53.1),
    "InstructBLIP FlanT5XXL": _row(120.0, 83.5, 47.9, 65.6, 51.2, 46.6, 48.5, 54.1, 30.9,
                                   70.6, 44.3, 25.6, 53.8),
    "InstructBLIP Vicuna-7B": _row(123.1, 82.4, 49.2, 54.3, 43.1, 50.1, 45.2, 59.6, 34.5,
                                   60.5, 41.8, 22.1, 52.2),
    "InstructBLIP Vicuna-13B": _row(121.9, 82.8, 49.5, 52.1, 44.8, 50.7, 45.4, 57.5, 33.4,
                                    63.1, 41.2, 24.8, 51.0),
}
ROW_OF_MODEL_TYPE = {"flant5xl": "InstructBLIP FlanT5XL", "flant5xxl": "InstructBLIP FlanT5XXL",
                     "vicuna7b": "InstructBLIP Vicuna-7B", "vicuna13b": "InstructBLIP Vicuna-13B",
                     # BLIP-2 (blip2_t5): the baseline row Table 1 gives for FlanT5-XL
                     "pretrain_flant5xl": "BLIP-2 FlanT5XL"}
