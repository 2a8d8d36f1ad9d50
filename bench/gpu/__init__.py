"""The GPU benchmark on a lent GPU machine: `bench/gpu/pack.sh` here, then `bench/gpu/run.sh` there."""
