"""Instruction templates (InstructBLIP paper, Appendix Table 5) and their processor.

Only the inserted question / answer is normalised; the template text is kept verbatim.
A template is drawn per sample from a generator seeded by (seed, epoch, sample index), so
the draw does not depend on rank, world size or worker.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from lavis_ib.common.errors import ConfigError, did_you_mean
from lavis_ib.common.registry import registry
from lavis_ib.processors.base_processor import BaseProcessor
from lavis_ib.processors.text import normalize_question

CAPTION_TEMPLATES = (
    "A short image caption:",
    "A short image description:",
    "A photo of",
    "An image that shows",
    "Write a short description for the image.",
    "Write a description for the photo.",
    "Provide a description of what is presented in the photo.",
    "Briefly describe the content of the image.",
    "Can you briefly explain what you see in the image?",
    "Could you use a few words to describe what you perceive in the photo?",
    "Please provide a short depiction of the picture.",
    "Using language, provide a short account of the image.",
    "Use a few words to illustrate what is happening in the picture.",
)

VQA_TEMPLATES = (
    "{question}",
    "Question: {question}",
    "{question} A short answer to the question is",
    "Q: {question} A:",
    "Question: {question} Short answer:",
    "Given the image, answer the following question with no more than three words. {question}",
    "Based on the image, respond to this question with a short answer: {question}. Answer:",
    "Use the provided image to answer the question: {question} Provide your answer as short as possible:",
    'What is the answer to the following question? "{question}"',
    'The question "{question}" can be answered using the image. A short answer is',
)

QG_TEMPLATES = (
    "Given the image, generate a question whose answer is: {answer}. Question:",
    "Based on the image, provide a question with the answer: {answer}. Question:",
    'Given the visual representation, create a question for which the answer is "{answer}".',
    "From the image provided, craft a question that leads to the reply: {answer}. Question:",
    "Considering the picture, come up with a question where the answer is: {answer}.",
    "Taking the image into account, generate a question that has the answer: {answer}. Question:",
)

TEMPLATE_FAMILIES = {"caption": CAPTION_TEMPLATES, "vqa": VQA_TEMPLATES, "qg": QG_TEMPLATES}

#: What the training text is (docs/protocol.md, "Paper experiments"; the paper's Sec. 3.4):
#: `instruction` a template drawn per sample; `plain` the inserted question / answer alone
#: ("" for a caption: the image alone); `dataset_prefix` the plain text after a
#: ``[Task:Dataset]`` identifier (a caption: the identifier alone).
FORMATS = ("instruction", "plain", "dataset_prefix")


#: an identifier written by `identifier` (an evaluation prompt naming its task this way)
IDENTIFIER = re.compile(r"\[[^\[\]{}:]+(:[^\[\]{}]+)?\]")


def identifier(task_name: str, dataset_name: str | None = None) -> str:
    """``[Task:Dataset]``, or ``[Task]`` without a dataset name (held-out datasets)."""
    return f"[{task_name}:{dataset_name}]" if dataset_name else f"[{task_name}]"


def template_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one sample's draws: a function of (seed, epoch, index) only."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(index)])


@registry.register_processor("instruction_template")
class InstructionTemplateProcessor(BaseProcessor):
    """Formats one instruction from a template family, or the plain / identifier-prefixed
    text of the multitask baselines (`format`).

    Args:
        family: ``caption``, ``vqa`` or ``qg`` (docs/protocol.md), unless `templates` is given.
        templates: custom templates with ``{question}`` / ``{answer}`` slots.
        seed: base seed of the per-sample draw.
        max_words: words kept of the inserted question / answer.
        format: ``instruction`` (a drawn template), ``plain`` or ``dataset_prefix``
            (`FORMATS`).
        task_name: the task in ``[Task:Dataset]`` (each dataset's defaults name it).
        dataset_name: the dataset in ``[Task:Dataset]``.

    Raises:
        ConfigError: an unknown family or format, `dataset_prefix` without the names,
            custom `templates` with a format that reads none.

    Example:
        >>> proc = InstructionTemplateProcessor("vqa", seed=0)
        >>> proc(index=3, question="What is THIS?")  # doctest: +SKIP
        'Q: what is this A:'
        >>> InstructionTemplateProcessor("vqa", format="dataset_prefix", task_name="VQA",
        ...                              dataset_name="VQAv2")(question="What is THIS?")
        '[VQA:VQAv2] what is this?'
    """

    def __init__(self, family: str = "vqa", templates: Sequence[str] | None = None,
                 seed: int = 0, max_words: int = 50, format: str = "instruction",
                 task_name: str | None = None, dataset_name: str | None = None) -> None:
        if format not in FORMATS:
            raise ConfigError(f"instruction_template: unknown format '{format}'."
                              f"{did_you_mean(str(format), FORMATS)} Use one of "
                              f"{', '.join(FORMATS)}.")
        if templates is not None and format != "instruction":
            raise ConfigError(f"instruction_template: format '{format}' reads no templates; "
                              f"remove `templates` or use format: instruction.")
        if format == "dataset_prefix" and not (task_name and dataset_name):
            raise ConfigError("instruction_template: format 'dataset_prefix' needs task_name "
                              "and dataset_name (the [Task:Dataset] identifier); the held-in "
                              "datasets' defaults set both, give them for any other dataset.")
        if templates is None:
            if family not in TEMPLATE_FAMILIES:
                raise ConfigError(f"instruction_template: unknown family '{family}'; "
                                  f"use one of {', '.join(TEMPLATE_FAMILIES)} or give templates.")
            templates = TEMPLATE_FAMILIES[family]
        if not templates:
            raise ConfigError("instruction_template: the template list is empty.")
        self.family = family
        self.templates = tuple(str(t) for t in templates)
        self.seed = int(seed)
        self.max_words = max_words
        self.text_format = format
        self.task_name = task_name
        self.dataset_name = dataset_name

    def draw(self, index: int, epoch: int = 0) -> int:
        """The template index sample `index` gets in `epoch`."""
        return int(template_rng(self.seed, epoch, index).integers(len(self.templates)))

    def format(self, template_id: int, question: str | None = None,
                        answer: str | None = None) -> str:
        """Template `template_id` filled with the normalised question / answer."""
        template = self.templates[template_id]
        fields = {}
        if "{question}" in template:
            if question is None:
                raise ValueError(f"template {template!r} needs a question")
            fields["question"] = normalize_question(question, self.max_words)
        if "{answer}" in template:
            if answer is None:
                raise ValueError(f"template {template!r} needs an answer")
            fields["answer"] = normalize_question(answer, self.max_words)
        # str.replace rather than str.format: braces elsewhere in a template stay literal
        for key, value in fields.items():
            template = template.replace("{" + key + "}", value)
        return template

    def plain(self, question: str | None = None, answer: str | None = None) -> str:
        """The inserted text alone: the normalised question, else the answer (question
        generation), else "" (a caption's input is the image alone)."""
        text = question if question is not None else answer
        return "" if text is None else normalize_question(text, self.max_words)

    def __call__(self, index: int = 0, epoch: int = 0, question: str | None = None,
                 answer: str | None = None) -> str:
        if self.text_format == "plain":
            return self.plain(question, answer)
        if self.text_format == "dataset_prefix":
            text = self.plain(question, answer)
            tag = identifier(self.task_name, self.dataset_name)
            return f"{tag} {text}" if text else tag
        return self.format(self.draw(index, epoch), question=question, answer=answer)
