"""Search the training settings on the validation split: a bounded Optuna study.

    python -m pipeline.tune [--trials 20] [--minutes 30] [--epochs N] [--fixed KEY ...] [--augment] [--write]

Each trial trains the model of params.yaml, with settings drawn from SPACE (and, where the classes
are imbalanced, from CHOICES: how to balance them), on the preprocessed training split, with the
train stage's own steps, and is scored on the validation split alone by the registry's metric
(`register.metric`); the test split is never read. The first trial is params.yaml's own settings,
so the study's best is never worse on that split than what the user has. Optuna's TPE sampler draws
the others (seeded by `train.seed`), its median pruner stops a trial that falls behind the others
after an epoch, and the study stops after `--trials` or `--minutes`, whichever comes first (a trial
running at the deadline is stopped too). Each trial is a nested MLflow run, with its settings and
its score per epoch, under one parent run in the experiment `<tracking.experiment>-tuning`; the
parent records the best. `reports/tuning.json` lists every trial. The search knows only the score,
not where the attention looks, which the augmentations decide (AUGMENT): it leaves them as
params.yaml has them unless `--augment`; `--fixed KEY` leaves any other. `--write` puts the best settings
into params.yaml (comments kept), where the next `dvc repro` trains with them (nothing, when
params.yaml's own scored best); without it, the line to try them as a DVC experiment is printed.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from dataclasses import dataclass

import mlflow
import torch

from pipeline.core.config import Config, load_config
from pipeline.core.errors import PipelineError, run_cli
from pipeline.core.files import write_json
from pipeline.core.params_file import apply_overrides
from pipeline.core.tracking import connect
from pipeline.data.splits import TensorSplit, load_split, read_meta
from pipeline.model.champion import METRICS
from pipeline.training.runtime import predict_batches, select_runtime
from pipeline.training.selection import KeptEpoch
from pipeline.training.steps import build_training, class_weights, split_loss, train_epoch

log = logging.getLogger(__name__)

BASELINE = "params.yaml"  # the user attribute of the trial with params.yaml's own settings

# param: (kind, low, high); "log": log-uniform, "float": uniform, "int": integers (inclusive); each
# range stretched to hold params.yaml's value
SPACE = {
    "train.lr": ("log", 5e-4, 2e-2),
    "train.weight_decay": ("log", 1e-5, 5e-3),
    "train.label_smoothing": ("float", 0.0, 0.2),
    "model.dropout": ("float", 0.0, 0.4),
    "train.augment.erasing": ("float", 0.0, 0.5),
    "train.augment.max_shift": ("int", 0, None),  # None: an eighth of the image side
}
# how to balance imbalanced classes (none of it on balanced ones): no class weights, or weights by
# sampled epochs or in the loss; the second only with weights, and with the data in memory (streamed: loss)
CHOICES = {
    "train.class_weights": ("balanced", "none"),
    "train.balance": ("sampling", "loss"),
}
# searched only with --augment: on the small NEON crowns the score chose more erasing and less shift,
# and the attention's peak fell onto a crown less often than Grad-CAM's (BENCHMARKS.md, "make tune")
AUGMENT = frozenset({"train.augment.erasing", "train.augment.max_shift"})


@dataclass(frozen=True)
class Search:
    """What a study draws: the settings of SPACE and CHOICES that are not fixed, and where they start."""

    image_size: int
    current: dict  # params.yaml's value of every searched setting
    searched: tuple[str, ...]
    class_weights: str  # params.yaml's train.class_weights, where a trial does not draw it

    def bounds(self, name: str) -> tuple[float, float]:
        _, low, high = SPACE[name]
        high = max(self.image_size // 8, 1) if high is None else high
        return min(low, self.current[name]), max(high, self.current[name])

    def draw(self, trial) -> dict:
        """A trial's settings (params.yaml's own for the first, enqueued)."""
        settings = {}
        for name in self.searched:
            if name == "train.balance" and settings.get("train.class_weights", self.class_weights) != "balanced":
                continue  # without class weights there is nothing to balance by
            if name in CHOICES:
                settings[name] = trial.suggest_categorical(name, CHOICES[name])
            elif SPACE[name][0] == "int":
                settings[name] = trial.suggest_int(name, *self.bounds(name))
            else:
                settings[name] = trial.suggest_float(name, *self.bounds(name), log=SPACE[name][0] == "log")
        return settings

    def baseline(self) -> dict:
        """params.yaml's settings, as a trial draws them."""
        weighed = self.class_weights == "balanced"
        return {k: v for k, v in self.current.items() if weighed or k != "train.balance"}


def plan_search(cfg: Config, meta: dict, labels: torch.Tensor, streamed: bool, fixed: frozenset[str]) -> Search:
    """The search for this data: CHOICES only where `labels` (training and validation) are imbalanced,
    `train.balance` only in memory."""
    names = list(SPACE)
    weights = class_weights(labels, len(meta["classes"]))
    if not bool((weights == weights[0]).all()):
        names += ["train.class_weights"] + ([] if streamed else ["train.balance"])
    searched = tuple(name for name in names if name not in fixed)
    current = {name: value_of(cfg, name) for name in searched}
    return Search(meta["image_size"], current, searched, cfg.train.class_weights)


def value_of(cfg: Config, dotted: str):
    """params.yaml's value of `section.key` (`train.augment.erasing`)."""
    value = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def objective(cfg: Config, meta: dict, train_data: TensorSplit, val_data: TensorSplit, epochs: int | None,
              deadline: float, parent: mlflow.ActiveRun, search: Search):  # fmt: skip
    """The function Optuna calls for each trial: train with its settings, return the validation score."""
    import optuna

    def run_trial(trial: optuna.Trial) -> float:
        overrides = search.draw(trial)
        if epochs is not None:
            overrides.update({"train.epochs": epochs, "train.min_steps": 0, "train.min_images": 0})
        trial_cfg = load_config(cfg.root / "params.yaml", overrides)
        runtime = select_runtime(trial_cfg.train.device, trial_cfg.train.precision, backbone=trial_cfg.model.backbone)
        training = build_training(trial_cfg, meta, runtime, train_data.labels, val_labels=val_data.labels)
        labels, plan, kept = val_data.labels.numpy(), training.plan, KeptEpoch(trial_cfg.train.keep)
        kept_value = math.nan  # no epoch kept (every validation loss NaN): Optuna records a failed trial
        name = f"trial {trial.number}" + (" (params.yaml)" if trial.user_attrs.get(BASELINE) else "")
        with mlflow.start_run(run_name=name, experiment_id=parent.info.experiment_id, nested=True):
            mlflow.log_params({**overrides, "plan.epochs": plan.epochs, "plan.batch_size": plan.batch_size})
            for epoch in range(1, plan.epochs + 1):
                train_epoch(training, train_data, trial_cfg.train, runtime, epoch)
                batch = runtime.scoring_batch(val_data.images)
                logits = predict_batches(training.model, val_data.images, batch, runtime).logits
                value = float(METRICS[cfg.register.metric](labels, logits.argmax(1).numpy()))
                if kept.update(epoch, split_loss(training, logits, val_data.labels)):
                    kept_value = value
                mlflow.log_metric(f"val_{cfg.register.metric}", value, step=epoch)
                trial.report(value, epoch)
                pruned = trial.should_prune()
                if epoch < plan.epochs and (pruned or time.monotonic() > deadline):
                    mlflow.set_tag("stopped", "pruned" if pruned else "time budget")
                    mlflow.end_run("KILLED")  # stopped early, not failed
                    raise optuna.TrialPruned()
        log.info("tune: trial %d: val %s %.4f with %s", trial.number, cfg.register.metric, kept_value, overrides)
        return kept_value  # the kept epoch's (train.keep): the model the train stage would keep

    return run_trial


def run(
    cfg: Config, trials: int = 20, minutes: float = 30, epochs: int | None = None, write: bool = False,
    fixed: frozenset[str] = frozenset(), augment: bool = False,
) -> dict:  # fmt: skip
    """Run the study; the best settings and score (written to params.yaml with `write`); `fixed`:
    settings of SPACE or CHOICES left as params.yaml has them, as AUGMENT's are without `augment`."""
    import optuna

    if unknown := fixed - SPACE.keys() - CHOICES.keys():
        raise PipelineError(
            f"--fixed {', '.join(sorted(unknown))}: not searched; the search covers {', '.join([*SPACE, *CHOICES])}"
        )
    meta = read_meta(cfg.paths.processed)
    train_data, val_data = (load_split(cfg.paths.processed, name, cfg.train.loader) for name in ("train", "val"))
    labels = torch.cat([train_data.labels.cpu(), val_data.labels.cpu()])
    search = plan_search(cfg, meta, labels, train_data.streamed, fixed if augment else fixed | AUGMENT)
    log.info("tune: at most %d trials in %g min over %s; the first is params.yaml's own settings",
             trials, minutes, ", ".join(search.searched))  # fmt: skip
    experiment_id = connect(cfg, f"{cfg.tracking.experiment}-tuning")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=cfg.train.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
    )  # fmt: skip
    study.enqueue_trial(search.baseline(), user_attrs={BASELINE: True})
    deadline = time.monotonic() + 60 * minutes
    with mlflow.start_run(experiment_id=experiment_id, run_name="tuning",
                          tags={"mlflow.source.name": "pipeline/tune.py"}) as parent:  # fmt: skip
        mlflow.log_params({"trials": trials, "minutes": minutes, "metric": cfg.register.metric, "epochs": epochs})
        study.optimize(objective(cfg, meta, train_data, val_data, epochs, deadline, parent, search),
                       n_trials=trials, timeout=60 * minutes)  # fmt: skip
        finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not finished:
            raise PipelineError(f"no trial finished within {minutes:g} minutes; give more --minutes or fewer --epochs")
        best = study.best_trial  # the first of equal scores: params.yaml's own wins a tie
        result = {
            "metric": f"val_{cfg.register.metric}",
            "best_value": best.value,
            "best_params": best.params,
            "best_is_params_yaml": bool(best.user_attrs.get(BASELINE)),
            "trials": [trial_record(t) for t in study.trials],
        }
        mlflow.log_metric(f"best_val_{cfg.register.metric}", best.value)
        mlflow.log_params({f"best.{k}": v for k, v in best.params.items()})
        mlflow.log_dict(result, "tuning.json")
    write_json(cfg.paths.reports / "tuning.json", result)
    if write and not result["best_is_params_yaml"]:
        apply_overrides(cfg.root, {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in best.params.items()})
    return result


def trial_record(trial) -> dict:
    """A trial as reports/tuning.json lists it."""
    return {
        "number": trial.number, "state": trial.state.name, "value": trial.value, "params": trial.params,
        "params_yaml": bool(trial.user_attrs.get(BASELINE)),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tune", description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="at most this many trials (default 20)")
    parser.add_argument("--minutes", type=float, default=30, help="and at most this long (default 30)")
    parser.add_argument("--epochs", type=int, help="epochs per trial (default: as params.yaml's plan)")
    parser.add_argument("--write", action="store_true", help="write the best settings into params.yaml")
    parser.add_argument("--fixed", action="append", default=[], metavar="KEY",
                        help="leave a searched setting as params.yaml has it (repeatable)")  # fmt: skip
    parser.add_argument("--augment", action="store_true",
                        help="also search the augmentations (which decide where the attention looks)")  # fmt: skip
    args = parser.parse_args()
    if args.trials < 1 or args.minutes <= 0 or (args.epochs is not None and args.epochs < 1):
        raise PipelineError("--trials and --epochs must be at least 1, --minutes more than 0")
    cfg = load_config()
    result = run(cfg, args.trials, args.minutes, args.epochs, args.write, frozenset(args.fixed), args.augment)
    best = result["best_params"]
    settings = " ".join(f"-S {k}={v:.6g}" if isinstance(v, float) else f"-S {k}={v}" for k, v in best.items())
    done = sum(t["state"] == "COMPLETE" for t in result["trials"])
    if result["best_is_params_yaml"]:
        then = "params.yaml's own settings: nothing to change"
    elif args.write:
        then = "written to params.yaml; run dvc repro"
    else:
        then = f"try it: dvc exp run {settings}"
    print(
        f"best {result['metric']} {result['best_value']:.4f}, {done} of {len(result['trials'])} trials finished "
        f"({then})"
    )


if __name__ == "__main__":
    run_cli(main)
