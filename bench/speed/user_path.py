"""The README's "Your own images" path, timed end to end, on images in the shape of the issue's
kept-back inspection set.

    python -m bench.speed.user_path [--set cells|borderline] [--image-size 96] [--workdir DIR] [--tag=-avx2]

In a fresh copy of the project (`bench.default_run.copy_project`): 2,600 generated 300-px grey
cells, 31 % `defective`, 75/25 split (`bench.quality.cell_cracks`; `borderline`: with 15 % of them
labelled either way, `bench.quality.cell_cracks_borderline`) are built outside it and then, as
the README says, copied to `data/my_images`, `dvc add`ed and committed; params.yaml's data section
gets the README's line (`source: imagefolder`, `path: data/my_images`, `image_size: 128`, or
`--image-size`, what the guide offers a slow CPU; the
grey cells then train on one channel, `data.channels: auto`), every other param its default. Its
MLflow and Prefect stores are created first and timed apart (a project pays them once), then
`python -m flows.training` (what `make run` runs) is timed: every stage, from validation to
registration, and a no-op `dvc repro` after it.
Writes `bench/results/user_path_<set><tag>.json` (a tag keeps another machine's run apart); prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from bench import RESULTS
from bench.default_run import copy_project, create_stores, default_run, run
from bench.machine import describe
from bench.quality import cell_cracks, cell_cracks_borderline
from pipeline.core.paths import project_root

SETS = {"cells": cell_cracks.build, "borderline": cell_cracks_borderline.build}
DATA = {"source": "imagefolder", "path": "data/my_images", "image_size": 128}


def user_project(workdir: Path, build, data: dict = DATA) -> tuple[Path, dict]:
    """A fresh copy of the project at `workdir/project` holding the images `build` writes, added as
    the README says, with `data` in its params' data section; its root and the seconds of `dvc add`."""
    images = workdir / "my_images"
    shutil.rmtree(images, ignore_errors=True)
    build(images)
    root = copy_project(project_root(), workdir / "project")
    shutil.copytree(images, root / "data" / "my_images")
    add_seconds, _ = run(root, sys.executable, "-m", "dvc", "add", "data/my_images")
    run(root, "git", "add", "data/my_images.dvc", "data/.gitignore")
    run(root, "git", "commit", "-qm", "Add my images")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"].update(data)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root, {"dvc_add_seconds": add_seconds}


def markdown(output: dict) -> str:
    r = output["run"]
    rows = ["| step | wall time |", "|---|---|", f"| `dvc add data/my_images` | {output['dvc_add_seconds']:.1f} s |"]
    rows += [f"| {stage} | {seconds:.1f} s |" for stage, seconds in r["stage_seconds"].items()]
    rows.append(f"| Prefect flow start-up and process exits | {r['flow_overhead_seconds']:.1f} s |")
    total = r["total_seconds"] / 60
    rows.append(f"| **total** (`python -m flows.training`, what `make run` runs) | **{total:.1f} min** |")
    return "\n".join(rows) + (
        f"\n\nSet `{output['set']}`; stores created first: MLflow {output['mlflow_store_seconds']:.1f} s, Prefect "
        f"{output['prefect_database_seconds']:.1f} s. {r['epochs']} epochs; test accuracy {r['test_accuracy']:.1%}, "
        f"defective recall {output['recall_defective']:.1%}; no-op `dvc repro` {r['noop_repro_seconds']:.1f} s."
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.speed.user_path", description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=SETS, default="cells")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "attention-pipeline-user-path")
    parser.add_argument("--image-size", type=int, default=DATA["image_size"], help="data.image_size")
    parser.add_argument("--tag", default="", help="appended to the result's name: user_path_<set><tag>.json")
    args = parser.parse_args()
    data = DATA | {"image_size": args.image_size}
    root, output = user_project(args.workdir, SETS[args.set], data)
    output |= {"set": args.set, "data": data, "machine": describe(), **create_stores(root)}
    output["run"] = default_run(root)
    evaluation = json.loads((root / "metrics" / "eval.json").read_text())
    output["recall_defective"] = evaluation["per_class"]["defective"]["recall"]
    (RESULTS / f"user_path_{args.set}{args.tag}.json").write_text(json.dumps(output, indent=2) + "\n")
    print(markdown(output))


if __name__ == "__main__":
    main()
