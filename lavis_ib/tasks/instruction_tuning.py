"""`instruction_tuning`: the training task of InstructBLIP.

Evaluation is not this task's job: each dataset entry names its own evaluation task
(`datasets.<name>.task`), so one training task serves every mixture (`InstructionTuningTask`)."""
from __future__ import annotations

from lavis_ib.common.registry import registry
from lavis_ib.tasks.base_task import TrainTask


@registry.register_task("instruction_tuning")
class InstructionTuningTask(TrainTask):
    """Mixture instruction tuning of the Q-Former (LLM and ViT frozen).

    It builds the model (`model:` node; `model.init_from` applies the initialisation
    sources) and every dataset under `datasets:`, and returns the model's loss terms for a
    batch (`TrainTask.train_step`: loss, summed token loss and token count, so the runner
    can normalise by the global token count).
    """
