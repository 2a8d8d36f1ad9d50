#!/usr/bin/env bash
# The GPU benchmark on a lent GPU machine, which has PyTorch but not the project's other packages
# and no network: it unpacks what `bench/gpu/pack.sh` put in .gpu/ (the packages for Python 3.12,
# Fashion-MNIST), then runs `python -m bench.gpu.benchmark`, or with `--real` first
# `python -m bench.gpu.real_images` (the deepforest wheel's data, if packed, in .gpu/extra).
# Results go to $OUT (default: bench/results/).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-bench/results}
SITE=/tmp/gpu-site
python3 - "$SITE" <<'PY'
import gzip, lzma, pathlib, sys, tarfile
site = pathlib.Path(sys.argv[1])
if not site.is_dir():
    with tarfile.open(".gpu/site.tar.xz") as archive:
        archive.extractall(site.parent, filter="data")
    (site.parent / "site312").rename(site)
target = pathlib.Path(".gpu/fashion-mnist")
target.mkdir(exist_ok=True)
for packed in pathlib.Path(".gpu/data").glob("*.xz"):
    (target / (packed.stem + ".gz")).write_bytes(gzip.compress(lzma.decompress(packed.read_bytes()), compresslevel=1))
PY
export PYTHONPATH=$SITE:$PWD:$PWD/.gpu/extra PYTHONUNBUFFERED=1  # the project too: tests run its stages from other folders
export DO_NOT_TRACK=1 DVC_NO_ANALYTICS=1 GX_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true
export PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120
export DVC_SITE_CACHE_DIR=/tmp/dvc-site
bin=$(dirname "$(python3 -c 'import sys; print(sys.executable)')")
if [ ! -x "$bin/python" ]; then  # dvc.yaml's commands call `python`
  mkdir -p /tmp/gpu-bin && printf '#!/bin/sh\nexec %s "$@"\n' "$bin/python3" > /tmp/gpu-bin/python
  chmod +x /tmp/gpu-bin/python && export PATH=/tmp/gpu-bin:$PATH
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu-card.csv"
if [ "${1:-}" = --real ]; then
  shift && python3 -m bench.gpu.real_images --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_real_images.log"
else
  python3 -m bench.gpu.benchmark --data .gpu/fashion-mnist --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu.log"
fi
