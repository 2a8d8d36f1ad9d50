"""Durations as a person reads them in a log line."""

from __future__ import annotations


def about(seconds: float) -> str:
    """`about 12 min` from a minute on, else `about 40 s` (at least 1 s)."""
    return f"about {seconds / 60:.0f} min" if seconds >= 60 else f"about {max(seconds, 1):.0f} s"
