"""Attention variants on real images with human-drawn boxes: which one looks where the object is.

    pip install --no-deps deepforest==2.1.0          # its wheel ships the images (bench/quality/neon_crowns.py)
    python -m bench.quality.attention_variants [--seeds 0,1] [--variants soft,gated,...] [--sets crowns,small]

The NEON tree crowns of `bench.quality.neon_crowns`, cut two ways: `crowns`, its 64-px patches
(crowns up to 56 px, so a patch is mostly crown and the centre point is a strong guess), and
`small`, 96-px patches around crowns of at most 48 px at a random place (the centre point finds
39 % of them). On each, the project's train and evaluate stages run with the defaults of
`params.yaml` except the data section and one attention variant: the soft attention as designed,
Ilse et al.'s gated scores, several heads (soft or gated), an entropy term that asks each map to
commit to a region, a finer map (stride 2); with gated scores, the last epoch against the one with the lowest
validation loss (`train.keep`) and with the docs' augmentation for top-down images (`top-down`:
vertical flips, quarter turns) and with its classes balanced otherwise (`balance-loss`: the weights
in the loss instead of sampled epochs; `no-class-weights`). Reported: test accuracy; the pointing
game and the attention mass in the box, beside Grad-CAM's on the same model and the centre point's;
the deletion AUC in the attention's, Grad-CAM's and a random order (lower: more faithful). Writes
`bench/results/attention_variants.json` (a run already there for another set, variant or seed is
kept); prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bench import RESULTS, names_of, seed_list
from bench.quality.neon_crowns import localisation_cells, measure, prepare, with_changes

SETS = {  # name: (patch side, largest crown box) in px
    "crowns": (64, 56),
    "small": (96, 48),
}
VARIANTS = {
    "soft": {"model": {"attention": "soft"}},
    "gated": {"model": {"attention": "gated"}},
    "heads-4": {"model": {"attention": "soft", "attention_heads": 4}},
    "gated-heads-4": {"model": {"attention": "gated", "attention_heads": 4}},
    "entropy-0.2": {"model": {"attention": "soft"}, "train": {"attention_entropy": 0.2}},
    "stride-2": {"model": {"attention": "soft", "output_stride": 2}},
    # which epoch's weights: the default's (last) against the lowest validation loss, paired on one machine
    "keep-last": {"model": {"attention": "gated"}, "train": {"keep": "last"}},
    "keep-best": {"model": {"attention": "gated"}, "train": {"keep": "best"}},
    # the docs' augmentation for top-down images, on the image-folder default (gated)
    "top-down": {"model": {"attention": "gated"}, "train": {"augment": {"vflip": True, "rot90": True}}},
    # how the classes are balanced on the image-folder default (gated): sampling is the default
    "balance-loss": {"model": {"attention": "gated"}, "train": {"balance": "loss"}},
    "no-class-weights": {"model": {"attention": "gated"}, "train": {"class_weights": "none"}},
}


def prepare_set(workdir: Path, name: str) -> tuple[Path, dict, dict]:
    """The set `name` in a fresh project copy, validated and preprocessed (`neon_crowns.prepare`)."""
    patch, max_box = SETS[name]
    return prepare(workdir / name / "project", patch, max_box)


FIGURES = ("test_accuracy", "pointing_game", "gradcam_pointing_game", "pointing_game_centre_baseline",
           "box_attention_mass", "gradcam_box_mass", "box_area_share", "deletion_auc_attention",
           "deletion_auc_gradcam", "deletion_auc_random", "train_seconds")  # fmt: skip


def summary(runs: list[dict]) -> list[dict]:
    """Each set and variant's figures, averaged over its seeds."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["set"], r["variant"]), []).append(r)
    return [
        {"set": s, "variant": v, "seed": f"mean of {len(rs)}", **{k: sum(r[k] for r in rs) / len(rs) for k in FIGURES}}
        for (s, v), rs in groups.items()
    ]


def markdown(output: dict) -> str:
    rows = [
        "| set | variant | seed | test accuracy | pointing game: attention / Grad-CAM (centre) "
        "| mass in box: attention / Grad-CAM (area) | deletion AUC: attention / Grad-CAM (random) | train |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary(output["runs"]) + output["runs"]:
        rows.append(
            f"| {r['set']} | {r['variant']} | {r['seed']} | {r['test_accuracy']:.1%} "
            f"{localisation_cells(r)}"
            f"| {r['deletion_auc_attention']:.3f} / {r['deletion_auc_gradcam']:.3f} ({r['deletion_auc_random']:.3f}) "
            f"| {r['train_seconds']:.0f} s |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.quality.attention_variants", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "attention-pipeline-variants")
    parser.add_argument("--seeds", type=seed_list, default="0,1", help="the train.seed values, comma-separated")
    parser.add_argument("--sets", type=names_of(SETS), default=",".join(SETS), help=f"of {', '.join(SETS)}")
    parser.add_argument(
        "--variants", type=names_of(VARIANTS), default=",".join(VARIANTS), help=f"of {', '.join(VARIANTS)}"
    )
    args = parser.parse_args()
    path = RESULTS / "attention_variants.json"
    output: dict = json.loads(path.read_text()) if path.is_file() else {"sets": {}, "runs": []}
    for name in args.sets:
        root, params, counts = prepare_set(args.workdir, name)
        output["sets"][name] = {"patch": SETS[name][0], "max_box": SETS[name][1], "images": counts}
        for seed in args.seeds:
            for variant in args.variants:
                figures = {
                    "set": name,
                    "variant": variant,
                    **measure(root, with_changes(params, VARIANTS[variant]), variant, seed),
                }
                same = (name, variant, seed)
                output["runs"] = [r for r in output["runs"] if (r["set"], r["variant"], r["seed"]) != same] + [figures]
                print(json.dumps(figures), flush=True)
                path.write_text(json.dumps(output, indent=2) + "\n")
    output["runs"].sort(key=lambda r: (list(SETS).index(r["set"]), r["seed"], list(VARIANTS).index(r["variant"])))
    path.write_text(json.dumps(output, indent=2) + "\n")
    print(markdown(output))


if __name__ == "__main__":
    main()
