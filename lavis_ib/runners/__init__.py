"""Runners: the iteration runner, evaluation loop and distribution strategies."""
