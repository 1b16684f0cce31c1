"""Imported on the first registry lookup: registers the built-in entries of this package.

The registry imports this one list itself, so no lookup depends on which modules a caller
happened to import first, and `import lavis_ib` stays light."""
from lavis_ib.tasks import captioning  # noqa: F401
from lavis_ib.tasks import vqa  # noqa: F401
from lavis_ib.tasks import multiple_choice  # noqa: F401
from lavis_ib.tasks import classification  # noqa: F401
from lavis_ib.tasks import dialog  # noqa: F401
from lavis_ib.tasks import video_qa  # noqa: F401
from lavis_ib.tasks import retrieval  # noqa: F401
from lavis_ib.tasks import instruction_tuning  # noqa: F401
