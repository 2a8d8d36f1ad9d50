"""The real-image path on a CUDA machine, in one call of a few minutes (`bench/gpu/run.sh --real`).

    python -m bench.gpu.real_images [--out DIR] [--budget SECONDS] [--seeds 0,1,2] [--workdir DIR]

1. the CUDA tests (`pytest -m cuda`);
2. the attention variants of `bench.quality.attention_variants` on the NEON tree crowns (the
   `deepforest` wheel's data folder, found on the path), one seed, paired;
3. as the budget allows, the generated solar cells of `bench.quality.cell_cracks` (2,600 grey
   300×300 images, 31 % `defective`, 128 px) trained and evaluated with the defaults of
   `params.yaml` except the data section, one run per seed: accuracy, defective recall, where the
   attention points, deletion (building the cells takes two minutes of one core).

Every step is recorded as it finishes in OUT/gpu_real_images.json (a failed step records its error
and the rest go on); steps that would overrun `--budget` are skipped and say so.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from functools import partial
from pathlib import Path

from bench import RESULTS, machine, seed_list
from bench.gpu.benchmark import Recorder, cuda_tests
from bench.quality import attention_variants, cell_cracks
from bench.quality.neon_crowns import measure, with_changes

VARIANTS = ("soft", "gated", "heads-4", "entropy-0.2", "stride-2")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu.real_images", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--budget", type=float, default=500, help="seconds for the whole benchmark")
    parser.add_argument(
        "--seeds", type=seed_list, default="0,1,2", help="the cells' train.seed values, comma-separated"
    )
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "attention-pipeline-gpu-real")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    record = Recorder(args.out / "gpu_real_images.json", time.monotonic() + args.budget)
    record.step("machine", 0, machine.describe)
    record.step("cuda_tests", 100, lambda: cuda_tests(args.out))
    projects: dict[str, tuple[Path, dict]] = {}  # each prepared set's project root and params

    def prepare(name: str, make) -> dict:
        root, params, counts = make()
        projects[name] = root, params
        return counts

    for name in attention_variants.SETS:
        make = partial(attention_variants.prepare_set, args.workdir, name)
        record.step(f"{name}: prepare", 30, partial(prepare, name, make))
        if name in projects:
            root, params = projects[name]
            for variant in VARIANTS:
                changed = with_changes(params, attention_variants.VARIANTS[variant])
                record.step(f"{name}: {variant}", 45, partial(measure, root, changed, variant, 0))
    record.step("cells: prepare", 180, partial(prepare, "cells", partial(cell_cracks.prepare, args.workdir / "cells")))
    if "cells" in projects:
        root, params = projects["cells"]
        changed = with_changes(params, cell_cracks.VARIANTS["seed_cnn"])
        for seed in args.seeds:
            record.step(f"cells: defaults, seed {seed}", 60, partial(measure, root, changed, "seed_cnn", seed))
    print(json.dumps(record.results, indent=1)[:6000])


if __name__ == "__main__":
    main()
