"""The generated solar cells as a 12-bit camera stores them: does reading them at their own depth matter?

    python -m bench.quality.cell_cracks_12bit [--seeds 0] [--variants bit_depth-auto,read-as-16-bit]

Electroluminescence, X-ray and many machine-vision cameras write 12 bits (0..4,095) into 16-bit
files. This writes `bench.quality.cell_cracks`' 2,600 cells that way (the same cells, the same
split and boxes) and trains with the defaults (`data.bit_depth: auto`, which reads them as
12-bit) and with `data.bit_depth: 16`, which reads them as the pipeline did before: 16 of 256
grey levels. Writes `bench/results/cell_cracks_12bit.json`; prints a markdown table.
"""

from __future__ import annotations

from pathlib import Path

from bench.quality import cell_cracks
from bench.quality.neon_crowns import project_with

VARIANTS = {
    "bit_depth-auto": {},  # the defaults: 12-bit, from the training split's brightest sample
    "read-as-16-bit": {"data": {"bit_depth": 16}},  # the full 16-bit range: 4,096 levels onto 16
}


def prepare(project: Path) -> tuple[Path, dict, dict]:
    """A fresh copy of this project with the 12-bit cells built, validated and preprocessed at 128 px."""
    return project_with(
        project, "cell-cracks-12bit", lambda target: cell_cracks.build(target, bits=12), image_size=128, channels=1
    )  # fmt: skip


def main() -> None:
    cell_cracks.variants_main("bench.quality.cell_cracks_12bit", __doc__, "attention-pipeline-cells-12bit",
                              ",".join(VARIANTS), VARIANTS, prepare, cell_cracks.markdown)  # fmt: skip


if __name__ == "__main__":
    main()
