"""What `make tune` gives on a real imbalanced set: the small NEON crowns, tuned, then tested.

    pip install --no-deps deepforest==2.1.0          # its wheel ships the images (bench/quality/neon_crowns.py)
    python -m bench.quality.tuned [--minutes 30] [--trials 20] [--seeds 0,1] [--augment] [--fixed KEY ...]

The `small` set of `bench.quality.attention_variants` (96-px patches, three crown patches to one
open) in a fresh project copy, validated and preprocessed; `python -m pipeline.tune --write` with
the budget given (the defaults of `make tune`), `--augment` and `--fixed` passed on, on the
validation split alone; then the train and evaluate stages with the params it wrote, once per
`train.seed`. Reported: the study's trials (the first is params.yaml's own settings), the settings
it wrote, and each seed's test figures, to set beside the defaults' (`attention_variants`' `gated`
rows, same seeds). Writes the study under its name (`defaults` or `augment`, then `-fixed-` and the
fixed keys) in `bench/results/tuned.json` (other studies there kept); prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml

from bench import RESULTS, seed_list
from bench.default_run import run
from bench.quality.attention_variants import prepare_set
from bench.quality.neon_crowns import localisation_cells, measure
from pipeline import tune

SET = "small"


def markdown(output: dict) -> str:
    study = output["study"]
    rows = [
        f"{output['name']}: {len(study['trials'])} trials in {output['tune_seconds'] / 60:.1f} min, best "
        f"{study['metric']} {study['best_value']:.3f} (params.yaml's own: {study['trials'][0]['value']:.3f}); "
        f"written: {output['written'] or 'nothing'}",
        "",
        "| seed | test accuracy | balanced accuracy | pointing game: attention / Grad-CAM (centre) "
        "| mass in box: attention / Grad-CAM (area) | train |",
        "|---|---|---|---|---|---|",
    ]
    for r in output["runs"]:
        rows.append(
            f"| {r['seed']} | {r['test_accuracy']:.1%} | {r['balanced_accuracy']:.1%} "
            f"{localisation_cells(r)}| {r['train_seconds']:.0f} s |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.quality.tuned", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "attention-pipeline-tuned")
    parser.add_argument("--minutes", default="30", help="the study's budget (make tune's: 30)")
    parser.add_argument("--trials", default="20", help="and its most trials (make tune's: 20)")
    parser.add_argument("--fixed", action="append", default=[], choices=[*tune.SPACE, *tune.CHOICES],
                        metavar="KEY", help="passed to pipeline.tune (repeatable)")  # fmt: skip
    parser.add_argument("--augment", action="store_true", help="passed to pipeline.tune")
    parser.add_argument(
        "--seeds", type=seed_list, default="0,1", help="the train.seed values of the tuned runs, comma-separated"
    )
    args = parser.parse_args()
    root, before, counts = prepare_set(args.workdir, SET)
    passed = [f"--fixed={key}" for key in args.fixed] + (["--augment"] if args.augment else [])
    seconds, _ = run(root, sys.executable, "-m", "pipeline.tune", "--minutes", args.minutes,
                     "--trials", args.trials, "--write", *passed)  # fmt: skip
    study = json.loads((root / "reports" / "tuning.json").read_text())
    params = yaml.safe_load((root / "params.yaml").read_text())
    written = {
        f"{section}.{key}": value
        for section in ("model", "train")
        for key, value in params[section].items()
        if value != before[section][key] and not isinstance(value, dict)
    } | {
        f"train.augment.{key}": value
        for key, value in params["train"]["augment"].items()
        if value != before["train"]["augment"][key]
    }  # fmt: skip
    name = ("augment" if args.augment else "defaults") + ("-fixed-" + ",".join(args.fixed) if args.fixed else "")
    output = {"name": name, "tune_seconds": round(seconds, 1), "study": study, "written": written}
    output["runs"] = [measure(root, params, name, seed) for seed in args.seeds]
    path = RESULTS / "tuned.json"
    results = json.loads(path.read_text()) if path.is_file() else {"set": SET, "studies": {}}
    results["images"], results["studies"][name] = counts, output
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(output))


if __name__ == "__main__":
    main()
