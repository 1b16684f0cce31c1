"""The paper's instruction-tuning mixture as data for the throughput bench: the 13 held-in
datasets, their training sizes, the instruction templates each draws from, and the length
distributions of their questions, answers, captions, OCR tokens and LLaVA turns, each with
its source. Lengths are in words; `TOKENS_PER_WORD` turns them into LLaMA tokens.

Where a paper states a statistic it is cited; values marked "estimate" are ours (no
published figure at hand) and are the first thing to replace with counts from the real
annotation files. Mixing weights come from `lavis_ib.datasets.mixing.mixing_weights` with
the hand adjustments of configs/projects/instructblip/instruction_tuning_vicuna7b.yaml.
"""
from __future__ import annotations

#: LLaMA's 32,000-piece SentencePiece vocabulary on English text: about 1.3 tokens per word
#: (estimate; the usual rule of thumb of about 0.75 words per token for such vocabularies).
TOKENS_PER_WORD = 1.3
#: a comma-separated OCR token (scene text: names, numbers, fragments) costs more pieces
#: than a word, and the ", " separator is one more (estimate).
TOKENS_PER_OCR_TOKEN = 2.5

# Length distributions. ("discrete", {words: probability}) or ("lognormal", mean, sd, lo, hi):
# a log-normal with that mean and standard deviation, rounded, clipped to [lo, hi].
VQAV2_ANSWER = ("discrete", {1: 0.8932, 2: 0.0691, 3: 0.0274, 4: 0.0103})
# ^ VQA (Antol et al., ICCV 2015, Sec. 3 "Answers"): 89.32% of answers are one word,
#   6.91% two, 2.74% three; the rest (about 1%) put at four words.
VQAV2_QUESTION = ("lognormal", 6.2, 2.0, 3, 22)
# ^ VQA (Antol et al. 2015, Sec. 3): questions average 6.2 words, most between 4 and 10.
OKVQA_QUESTION = ("lognormal", 8.1, 3.0, 3, 30)
OKVQA_ANSWER = ("discrete", {1: 0.77, 2: 0.18, 3: 0.05})
# ^ OK-VQA (Marino et al., CVPR 2019, Table 1): average question length 8.1 words, average
#   answer length 1.3 words (the split over 1-3 words is an estimate with that mean: 1.28).
AOKVQA_QUESTION = ("lognormal", 8.8, 3.0, 3, 30)
AOKVQA_ANSWER = ("discrete", {1: 0.75, 2: 0.20, 3: 0.05})
# ^ A-OKVQA (Schwenk et al., ECCV 2022): questions about 8.8 words on average; direct
#   answers about as short as OK-VQA's (estimate, mean 1.3).
COCO_CAPTION = ("lognormal", 10.5, 2.4, 8, 30)
# ^ Microsoft COCO Captions (Chen et al. 2015): at least 8 words required, about 10.5 on
#   average (the spread is an estimate).
CAPFILT_CAPTION = ("lognormal", 9.0, 3.0, 4, 20)
# ^ BLIP's CapFilt synthetic captions (Li et al., ICML 2022): short generated captions
#   (estimate: mean 9 words, at most about 20 tokens as its captioner decodes).
TEXTCAPS_CAPTION = ("lognormal", 12.4, 4.0, 5, 40)
# ^ TextCaps (Sidorov et al., ECCV 2020): captions average about 12.4 words, longer than
#   COCO's (they name the text in the image).
SCENE_OCR_TOKENS = ("lognormal", 12.0, 10.0, 1, 30)
# ^ Rosetta OCR tokens of TextCaps/TextVQA images (estimate: mean about 12 per image, a long
#   tail; the instruction keeps the first 30, docs/protocol.md).
OCRVQA_QUESTION = ("discrete", {4: 0.35, 5: 0.25, 6: 0.25, 7: 0.15})
# ^ OCR-VQA (Mishra et al., ICDAR 2019): template questions about book covers ("Who wrote
#   this book?", "What is the title of this book?", "Is this a <genre> book?", ...).
OCRVQA_ANSWER = ("discrete", {1: 0.45, 2: 0.20, 3: 0.12, 5: 0.10, 8: 0.08, 12: 0.05})
# ^ OCR-VQA answers: yes/no and genres (1-3 words), author names (2-3), titles (often 5-12
#   words); the shares are an estimate.
COVER_OCR_TOKENS = ("lognormal", 9.0, 6.0, 1, 30)
# ^ OCR tokens of a book cover (title, author, publisher; estimate).
LLAVA_QUESTION = ("lognormal", 12.0, 6.0, 3, 60)
LLAVA_CONVERSATION_ANSWER = ("lognormal", 45.0, 30.0, 2, 250)
LLAVA_DETAIL_ANSWER = ("lognormal", 110.0, 35.0, 40, 250)
LLAVA_REASONING_ANSWER = ("lognormal", 95.0, 40.0, 20, 250)
LLAVA_EARLIER_TURNS = ("discrete", {0: 0.3, 1: 0.25, 2: 0.2, 3: 0.15, 4: 0.1})
# ^ LLaVA-Instruct-150K (Liu et al., NeurIPS 2023): multi-turn conversations with short
#   answers, one-turn detailed descriptions and one-turn complex reasoning answers of
#   paragraph length (all LLaVA lengths are estimates of that description; the earlier
#   turns of a conversation sample are its history, docs/protocol.md).

#: name -> (training samples, template family, {part: distribution}, source of the size).
#: Parts: "question", "answer", "caption", "ocr" (OCR tokens before the instruction),
#: "history" (earlier LLaVA turns, each a question and an answer).
DATASETS = {
    "coco_caption": (566_747, "caption", {"caption": COCO_CAPTION},
                     "Karpathy train + restval captions (LAVIS's coco_karpathy_train)"),
    "capfilt14m": (14_000_000, "caption", {"caption": CAPFILT_CAPTION},
                   "configs/datasets/capfilt14m num_samples (BLIP's 14M CapFilt set)"),
    "textcaps": (109_765, "caption", {"caption": TEXTCAPS_CAPTION, "ocr": SCENE_OCR_TOKENS},
                 "TextCaps train: 21,953 images, 109,765 captions"),
    "coco_vqa": (443_757, "vqa", {"question": VQAV2_QUESTION, "answer": VQAV2_ANSWER},
                 "VQAv2 train questions"),
    "ok_vqa": (9_009, "vqa", {"question": OKVQA_QUESTION, "answer": OKVQA_ANSWER},
               "OK-VQA train questions"),
    "aok_vqa": (17_056, "vqa", {"question": AOKVQA_QUESTION, "answer": AOKVQA_ANSWER},
                "A-OKVQA train questions"),
    "ocr_vqa": (800_000, "vqa", {"question": OCRVQA_QUESTION, "answer": OCRVQA_ANSWER,
                                 "ocr": COVER_OCR_TOKENS},
                "OCR-VQA: about 1M questions on 207K covers, 80% train (rounded)"),
    "coco_vqg": (443_757, "qg", {"question": VQAV2_QUESTION, "answer": VQAV2_ANSWER},
                 "VQAv2 train, as question generation"),
    "ok_vqg": (9_009, "qg", {"question": OKVQA_QUESTION, "answer": OKVQA_ANSWER},
               "OK-VQA train, as question generation"),
    "aok_vqg": (17_056, "qg", {"question": AOKVQA_QUESTION, "answer": AOKVQA_ANSWER},
                "A-OKVQA train, as question generation"),
    "llava_conversation": (150_000, "llava", {"question": LLAVA_QUESTION,
                                              "answer": LLAVA_CONVERSATION_ANSWER,
                                              "history": LLAVA_EARLIER_TURNS},
                           "58K conversations, one sample per assistant turn (turns: estimate)"),
    "llava_detail": (23_240, "llava", {"question": LLAVA_QUESTION,
                                       "answer": LLAVA_DETAIL_ANSWER},
                     "detail_23k.json: one turn each"),
    "llava_reasoning": (76_643, "llava", {"question": LLAVA_QUESTION,
                                          "answer": LLAVA_REASONING_ANSWER},
                        "complex_reasoning_77k.json: one turn each"),
}
