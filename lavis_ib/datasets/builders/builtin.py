"""Imported on the first registry lookup: registers the built-in entries of this package.

The registry imports this one list itself, so no lookup depends on which modules a caller
happened to import first, and `import lavis_ib` stays light."""
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
