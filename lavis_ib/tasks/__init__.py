"""Tasks: the training task and the per-dataset evaluation tasks (generation vs. ranking)."""
from lavis_ib.tasks.base_task import BaseTask, TrainTask
from lavis_ib.tasks.eval_task import EvalTask

__all__ = ["BaseTask", "TrainTask", "EvalTask"]
