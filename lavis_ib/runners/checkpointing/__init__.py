"""Run checkpoints: the manager (save, verify, resume), their files, safe loading, RNG state
and the fault hooks the resume tests use."""
