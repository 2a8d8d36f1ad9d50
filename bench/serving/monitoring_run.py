"""The hourly monitoring run's time, as cron starts it: a new process each run, on the project's
champion, with the reference's answers read back from MLflow after the first run answered them.

    PYTHONPATH=. python -m bench.serving.monitoring_run [--root .] [--runs 3] [--window 1000]
                                                        [--out bench/results/monitoring_run.json]

The champion answers the last `--window` test images into a prediction log in a temporary folder (as
the server logs them). `pipeline.monitor` then judges that log `--runs` times, each in a new process
(`monitoring.log` pointed at it; the runs land in the project's monitoring experiment), and the
reference's parts are timed alone: drawing its images, answering them (what a run without the read-back
does every hour) and reading the answers back.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow

from bench import RESULTS
from pipeline import monitor
from pipeline.core.config import load_config
from pipeline.core.tracking import connect
from pipeline.data.splits import load_split
from pipeline.model.aliases import current_champion
from pipeline.monitoring import prediction_log

JUDGE = (
    "import sys; from pipeline import monitor; from pipeline.core.config import load_config; "
    "print(monitor.run(load_config(overrides={'monitoring.log': sys.argv[1]})).reference_from)"
)


def timed(work):
    started = time.perf_counter()
    result = work()
    return result, round(time.perf_counter() - started, 2)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serving.monitoring_run", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path.cwd())
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--window", type=int, default=1000, help="answers in the window")
    parser.add_argument("--out", type=Path, default=RESULTS / "monitoring_run.json")
    args = parser.parse_args()
    root = args.root.resolve()
    cfg = load_config(root / "params.yaml")
    experiment_id = connect(cfg, f"{cfg.tracking.experiment}-monitoring")
    client = mlflow.MlflowClient()
    name = cfg.register.model_name
    version = str(current_champion(client, name).version)
    uri = f"models:/{name}/{version}"
    with tempfile.TemporaryDirectory() as log:
        window = monitor.reference_records(load_split(cfg.paths.processed, "test").images[-args.window :], uri)
        prediction_log.write(Path(log), window.to_dict("records"), "serve", name, version)
        env = {**os.environ, "PIPELINE_ROOT": str(root)}
        runs = []
        for _ in range(args.runs):
            done, seconds = timed(
                lambda: subprocess.run(
                    [sys.executable, "-c", JUDGE, log], cwd=root, env=env, check=True, capture_output=True, text=True
                )  # fmt: skip
            )
            runs.append({"seconds": seconds, "reference_from": done.stdout.strip().splitlines()[-1]})
            print(f"monitoring run {len(runs)}: {seconds} s (reference read back from {runs[-1]['reference_from']})")
    images, drawing = timed(lambda: monitor.reference_images(cfg))
    _, answering = timed(lambda: monitor.reference_records(images, uri))
    key = monitor.reference_key(name, version, images)
    cached, reading = timed(lambda: monitor.cached_reference(client, experiment_id, key))
    parts = {"images": len(images), "drawing_s": drawing, "answering_s": answering, "reading_back_s": reading,
             "read_back": cached is not None}  # fmt: skip
    print(f"reference of {len(images)} images: drawn {drawing} s, answered {answering} s, read back {reading} s")
    report = {"model": uri, "image_size": cfg.data.image_size, "window": args.window, "runs": runs, "reference": parts}
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
