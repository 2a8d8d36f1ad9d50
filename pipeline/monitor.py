"""Watch what the served model is asked: the recent window of the prediction log against a reference.

    python -m pipeline.monitor            (one line; the flow around it: python -m flows.monitoring)

The window is the last `monitoring.window_hours` of the log's answers by the registry's current
champion (other versions' answers are left out: a new champion starts a fresh window). The
reference is the validation and test splits (at most REFERENCE_IMAGES) as that same model answers
them, computed once per champion version and images: the run that computes it logs it to MLflow
(`reference.parquet`, tag `reference`) and later runs read it back. `pipeline/monitoring/drift.py`
compares them (Evidently: answered classes, probabilities, novelty, the images' brightness, contrast
and sharpness, embeddings) and the share of "unknown" answers is counted. The verdict:
- `no verdict`: fewer than `monitoring.min_records` answers in the window;
- `drift`: the embeddings drifted (domain classifier ROC AUC over `monitoring.embedding_auc` and
  over what chance gives that few answers: `drift.chance_auc`), the answered classes, the novelty
  scores or the images' brightness, contrast or sharpness moved (a distance of 0.1 or more that
  chance gives less than once in 1,000 windows), or the unknown rate passed
  `monitoring.max_unknown_rate`; the reasons are named;
- `ok` otherwise (every distance and test is reported either way).
Writes `reports/monitoring.html` (the verdict and each column's figures, then the Evidently report)
and `metrics/monitoring.json`, logs the verdict and its figures to an MLflow run in the experiment
`<tracking.experiment>-monitoring`, with the report where the verdict is drift (an `ok` run keeps its
figures; the latest report is on disk), and deletes log partitions older than `monitoring.keep_days`.
"""

from __future__ import annotations

import hashlib
import html
import logging
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException

from pipeline.core.config import Config, load_config
from pipeline.core.errors import PipelineError, run_cli
from pipeline.core.files import atomic_path, write_json
from pipeline.core.tracking import connect
from pipeline.data.splits import load_split
from pipeline.model.aliases import current_champion
from pipeline.monitoring import prediction_log
from pipeline.monitoring.drift import CHANCE_P, DISTANCE, compare
from pipeline.monitoring.image_quality import CHANGE, QUALITY, REASON, measure

log = logging.getLogger(__name__)

REFERENCE_IMAGES = 5000  # the reference's size at most
REFERENCE_FILE = "reference.parquet"  # the reference's answers, logged by the monitoring run that computed them
REFERENCE_FORMAT = "1"  # part of the reference's key: change it when `reference_records` changes what a record holds


@dataclass
class Verdict:
    """What one monitoring run found."""

    verdict: str  # no verdict | ok | drift
    reasons: list[str]
    model: str
    version: str | None
    window_start: str
    window_end: str
    records: int
    unknown_rate: float | None = None
    reference_unknown_rate: float | None = None
    figures: dict = field(default_factory=dict)
    pruned: int = 0
    retraining: str | None = None  # what the monitoring flow started, if anything
    reference_from: str | None = None  # the MLflow run whose reference answers were read back (None: computed)

    @property
    def drift(self) -> bool:
        return self.verdict == "drift"

    def line(self) -> str:
        head = f"monitoring {self.model} version {self.version}: {self.verdict}"
        if self.verdict == "no verdict":
            return f"{head}: {self.reasons[0]}"
        rate = f"unknown {self.unknown_rate:.1%} (reference {self.reference_unknown_rate:.1%})"
        auc = self.figures.get("embedding_auc")
        embedding = f", embedding drift ROC AUC {auc:.3f}" if auc is not None else ""
        why = f": {'; '.join(self.reasons)}" if self.reasons else ""
        return f"{head}{why} ({self.records} answers in the window; {rate}{embedding})"


def reference_images(cfg: Config) -> torch.Tensor:
    """The reference's images: the validation and test splits (neither trained on), at most
    REFERENCE_IMAGES of them, drawn seeded in proportion to the splits. Both splits, because a
    reference of a few hundred answers makes the embeddings' domain classifier see drift in noise."""
    splits = [load_split(cfg.paths.processed, name, cfg.train.loader).images for name in ("val", "test")]
    total, generator = sum(len(images) for images in splits), torch.Generator().manual_seed(cfg.data.seed)
    parts = []
    for images in splits:
        take = min(len(images), REFERENCE_IMAGES * len(images) // max(total, 1))
        parts.append(images[torch.randperm(len(images), generator=generator)[:take].sort().values])
    return torch.cat(parts)


def reference_key(name: str, version: str, images: torch.Tensor) -> str:
    """What the reference's answers depend on: the model version, the images' bytes and REFERENCE_FORMAT."""
    digest = hashlib.sha256(f"{name}\0{version}\0{REFERENCE_FORMAT}\0{tuple(images.shape)}\0".encode())
    digest.update(np.ascontiguousarray(images.numpy()).data)
    return digest.hexdigest()[:32]


def reference_records(images: torch.Tensor, uri: str) -> pd.DataFrame:
    """`images` as the model at `uri` answers them, as log records."""
    wrapper = mlflow.pyfunc.load_model(uri)
    info = wrapper.unwrap_python_model().info
    answers = [
        wrapper.predict(images[i : i + 1024].numpy(), params={"embedding": True}) for i in range(0, len(images), 1024)
    ]
    merged = {key: np.concatenate([np.asarray(a[key]) for a in answers]) for key in ("class", "probabilities")}
    for key in ("novelty", "unknown", "embedding"):
        if all(key in a for a in answers):
            merged[key] = np.concatenate([np.asarray(a[key]) for a in answers])
    merged |= measure(images)  # whatever the model's own code: a window that lacks them leaves them out
    return pd.DataFrame(prediction_log.answer_records(merged, info.classes, [""] * len(images)))


def cached_reference(client: mlflow.MlflowClient, experiment_id: str, key: str) -> tuple[pd.DataFrame, str] | None:
    """The reference answers an earlier monitoring run logged under `key`, and that run's id (None: none
    did, or its file cannot be read: the caller computes them again)."""
    runs = client.search_runs([experiment_id], f"tags.reference = '{key}'", max_results=1)
    if not runs:
        return None
    run_id = runs[0].info.run_id
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=REFERENCE_FILE, dst_path=folder)
            return pd.read_parquet(path), run_id
    except (MlflowException, OSError, ValueError) as error:
        log.warning("reference answers of monitoring run %s unreadable (%s); computing them again", run_id, error)
        return None


def run(cfg: Config, now: datetime | None = None) -> Verdict:
    """Judge the window ending `now` (default: now); write the report and figures, log them to MLflow."""
    folder = cfg.prediction_log()
    if folder is None:
        raise PipelineError("params.yaml: monitoring.log is null, so nothing is logged to monitor; set a folder")
    experiment_id = connect(cfg, f"{cfg.tracking.experiment}-monitoring")
    client = mlflow.MlflowClient()
    name = cfg.register.model_name
    champion = current_champion(client, name)
    if champion is None:
        raise PipelineError(f"{name}: no champion in the registry to monitor; run the pipeline first ('make run')")
    end = now or datetime.now(UTC)
    start = end - timedelta(hours=cfg.monitoring.window_hours)
    window = prediction_log.read(folder, start, end).to_pandas()
    window = window[(window["model"] == name) & (window["version"] == str(champion.version))]
    verdict = Verdict("no verdict", [], name, str(champion.version), start.isoformat(), end.isoformat(), len(window))
    verdict.pruned = len(prediction_log.prune(folder, cfg.monitoring.keep_days, end.date()))
    computed = None  # the reference answers computed by this run, and their key
    if len(window) < cfg.monitoring.min_records:
        verdict.reasons.append(f"{len(window)} answers in the window, fewer than monitoring.min_records")
    elif window["unknown"].isna().all() and window["embedding"].isna().all():
        verdict.reasons.append(
            f"version {champion.version} logs neither 'unknown' nor embeddings (a model from before them): "
            "retrain it to monitor it"
        )
    else:
        images = reference_images(cfg)
        key = reference_key(name, str(champion.version), images)
        cached = cached_reference(client, experiment_id, key)
        if cached is None:
            reference = reference_records(images, f"models:/{name}/{champion.version}")
            computed = reference, key
        else:
            reference, verdict.reference_from = cached
        judge(cfg, verdict, window, reference)
    write_json(cfg.paths.metrics / "monitoring.json", asdict(verdict))
    tags = {"verdict": verdict.verdict, "model_version": verdict.version, "mlflow.source.name": "pipeline/monitor.py"}
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"monitoring {end:%Y-%m-%d %H:%M}",
                          tags=tags):  # fmt: skip
        mlflow.log_metric("records", verdict.records)
        if computed is not None:  # for the next runs on this champion and these images
            with tempfile.TemporaryDirectory() as folder:
                computed[0].to_parquet(Path(folder) / REFERENCE_FILE)
                mlflow.log_artifact(str(Path(folder) / REFERENCE_FILE))
            mlflow.set_tag("reference", computed[1])
        if verdict.verdict != "no verdict":
            numbers = {k: v for k, v in verdict.figures.items() if isinstance(v, float)}
            mlflow.log_metrics({"unknown_rate": verdict.unknown_rate, **numbers})
        if verdict.drift:  # the report: 3.9 MB, 3.5 of it Evidently's script; hourly `ok` ones would add 34 GB a year
            mlflow.log_artifact(str(cfg.paths.reports / "monitoring.html"))
        mlflow.log_dict(asdict(verdict), "monitoring.json")
    log.info("%s", verdict.line())
    return verdict


def judge(cfg: Config, verdict: Verdict, window: pd.DataFrame, reference: pd.DataFrame) -> None:
    """Compare the window with the reference: figures, report, verdict and its reasons."""
    settings = cfg.monitoring
    report = compare(reference, window, settings.embedding_auc)
    verdict.figures = report.figures
    if window["unknown"].notna().all() and reference["unknown"].notna().all():
        verdict.unknown_rate = float(window["unknown"].mean())
        verdict.reference_unknown_rate = float(reference["unknown"].mean())
        if verdict.unknown_rate > settings.max_unknown_rate:
            verdict.reasons.append(
                f"{verdict.unknown_rate:.1%} of answers were 'unknown' (monitoring.max_unknown_rate "
                f"{settings.max_unknown_rate:.0%}; reference {verdict.reference_unknown_rate:.1%})"
            )
    auc, threshold = report.figures.get("embedding_auc"), report.figures["embedding_auc_threshold"]
    if auc is not None and auc > threshold:
        bar = (
            f"monitoring.embedding_auc {settings.embedding_auc}"
            if threshold == settings.embedding_auc
            else f"{threshold:.3f}, what chance gives {len(reference)} and {len(window)} answers once in 1,000 windows"
        )
        verdict.reasons.append(f"the inputs' embeddings drifted (domain classifier ROC AUC {auc:.3f} > {bar})")
    verdict.reasons += moved_columns(report.figures, window, reference)
    verdict.verdict = "drift" if verdict.reasons else "ok"
    cfg.paths.reports.mkdir(parents=True, exist_ok=True)
    with atomic_path(cfg.paths.reports / "monitoring.html") as temporary:
        temporary.write_text(report.html.replace("<body>", f"<body>{summary_html(verdict)}", 1))


def summary_html(verdict: Verdict) -> str:
    """The verdict at the head of Evidently's report: its reasons, and each column's distance and test
    as the rule reads them (Evidently's own "drift detected" looks at the distance alone)."""
    figures = verdict.figures

    def moved(column: str) -> str:
        if column not in figures["drifted"]:
            return "no"
        return "yes" if column != "probability" else "yes, not a reason (a harder mix of images lowers it too)"

    rows = [
        f"<tr><td>{column}</td><td>{figures[f'{column}_distance']:.3f}</td><td>{figures[f'{column}_p']:.1e}</td>"
        f"<td>{moved(column)}</td></tr>"
        for column in [key.removesuffix("_distance") for key in figures if key.endswith("_distance")]
    ]
    reasons = "".join(f"<li>{html.escape(reason)}</li>" for reason in verdict.reasons) or "<li>nothing moved</li>"
    auc = figures.get("embedding_auc")
    lines = (
        f"<p>Embeddings: domain classifier ROC AUC {auc:.3f}, drift above {figures['embedding_auc_threshold']:.3f}.</p>"
        if auc is not None
        else ""
    )
    if verdict.unknown_rate is not None:
        lines += f"<p>Unknown answers: {verdict.unknown_rate:.1%} (reference {verdict.reference_unknown_rate:.1%}).</p>"
    return (
        '<div style="font-family: sans-serif; margin: 16px 24px">'
        f"<h2>Verdict: {verdict.verdict} ({verdict.records} answers of {html.escape(verdict.model)} version "
        f"{verdict.version}, {verdict.window_start} to {verdict.window_end})</h2><ul>{reasons}</ul>{lines}"
        f"<p>A column moved when its distance is {DISTANCE} or more <b>and</b> its test gives p &lt; {CHANCE_P} "
        "(chance moves it that far less often). Evidently's panels below say "
        '"drift detected" by the distance alone.</p>'
        '<table border=1 cellpadding=4 style="border-collapse: collapse"><tr><th>column</th><th>distance</th>'
        f"<th>p</th><th>moved</th></tr>{''.join(rows)}</table></div>"
    )


def moved_columns(figures: dict, window: pd.DataFrame, reference: pd.DataFrame) -> list[str]:
    """Why the answered classes, the novelty scores or the images' quality count as moved (`drift.compare`'s
    `drifted`; a move of the answered class's probability alone is not a reason)."""
    reasons = []
    if "class" in figures["drifted"]:
        now, before = (frame["class"].value_counts(normalize=True) for frame in (window, reference))
        change = now.sub(before, fill_value=0).idxmax()  # the class whose share grew most
        reasons.append(
            f"the answered classes moved ({change} {now.get(change, 0):.1%} of answers, {before.get(change, 0):.1%} "
            f"in the reference; Jensen-Shannon distance {figures['class_distance']:.3f}, "
            f"χ² p = {figures['class_p']:.1e})"
        )
    for column in ("novelty", *QUALITY):
        if column not in figures["drifted"]:
            continue
        now, before = float(window[column].median()), float(reference[column].median())
        what = "the novelty scores moved" if column == "novelty" else f"{REASON} {CHANGE[column][now > before]}"
        reasons.append(
            f"{what} (median {column} {now:.3g}, {before:.3g} in the reference; normed Wasserstein distance "
            f"{figures[f'{column}_distance']:.3f}, Kolmogorov-Smirnov p = {figures[f'{column}_p']:.1e})"
        )
    return reasons


def main() -> None:
    verdict = run(load_config())
    print(verdict.line())


if __name__ == "__main__":
    run_cli(main)
