"""The benchmark: `make bench` (= `python -m bench.run`). Not a test; it measures, it does not assert.

run.py (make bench), default_run.py (the project copy and the timed default run), machine.py (the
machine and its limit), benchmarks_md.py (BENCHMARKS.md's sections); speed/ (training and inference
throughput), quality/ (what the model gets right), serving/ (the model in service), gpu/ (the GPU
benchmark on a lent machine); every result in results/, as JSON named after the module that wrote it.
"""

import argparse
from collections.abc import Callable, Collection
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def seed_list(text: str) -> list[int]:
    """A `--seeds` argument: the train.seed values, comma-separated (`0,1`), refused before any work."""
    try:
        return [int(seed) for seed in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give the seeds as whole numbers, comma-separated (0,1)") from None


def names_of(choices: Collection[str]) -> Callable[[str], list[str]]:
    """A `--variants` or `--sets` argument: names of `choices`, comma-separated, refused before any work."""

    def names(text: str) -> list[str]:
        if unknown := [name for name in text.split(",") if name not in choices]:
            raise argparse.ArgumentTypeError(f"{', '.join(unknown)}: not one of {', '.join(choices)}")
        return text.split(",")

    return names
