"""Inference backends behind one small runner interface (as Polygraphy's runners)."""

from .base import BackendUnavailable, Runner

__all__ = ["BackendUnavailable", "Runner"]
