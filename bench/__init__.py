"""The benchmark: `make bench` (= `python -m bench.run`). Not a test; it measures, it does not assert."""
