"""Inference backends behind one small runner interface (as Polygraphy's runners)."""

from .base import BackendUnavailable, Runner, RunnerError

__all__ = ["BackendUnavailable", "Runner", "RunnerError"]
