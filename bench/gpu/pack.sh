#!/usr/bin/env bash
# Pack what bench/gpu/run.sh needs on a lent GPU machine (no network, Python 3.12, PyTorch installed)
# into .gpu/ (git-ignored, under the tool's 64 MiB): the packages of bench/gpu/packages.txt built
# for CPython 3.12 (and grad-cam, pure Python, built here from its source), as one xz archive, and
# Fashion-MNIST's IDX files, xz-compressed, and, where deepforest is installed, its wheel's data
# folder in .gpu/extra (the NEON tiles of bench/gpu/real_images.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-data/fashion-mnist}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
platforms=()
for tag in manylinux1 manylinux2014 manylinux_2_5 manylinux_2_17 manylinux_2_24 manylinux_2_26 manylinux_2_27 \
           manylinux_2_28 manylinux_2_31 manylinux_2_34; do platforms+=(--platform "${tag}_x86_64"); done
target=(--python-version 3.12 --implementation cp --only-binary=:all: "${platforms[@]}")
python3 -m pip download -q --no-deps "${target[@]}" -d "$work/wheels" -r bench/gpu/packages.txt
# pure-Python packages published only as source: built into wheels here
python3 -m pip wheel -q --no-deps -w "$work/wheels" grad-cam==1.5.7
python3 -m pip install -q --no-deps --no-index --no-compile "${target[@]}" --target "$work/site312" "$work"/wheels/*.whl
# botocore comes only for litdata's import of boto3: its models of AWS services other than S3 stay behind
find "$work/site312/botocore/data" -mindepth 1 -maxdepth 1 -type d ! -name s3 ! -name sts -exec rm -rf {} +
# mlflow-skinny holds the mlflow package; the full wheel only adds the web UI. Name it for importlib.metadata.
version=$(sed -n 's/^mlflow-skinny==//p' bench/gpu/packages.txt)
mkdir -p "$work/site312/mlflow-$version.dist-info"
printf 'Metadata-Version: 2.1\nName: mlflow\nVersion: %s\n' "$version" > "$work/site312/mlflow-$version.dist-info/METADATA"
rm -rf .gpu && mkdir -p .gpu/data
tar -C "$work" -cf - site312 | xz -9 -T0 > .gpu/site.tar.xz
for file in "$DATA"/*-ubyte.gz; do
  [ -e "$file" ] || { echo "no Fashion-MNIST in $DATA: packed without it (enough for run.sh --real)"; break; }
  zcat "$file" | xz -9 -T0 > ".gpu/data/$(basename "$file" .gz).xz"
done
neon=$(python3 -c 'from bench.quality.neon_crowns import deepforest_data; print(deepforest_data())' 2>/dev/null || true)
if [ -n "$neon" ]; then
  mkdir -p .gpu/extra/deepforest/data && touch .gpu/extra/deepforest/__init__.py
  for xml in "$neon"/*.xml; do  # each tile's boxes and the image they name
    cp "$xml" "$neon/$(sed -n 's:.*<filename>\(.*\)</filename>.*:\1:p' "$xml" | head -1)" .gpu/extra/deepforest/data/
  done
fi
du -sh .gpu
