"""Default evaluation settings per dataset: the zero-shot prompts and inference protocol.

The single place for the *chosen* prompts of PAPER.md ("Zero-shot evaluation prompts")
and the generation settings of its "Inference protocol". A project entry overrides any
of these keys; the held-out projects spell them out again, and a test keeps the two equal.
Per-family values (``{vicuna: ..., flant5: ...}``) are resolved once the model is known.

Placeholders are filled in each task's documented field order (see the task modules):
TextVQA: OCR tokens then question; ScienceQA: context, question, options; Visual Dialog:
history then question.
"""
from __future__ import annotations

import copy
from typing import Any

# PAPER.md "Inference protocol" (code): short answers beam 5, max 10, min 1, length
# penalty -1 (T5) / 0 (Vicuna); captions beam 5, max 80, min 10, length penalty 1.
SHORT_ANSWER = {"num_beams": 5, "max_length": 10, "min_length": 1,
                "length_penalty": {"vicuna": 0, "flant5": -1}}
CAPTION = {"num_beams": 5, "max_length": 80, "min_length": 10, "length_penalty": 1}
VQA_PROMPT = "Question: {} Short answer:"
OCR_VQA_PROMPT = "OCR tokens: {}. Question: {} Short answer:"
CAPTION_PROMPT = "A short image description:"
# Vicuna scores a candidate's tokens without EOS, FlanT5 with (PAPER.md, LAVIS per family).
APPEND_EOS = {"vicuna": False, "flant5": True}

DEFAULTS: dict[str, dict[str, Any]] = {
    # -- held-out (Table 1) ---------------------------------------------------------
    "nocaps": {"task": "captioning", "inference": "generate", "prompt": CAPTION_PROMPT,
               "generate": CAPTION},
    "flickr30k": {"task": "captioning", "inference": "generate", "prompt": CAPTION_PROMPT,
                  "generate": CAPTION},
    "gqa": {"task": "gqa", "inference": "generate", "prompt": VQA_PROMPT,
            "generate": SHORT_ANSWER, "metric": "exact"},
    "vizwiz_vqa": {"task": "vqa", "inference": "generate", "prompt": VQA_PROMPT,
                   "generate": SHORT_ANSWER, "metric": "vqa"},
    "textvqa": {"task": "vqa", "inference": "generate", "prompt": OCR_VQA_PROMPT,
                "generate": SHORT_ANSWER, "metric": "vqa"},
    "ivqa": {"task": "video_qa", "inference": "generate", "prompt": VQA_PROMPT,
             "generate": SHORT_ANSWER, "metric": "ivqa"},
    "msvd_qa": {"task": "video_qa", "inference": "rank", "prompt": VQA_PROMPT,
                "candidates": "answer_list", "append_eos": APPEND_EOS, "metric": "exact"},
    "msrvtt_qa": {"task": "video_qa", "inference": "rank", "prompt": VQA_PROMPT,
                  "candidates": "answer_list", "append_eos": APPEND_EOS, "metric": "exact"},
    "scienceqa": {"task": "multiple_choice", "inference": "rank",
                  "prompt": "Context: {} Question: {} Options: {}. Answer:",
                  "candidates": "choices", "append_eos": APPEND_EOS},
    "iconqa": {"task": "multiple_choice", "inference": "rank",
               "prompt": "Question: {} Options: {}. Short answer:",
               "candidates": "choices", "append_eos": APPEND_EOS},
    "vsr": {"task": "classification", "inference": "rank",
            "prompt": 'Based on the image, is this statement true or false? "{}" Answer:',
            "candidates": {"positive": ["yes", "true"], "negative": ["no", "false"]},
            "append_eos": APPEND_EOS},
    "hateful_memes": {"task": "classification", "inference": "rank",
                      "prompt": 'This is an image with: "{}" written on it. Is it hateful? '
                                'Answer:',
                      "candidates": {"positive": ["yes"], "negative": ["no"]},
                      "append_eos": APPEND_EOS},
    "visdial": {"task": "dialog", "inference": "rank",
                "prompt": "Dialog history: {}\nQuestion: {} Short answer:",
                "candidates": "candidates", "append_eos": APPEND_EOS},
    # -- held-in validation (run.select_metric) and finetuning --------------------------
    "coco_caption": {"task": "captioning", "inference": "generate", "prompt": CAPTION_PROMPT,
                     "generate": CAPTION},
    "textcaps": {"task": "captioning", "inference": "generate",
                 "prompt": "OCR tokens: {}. " + CAPTION_PROMPT, "generate": CAPTION},
    "coco_vqa": {"task": "vqa", "inference": "generate", "prompt": VQA_PROMPT,
                 "generate": SHORT_ANSWER, "metric": "vqa"},
    "ok_vqa": {"task": "vqa", "inference": "generate", "prompt": VQA_PROMPT,
               "generate": SHORT_ANSWER, "metric": "vqa"},
    "aok_vqa": {"task": "vqa", "inference": "generate", "prompt": VQA_PROMPT,
                "generate": SHORT_ANSWER, "metric": "aokvqa"},
    "ocr_vqa": {"task": "vqa", "inference": "generate", "prompt": OCR_VQA_PROMPT,
                "generate": SHORT_ANSWER, "metric": "exact"},
}

# A dataset evaluated by a task other than its default one (*chosen*, IconQA's format).
ALTERNATIVES: dict[tuple[str, str], dict[str, Any]] = {
    ("aok_vqa", "multiple_choice"): {"inference": "rank",
                                     "prompt": "Question: {} Options: {}. Short answer:",
                                     "candidates": "choices", "append_eos": APPEND_EOS},
}
# Any other dataset starts from its task's generic settings.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "captioning": {"inference": "generate", "prompt": CAPTION_PROMPT, "generate": CAPTION},
    "vqa": {"inference": "generate", "prompt": VQA_PROMPT, "generate": SHORT_ANSWER},
    "gqa": {"inference": "generate", "prompt": VQA_PROMPT, "generate": SHORT_ANSWER},
    "video_qa": {"inference": "generate", "prompt": VQA_PROMPT, "generate": SHORT_ANSWER},
    "multiple_choice": ALTERNATIVES[("aok_vqa", "multiple_choice")],
    "classification": DEFAULTS["vsr"],
    "dialog": DEFAULTS["visdial"],
}

# The 13 held-out datasets of Table 1, in the table's column order.
HELD_OUT = ("nocaps", "flickr30k", "gqa", "vsr", "iconqa", "textvqa", "visdial",
            "hateful_memes", "vizwiz_vqa", "scienceqa", "msvd_qa", "msrvtt_qa", "ivqa")


def defaults_for(name: str, task: str) -> dict[str, Any]:
    """The default settings of dataset `name` when evaluated by `task` (a deep copy).

    The dataset's own entry when `task` is its default task, else an entry for that pair
    (A-OKVQA as multiple choice), else the task's generic settings (empty for a task
    this module does not know).
    """
    entry = DEFAULTS.get(name)
    if entry is None or entry["task"] != task:
        entry = ALTERNATIVES.get((name, task), TASK_DEFAULTS.get(task, {}))
    out = copy.deepcopy(entry)
    out.pop("task", None)
    return out
