"""Metrics of the evaluation tasks, each equal to its official scorer: captioning (pycocoevalcap),
VQA accuracy (the official VQA script), ranking and the per-question tables."""
