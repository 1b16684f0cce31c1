"""Checkpoint formats: Hugging Face directories (`hf`), LAVIS .pth files (`lavis`), and the
name maps between them and lavis_ib's own parameter names (`names`)."""
