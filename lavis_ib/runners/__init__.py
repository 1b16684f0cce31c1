"""Runners: the iteration runner, evaluation loop and distribution strategies.

What turns a task, a model and datasets into a training or evaluation run: the step loop,
sharding over processes, checkpoints (`checkpointing/`), the run folder and its log."""
