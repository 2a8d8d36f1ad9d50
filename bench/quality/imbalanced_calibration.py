"""Probabilities of a rare class: does a model trained with balanced class weights say how often an
image is of it? Temperature alone (the train stage before 2026-12-05) against the weights' pull
taken out, then temperature (since).

    python -m bench.quality.imbalanced_calibration [--seeds 0] [--sets shirts-10,shirts-31] [--workdir DIR]

Real images, imbalanced: Fashion-MNIST's shirts (rare) against its T-shirts and tops, the pair its
models confuse most, written as an image folder at 10 % and 31 % shirts (`SETS`): the training
split's images of both classes at that share (all 6,000 T-shirts, the shirts cut to the share; the
pipeline's own 10 % for validation), the test split's 1,000 T-shirts and as many shirts as keep the
share. Every param at its default except the data section (the defaults weigh the classes
`balanced` and calibrate), in a fresh copy of the project.

`compare` scores the test split, as the model file answers and with temperature alone fitted on
the same validation logits: log loss, Brier score, the top class's calibration error, the classwise
one, each class's mean probability against its share, and the images whose rare-class probability
is 0.4-0.6 ("even odds"): how many, and how often they are of it. `bench.quality.cell_cracks_borderline`
adds the same figures to its runs. Writes `bench/results/imbalanced_calibration.json`; prints a
markdown table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench import RESULTS, names_of, seed_list
from bench.quality.neon_crowns import measure, project_with
from pipeline.core.paths import ProjectPaths, project_root
from pipeline.data import fashion_mnist
from pipeline.data.splits import load_split
from pipeline.model.calibration import calibration_error, class_calibration_error, fit_temperature
from pipeline.model.model_file import load_model
from pipeline.training.runtime import predict_batches, select_runtime

COMMON, RARE = "T-shirt_top", "Shirt"
SETS = {"shirts-10": 0.10, "shirts-31": 0.31}  # the rare class's share of each split
EVEN = (0.4, 0.6)  # "even odds": the band of rare-class probabilities whose images are counted


def build(target: Path, share: float) -> dict[str, dict[str, int]]:
    """Write Fashion-MNIST's T-shirts and shirts to `target/{train,test}/{class}/*.png`, the shirts
    cut to `share` of each split; images per split and class."""
    source, counts = project_root() / "data" / "fashion-mnist", {}
    common_index, rare_index = fashion_mnist.CLASSES.index(COMMON), fashion_mnist.CLASSES.index(RARE)
    for split in ("train", "test"):
        images, labels = fashion_mnist.read_split(source, split)
        common = np.flatnonzero(labels == common_index)
        rare = np.flatnonzero(labels == rare_index)[: round(len(common) * share / (1 - share))]
        for name, chosen in ((COMMON, common), (RARE, rare)):
            folder = target / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in chosen:
                Image.fromarray(images[index]).save(folder / f"{index:05d}.png")
            counts.setdefault(split, {})[name] = len(chosen)
    return counts


def scores(probabilities: np.ndarray, labels: np.ndarray, rare: int) -> dict:
    """Log loss, Brier score, calibration errors, the rare class's mean probability and share, and
    the even-odds band's images and how often they are of the rare class."""
    picked = probabilities[np.arange(len(labels)), labels]
    band = (probabilities[:, rare] >= EVEN[0]) & (probabilities[:, rare] <= EVEN[1])
    tensors = torch.from_numpy(probabilities), torch.from_numpy(labels)
    return {
        "log_loss": float(-np.log(np.clip(picked, 1e-12, None)).mean()),
        "brier": float(((probabilities - np.eye(probabilities.shape[1])[labels]) ** 2).sum(1).mean()),
        "ece": calibration_error(*tensors), "class_ece": class_calibration_error(*tensors),
        "rare_mean_probability": float(probabilities[:, rare].mean()), "rare_share": float((labels == rare).mean()),
        "even_images": int(band.sum()), "even_rare_share": float((labels[band] == rare).mean()) if band.any() else None,
    }  # fmt: skip


def fit_temperature_and_bias(
    logits: torch.Tensor, labels: torch.Tensor, steps: int = 200
) -> tuple[float, torch.Tensor]:  # fmt: skip
    """Bias-corrected temperature scaling (Alexandari et al. 2020): T and one bias per class that
    minimise the cross-entropy of `logits` / T + bias on `labels` (the bias centred)."""
    log_t, bias = torch.zeros((), requires_grad=True), torch.zeros(logits.shape[1], requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t, bias], lr=0.1, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp() + bias, labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp()), (bias - bias.mean()).detach()


def compare(root: Path) -> dict:
    """The test split's `scores` of the model trained at `root`, as its file answers (`served_`), with
    temperature alone fitted on the validation split's logits (`temperature_alone_`), and with a
    temperature and a bias per class fitted there (`bias_`, tried)."""
    paths = ProjectPaths(root)
    model, info = load_model(paths.model_file)
    runtime, raw, labels = select_runtime("cpu"), {}, {}
    for name in ("val", "test"):
        split = load_split(paths.processed, name)
        logits = predict_batches(model, split.images, runtime.scoring_batch(split.images), runtime).logits.float()
        raw[name], labels[name] = (logits - info.offset) * info.temperature, split.labels  # before calibration
    rare = int(np.bincount(labels["test"].numpy()).argmin())
    alone = fit_temperature(raw["val"], labels["val"])
    served = (raw["test"] / info.temperature + info.offset).softmax(1).numpy()
    figures = {"temperature_alone": alone, "temperature": info.temperature, "weights": info.rule.weights}
    bias_temperature, bias = fit_temperature_and_bias(raw["val"], labels["val"])
    figures |= {"bias_temperature": bias_temperature, "bias": bias.tolist(), "offset": info.offset.tolist()}
    arms = {
        "served_": served,
        "temperature_alone_": (raw["test"] / alone).softmax(1).numpy(),
        "bias_": (raw["test"] / bias_temperature + bias).softmax(1).numpy(),
    }
    for prefix, probabilities in arms.items():
        figures |= {prefix + key: value for key, value in scores(probabilities, labels["test"].numpy(), rare).items()}
    return figures


def markdown(output: dict) -> str:
    rows = [
        "| set | seed | test accuracy | recall rare / common | calibration | log loss | Brier | ECE, top class "
        "| ECE, classwise | rare class: mean probability (share) | probability 0.4–0.6: images, share rare |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in output["runs"]:
        arms = (
            ("temperature_alone_", f"temperature alone (T = {r['temperature_alone']:.2f})"),
            ("served_", f"the weights' pull out, then T = {r['temperature']:.2f}"),
            ("bias_", f"T = {r['bias_temperature']:.2f} and a bias per class (tried)"),
        )
        for prefix, name in arms:
            even = r[f"{prefix}even_rare_share"]
            rows.append(
                f"| {r['defaults']} | {r['seed']} | {r['test_accuracy']:.1%} | {r['recall_rare']:.1%} / "
                f"{r['recall_common']:.1%} | {name} | {r[f'{prefix}log_loss']:.3f} | {r[f'{prefix}brier']:.3f} "
                f"| {r[f'{prefix}ece']:.1%} | {r[f'{prefix}class_ece']:.1%} "
                f"| {r[f'{prefix}rare_mean_probability']:.1%} ({r[f'{prefix}rare_share']:.1%}) "
                f"| {r[f'{prefix}even_images']}, {'–' if even is None else f'{even:.0%}'} |"
            )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.quality.imbalanced_calibration", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "attention-pipeline-shirts")
    parser.add_argument("--seeds", type=seed_list, default="0", help="the train.seed values, comma-separated")
    parser.add_argument("--sets", type=names_of(SETS), default=",".join(SETS), help=f"of {', '.join(SETS)}")
    args = parser.parse_args()
    path = RESULTS / "imbalanced_calibration.json"
    output: dict = json.loads(path.read_text()) if path.is_file() else {"runs": [], "images": {}}
    for name in args.sets:
        root, params, output["images"][name] = project_with(
            args.workdir / name, name, lambda target, share=SETS[name]: build(target, share), image_size=28, channels=1
        )  # fmt: skip
        for seed in args.seeds:
            figures = measure(root, params, name, seed)
            figures |= {"recall_rare": figures[f"recall_{RARE}"], "recall_common": figures[f"recall_{COMMON}"]}
            figures |= compare(root)
            output["runs"] = [r for r in output["runs"] if (r["defaults"], r["seed"]) != (name, seed)] + [figures]
            print(json.dumps(figures), flush=True)
            path.write_text(json.dumps(output, indent=2) + "\n")
    output["runs"].sort(key=lambda r: (r["defaults"], r["seed"]))
    path.write_text(json.dumps(output, indent=2) + "\n")
    print(markdown(output))


if __name__ == "__main__":
    main()
