"""`instruction_tuning`: the training task of InstructBLIP.

It builds the model (`model:` node; `model.init_from` applies the initialisation
sources) and every dataset under `datasets:`, and returns the model's summed token loss
and token count for a batch, so the runner can normalise by the global token count.
Evaluation is not this task's job: each dataset entry names its own evaluation task
(`datasets.<name>.task`), which the evaluation loop builds with `for_dataset`.
"""
from __future__ import annotations

from typing import Any, Mapping

from lavis_ib.common.errors import LavisIbError
from lavis_ib.common.registry import registry
from lavis_ib.tasks.base_task import BaseTask


@registry.register_task("instruction_tuning")
class InstructionTuningTask(BaseTask):
    """Mixture instruction tuning of the Q-Former (LLM and ViT frozen)."""

    def train_step(self, model: Any, samples: Mapping[str, Any]) -> dict[str, Any]:
        """The model's output for a training batch.

        Returns:
            {"loss", "loss_sum", "num_tokens"}: the runner back-propagates `loss_sum` and
            divides gradients by the step's token count over all ranks.

        Raises:
            LavisIbError: the model's forward lacks `loss_sum`/`num_tokens`.
        """
        out = model(samples)
        if not isinstance(out, Mapping) or "loss_sum" not in out or "num_tokens" not in out:
            got = sorted(out) if isinstance(out, Mapping) else type(out).__name__
            raise LavisIbError(f"{type(model).__name__}.forward must return 'loss_sum' and "
                               f"'num_tokens' for instruction tuning (got {got}).")
        return out

    def valid_step(self, model: Any, samples: Mapping[str, Any]) -> list[dict[str, Any]]:
        raise LavisIbError("instruction_tuning does not evaluate; set datasets.<name>.task to an "
                           "evaluation task (captioning, vqa, ...).")
