"""Classify image files, one or a folder of 50,000, and optionally write their attention overlays.

    python -m pipeline.predict FILE_OR_FOLDER... [--out predictions.csv] [--heatmap DIR]
                               [--model models:/NAME@champion | PATH.pt | PATH.onnx] [--top-k 5]

Folders are read recursively; files are decoded in parallel processes (the one decoding function
of validation and preprocessing), batch by batch, with a progress bar. Without `--out` each image
is a tab-separated line on stdout (path, class, probability, the overlay's path with `--heatmap`,
and "unknown" last when the image is unlike anything the model was trained on); with it, a CSV row (path, class,
probability, novelty, unknown, the next classes of the top k with theirs, error). A file that cannot be read is
listed with its reason, not fatal. A rerun with the same `--out` skips the files already in it:
an interrupted run resumes, a finished one does nothing. Every answer also goes to the prediction log
(`monitoring.log`; `--no-log`: not these), which the monitoring flow reads.

The default model is the registry's champion (`register.model_name` in params.yaml), run like the
evaluate stage runs it (`train.device`, `train.precision`: bf16 where the hardware computes it
natively; `--precision fp32` gives exactly the served model's figures). An `.onnx` file (the
export stage's) runs in onnxruntime: classifying then needs neither PyTorch nor MLflow.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.core.config import Config, load_config
from pipeline.core.errors import PipelineError, first_line, run_cli
from pipeline.core.files import atomic_path
from pipeline.core.paths import project_root
from pipeline.data.image_batches import ImageFile, decoded_batches, list_files
from pipeline.data.images import WIDE_BITS, decode_image
from pipeline.model.decision import Decision, top_classes
from pipeline.model.unknown import Novelty


@dataclass(frozen=True)
class ImagePrediction:
    path: Path
    label: str
    probability: float
    attention: np.ndarray  # h×w, sums to 1


@dataclass(frozen=True)
class Classifier:
    """A model's image format and classes, and a function from uint8 images N×C×H×W to its outputs:
    `probabilities` N×classes, `attention` N×h×w and, where the model has them, `novelty` N and
    `embedding` N×C."""

    classes: list[str]
    image_size: int
    channels: int
    run: Callable[[np.ndarray], dict[str, np.ndarray]]
    rule: Decision = Decision()  # how probabilities become the answered class
    detector: Novelty | None = None  # when an image is "unknown" (None: a model without a detector)
    name: str = ""  # for the prediction log: the registered model's name (or the file's)
    version: str | None = None  # and its version (None for a file)
    bit_depth: int = WIDE_BITS  # 16-bit images are read as this many bits


def onnx_classifier(path: Path) -> Classifier:
    """The export stage's ONNX file in onnxruntime."""
    from pipeline.model import onnx_file

    if not path.is_file():
        raise PipelineError(f"{path}: no such ONNX file; run the export stage first ('dvc repro export')")
    try:
        loaded = onnx_file.session(path)
        classes, size, channels, bits = onnx_file.image_format(loaded)
        rule = Decision.from_dict(onnx_file.decision(loaded))
        detector = Novelty.from_dict(onnx_file.novelty(loaded))
    except Exception as error:  # onnxruntime raises its own types for foreign or damaged files
        reason = type(error).__name__
        raise PipelineError(f"{path}: not an ONNX export of this project ({reason}); rerun export") from None

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        outputs = onnx_file.predict(loaded, images, len(images))
        logits = outputs.pop("logits")
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return {"probabilities": shifted / shifted.sum(axis=1, keepdims=True), **outputs}

    return Classifier(classes, size, channels, run, rule, detector, path.name, bit_depth=bits)


def torch_classifier(cfg: Config, reference: str, precision: str) -> Classifier:
    """A model from a `models:/` (or `runs:/`) MLflow URI, or from a model file path, in PyTorch on
    `train.device`, in `precision` (auto: bf16 where the hardware computes it natively)."""
    import torch

    from pipeline.model.model_file import load_model
    from pipeline.training.runtime import predict_batches, select_runtime

    if reference.startswith(("models:/", "runs:/")):
        import mlflow
        from mlflow.exceptions import MlflowException

        from pipeline.core.tracking import connect

        connect(cfg)
        try:
            wrapper = mlflow.pyfunc.load_model(reference).unwrap_python_model()
        except MlflowException as error:
            raise PipelineError(
                f"{reference}: cannot load ({first_line(error)}); run the pipeline or pass --model PATH"
            ) from None
        model, info = wrapper.model, wrapper.info
        from pipeline.serve import describe

        about = describe(reference)
        name, version = about["name"], about["version"]
    else:
        model, info = load_model(Path(reference))
        name, version = Path(reference).name, None

    runtime = select_runtime(cfg.train.device, precision, backbone=info.model_config["backbone"])
    model = runtime.prepare(model)

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        pixels = torch.from_numpy(images)
        out = predict_batches(model, pixels, runtime.scoring_batch(pixels, len(pixels)), runtime)
        outputs = {"probabilities": out.logits.softmax(dim=1), "attention": out.attention, "embedding": out.embedding}
        if out.novelty is not None:
            outputs["novelty"] = out.novelty
        return {key: value.numpy() for key, value in outputs.items()}

    return Classifier(
        info.classes, info.image_size, info.channels, run, info.rule, info.detector, name, version,
        bit_depth=getattr(info, "bit_depth", WIDE_BITS),  # older registered versions bring older code
    )  # fmt: skip


def load_classifier(cfg: Config, reference: str | None, precision: str | None = None) -> Classifier:
    """`reference` (default: the registry's champion) as a classifier: ONNX files in onnxruntime,
    everything else in PyTorch in `precision` (default: `train.precision`)."""
    reference = reference or f"models:/{cfg.register.model_name}@champion"
    if reference.endswith(".onnx"):
        return onnx_classifier(Path(reference))
    return torch_classifier(cfg, reference, precision or cfg.train.precision)


def overlay_names(files: list[ImageFile]) -> dict[ImageFile, Path]:
    """Each file's overlay, relative to the `--heatmap` folder: `<its folders>/<stem>_attention.png`;
    `<stem>_<extension>_attention.png` where the folder holds another image of that stem (a.jpg and
    a.png), and `_2`, `_3`… after the stem where inputs given apart hold the same name."""
    stems = Counter((file.name.parent, file.name.stem.lower()) for file in files)
    taken: Counter = Counter()
    names = {}
    for file in files:
        stem, folder = file.name.stem, file.name.parent
        if stems[(folder, stem.lower())] > 1:
            stem += "_" + file.name.suffix.lstrip(".")
        taken[(folder, stem.lower())] += 1
        count = taken[(folder, stem.lower())]
        names[file] = folder / f"{stem}{f'_{count}' if count > 1 else ''}_attention.png"
    return names


def write_heatmap(prediction: ImagePrediction, folder: Path, name: Path | None = None, bits: int = WIDE_BITS) -> Path:
    """Save the image (a 16-bit one read as `bits`-bit) with its attention map overlaid, at the
    image's own resolution, as `<folder>/<name>` (default: `<the file's stem>_attention.png`)."""
    from pipeline.core.overlay import overlay

    target = folder / (name or f"{prediction.path.stem}_attention.png")
    target.parent.mkdir(parents=True, exist_ok=True)
    picture = overlay(decode_image(prediction.path, 3, bits=bits), prediction.attention)
    with atomic_path(target) as temporary:
        picture.save(temporary, format="PNG")
    return target


def csv_header(top_k: int) -> list[str]:
    ranks = [column for rank in range(2, top_k + 1) for column in (f"class_{rank}", f"probability_{rank}")]
    return ["path", "class", "probability", "novelty", "unknown", *ranks, "error"]


def done_paths(out: Path, header: list[str]) -> set[str]:
    """The paths an earlier run already wrote to `out` (empty when there is none)."""
    if not out.is_file() or out.stat().st_size == 0:
        return set()
    with out.open(newline="") as handle:
        rows = csv.reader(handle)
        if next(rows, None) != header:
            raise PipelineError(f"{out}: not a predictions file of this model and --top-k; choose another --out")
        return {row[0] for row in rows if row}


def novelty_columns(detector: Novelty | None, novelty: np.ndarray | None, count: int) -> list[tuple[str, str]]:
    """Each image's novelty score and "true"/"false" for unknown, as CSV text (empty without a detector)."""
    if detector is None or novelty is None:
        return [("", "")] * count
    flags = detector.unknown(novelty)
    return [(f"{score:.6f}", "true" if flag else "false") for score, flag in zip(novelty, flags, strict=True)]


@dataclass
class Tally:
    classified: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    skipped: int = 0


def log_batch(folder: Path, classifier: Classifier, batch, outputs: dict, decided: np.ndarray, keep: bool) -> None:
    """Add a batch's answers to the prediction log (`pipeline/monitoring/prediction_log.py`)."""
    from pipeline.monitoring.image_quality import measure
    from pipeline.monitoring.prediction_log import answer_records, input_hash, write

    answer = {"class": [classifier.classes[i] for i in decided], **outputs, **measure(batch.images)}
    if classifier.detector is not None and "novelty" in outputs:
        answer["unknown"] = classifier.detector.unknown(outputs["novelty"])
    files = [file.path.read_bytes() for file in batch.readable]
    records = answer_records(answer, classifier.classes, [input_hash(data) for data in files])
    for record, data in zip(records, files, strict=True):
        record["image"] = data if keep else None
    write(folder, records, "predict", classifier.name, classifier.version)


def classify(
    args: argparse.Namespace, classifier: Classifier, log_folder: Path | None = None, log_images: bool = False
) -> Tally:
    """Run the classifier over the files of `args.inputs`, writing lines or CSV rows as they come (and
    each answer to the prediction log in `log_folder`)."""
    from tqdm import tqdm

    top_k = min(args.top_k, len(classifier.classes))
    header = csv_header(top_k)
    files = list_files(args.inputs, exclude={args.out} if args.out else None)
    if not files:
        raise PipelineError(f"{', '.join(map(str, args.inputs))}: no files to classify in it")
    overlays = overlay_names(files)  # from every file, so that a resumed run names them alike
    tally = Tally()
    if args.out:
        already = done_paths(args.out, header)
        tally.skipped = sum(str(file.path) in already for file in files)
        files = [file for file in files if str(file.path) not in already]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        fresh = not args.out.is_file() or args.out.stat().st_size == 0
        handle = args.out.open("a", newline="")
        writer = csv.writer(handle)
        if fresh:
            writer.writerow(header)
    batches = decoded_batches(
        files, classifier.image_size, classifier.channels, args.batch_size, args.workers, bits=classifier.bit_depth
    )  # fmt: skip
    with tqdm(total=len(files), unit="img", disable=None if args.out else True, file=sys.stderr) as progress:
        for batch in batches:
            rows = []
            if len(batch.images):
                outputs = classifier.run(batch.images)
                probabilities, attention = outputs["probabilities"], outputs["attention"]
                novelty = outputs.get("novelty")
                decided = classifier.rule.classes(probabilities, classifier.classes)
                if log_folder is not None:
                    log_batch(log_folder, classifier, batch, outputs, decided, log_images)
                ranked = top_classes(probabilities, top_k)
                flags = novelty_columns(classifier.detector, novelty, len(decided))
                for file, row, answer, order, maps, (score, unknown) in zip(
                    batch.readable, probabilities, decided, ranked, attention, flags, strict=True
                ):
                    label = classifier.classes[answer]
                    others = [i for i in order if i != answer][: top_k - 1]
                    tops = [value for i in others for value in (classifier.classes[i], f"{row[i]:.6f}")]
                    rows.append([str(file.path), label, f"{row[answer]:.6f}", score, unknown, *tops, ""])
                    if not args.out:
                        line = f"{file.path}\t{label}\t{row[answer]:.4f}"
                        if args.heatmap:
                            prediction = ImagePrediction(file.path, label, float(row[answer]), maps)
                            line += f"\t{write_heatmap(prediction, args.heatmap, overlays[file], classifier.bit_depth)}"
                        print(line + ("\tunknown" if unknown == "true" else ""))
                    elif args.heatmap:
                        write_heatmap(ImagePrediction(file.path, label, float(row[answer]), maps), args.heatmap,
                                      overlays[file], classifier.bit_depth)  # fmt: skip
            for file, reason in batch.unreadable:
                tally.unreadable.append((str(file.path), reason))
                rows.append([str(file.path), "", "", "", "", *[""] * (2 * (top_k - 1)), reason])
                if not args.out:
                    print(f"skipped {file.path}: {reason}", file=sys.stderr)
            tally.classified += len(batch.readable)
            if args.out:
                writer.writerows(rows)
                handle.flush()  # an interrupted run keeps every finished batch
            progress.update(len(batch.files))
    if args.out:
        handle.close()
    return tally


def summary(tally: Tally, seconds: float, out: Path | None) -> str:
    """One line: how many classified and unreadable (the first three named, with why), and the speed."""
    line = f"{tally.classified:,} classified, {len(tally.unreadable):,} unreadable"
    if tally.unreadable:
        line += ": " + "; ".join(f"{path} ({reason})" for path, reason in tally.unreadable[:3])
        line += f" (+{len(tally.unreadable) - 3} more)" if len(tally.unreadable) > 3 else ""
    if tally.skipped:
        line += f"; {tally.skipped:,} already in {out}"
    line += f" ({tally.classified / max(seconds, 1e-9):,.0f} images/s)"
    return line + (f" -> {out}" if out else "")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.predict", description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", type=Path, metavar="FILE_OR_FOLDER", help="image files or folders")
    parser.add_argument(
        "--model", help="models:/NAME@ALIAS, runs:/ID/model, a model file or an ONNX file (default: the champion)"
    )
    parser.add_argument("--out", type=Path, metavar="CSV", help="write a CSV row per image (resumes a partial file)")
    parser.add_argument("--heatmap", type=Path, metavar="DIR", help="write attention overlays into DIR")
    parser.add_argument("--top-k", type=int, default=5, help="classes per image in the CSV (default 5)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--workers", type=int, help="decoding processes (default: one per two cores)")
    parser.add_argument("--no-log", action="store_true", help="keep these answers out of the prediction log")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                        help="PyTorch models (default train.precision; auto: bf16 where native)")  # fmt: skip
    args = parser.parse_args()
    if args.top_k < 1 or args.batch_size < 1 or (args.workers is not None and args.workers < 1):
        raise PipelineError("--top-k, --batch-size and --workers must be at least 1")
    list_files(args.inputs)  # a typo in a path fails before the model loads
    device = str(args.model).endswith(".onnx") and not (project_root() / "params.yaml").is_file()
    cfg = Config() if device else load_config()  # an ONNX file on a device, away from any project: the defaults
    classifier = load_classifier(cfg, args.model, args.precision)
    started = time.perf_counter()
    tally = classify(args, classifier, None if args.no_log else cfg.prediction_log(), cfg.monitoring.log_images)
    seconds = time.perf_counter() - started
    if args.out or tally.unreadable:
        print(summary(tally, seconds, args.out), file=sys.stderr)
    if tally.unreadable and not tally.classified and not tally.skipped:
        raise PipelineError("no file could be read as an image; see the reasons above")


if __name__ == "__main__":
    run_cli(main)
