"""Tasks: the training task and the per-dataset evaluation tasks (generation vs. ranking).

LAVIS's task layer: a task builds what a run needs and turns model outputs into records and
metrics, so runners never know a dataset's protocol."""
from lavis_ib.tasks.base_task import BaseTask, TrainTask
from lavis_ib.tasks.eval_task import EvalTask

__all__ = ["BaseTask", "TrainTask", "EvalTask"]
