"""Tasks: instruction tuning and the evaluation tasks (generation vs. ranking)."""
from lavis_ib.tasks.base_task import BaseTask

__all__ = ["BaseTask"]
