"""Restoration benchmark: degradations, baselines (DIP, classic denoisers), metrics."""
