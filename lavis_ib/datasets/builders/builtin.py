"""Imported on the first registry lookup: registers the built-in entries of this package."""
from lavis_ib.datasets.builders import (  # noqa: F401
    caption_builder,
    classification_builder,
    dialog_builder,
    llava_builder,
    multiple_choice_builder,
    retrieval_builder,
    video_qa_builder,
    vqa_builder,
    webdataset_builder,
)
