"""The benchmark: `make bench` (= `python -m bench.run`). Not a test; it measures, it does not assert.

run.py (make bench), default_run.py (the project copy and the timed default run), machine.py (the
machine and its limit), benchmarks_md.py (BENCHMARKS.md's sections); speed/ (training and inference
throughput), quality/ (what the model gets right), serving/ (the model in service), gpu/ (the GPU
benchmark on a lent machine); every result in results/, as JSON named after the module that wrote it.
"""

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
