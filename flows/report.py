"""What a flow run tells its user: the summary it prints and the Prefect artifacts it publishes."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from pipeline.core.config import Config
from pipeline.core.files import write_json


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def locked_data_version(cfg: Config) -> str | None:
    """The hash `dvc.lock` records for the source dataset (`data.path`): the data version."""
    lock_path = cfg.root / "dvc.lock"
    if not lock_path.is_file():
        return None
    lock = yaml.safe_load(lock_path.read_text()) or {}
    for dep in lock.get("stages", {}).get("validate", {}).get("deps", []):
        if dep.get("path") == cfg.data.path:
            return dep.get("md5")
    return None


@dataclass
class RunSummary:
    """The outcome of a training flow run, read from the stages' reports."""

    stages: dict[str, str] = field(default_factory=dict)  # stage -> "ran" | "skipped"
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall time of its task
    validation: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)
    registration: dict = field(default_factory=dict)
    data_version: str | None = None

    @classmethod
    def read(cls, cfg: Config, stages: dict[str, str], seconds: dict[str, float] | None = None) -> RunSummary:
        paths = cfg.paths
        return cls(
            stages=stages,
            seconds=seconds or {},
            validation=_read_json(paths.reports / "validation.json"),
            evaluation=_read_json(paths.metrics / "eval.json"),
            registration=_read_json(paths.reports / "registration.json"),
            data_version=locked_data_version(cfg),
        )

    def write(self, path: Path) -> None:
        """Save the summary as JSON (what the benchmark and scripts read)."""
        write_json(path, asdict(self))

    def _stage_line(self, name: str, state: str) -> str:
        return f"{name} {state}" + (f" ({self.seconds[name]:.1f} s)" if name in self.seconds else "")

    @property
    def decision(self) -> str:
        r = self.registration
        if not r:
            return "no model registered"
        verdict = "promoted to champion" if r.get("promote") else "kept as challenger"
        return f"{r['model_name']} version {r['version']} {verdict}: {r['reason']}"

    def text(self) -> str:
        v, e = self.validation, self.evaluation
        skipped = len(v.get("skipped", []))
        lines = [
            "stages: " + ", ".join(self._stage_line(name, state) for name, state in self.stages.items()),
            f"validation: {'passed' if v.get('success') else 'failed'} "
            f"({v.get('accepted', 0)} of {v.get('files', 0)} files accepted, {skipped} skipped)",
            f"test accuracy: {e.get('accuracy', float('nan')):.4f} (macro-F1 {e.get('macro_f1', float('nan')):.4f})",
            f"registry: {self.decision}",
            f"data version: {self.data_version}",
            f"MLflow run: {self.registration.get('run_id')}  (open the UI: make mlflow-ui)",
        ]
        if "ran" in self.stages.values():
            lines.append("dvc.lock: updated by the stages that ran; record this run: git add dvc.lock, then commit")
        return "\n".join(lines)

    def _comparison_markdown(self) -> str:
        c = self.registration.get("comparison")
        if not c:
            return ""
        return (
            f"- **Against the champion** (version {c['champion_version']}, the same {c['images']} test images): "
            f"{c['metric']} {c['challenger_score']:.4f} vs {c['champion_score']:.4f}; only the new model right on "
            f"{c['only_challenger_right']}, only the champion on {c['only_champion_right']}; "
            f"{c.get('test', 'McNemar')} p = {c['p_value']:.3g}\n"
        )

    def markdown(self) -> str:
        e = self.evaluation
        rows = "\n".join(
            f"| {name} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1-score']:.4f} | {m['support']} |"
            for name, m in e.get("per_class", {}).items()
        )
        stages = " · ".join(self._stage_line(name, state) for name, state in self.stages.items())
        return (
            "# Training flow report\n\n"
            f"- **Stages**: {stages}\n"
            f"- **Test accuracy**: {e.get('accuracy', float('nan')):.4f}, "
            f"macro-F1 {e.get('macro_f1', float('nan')):.4f}\n"
            f"- **Registry decision**: {self.decision}\n"
            + self._comparison_markdown()
            + f"- **Data version**: `{self.data_version}`\n"
            f"- **MLflow run**: `{self.registration.get('run_id')}`\n\n"
            "| class | precision | recall | F1 | support |\n|---|---|---|---|---|\n" + rows + "\n"
        )


def bad_files(validation: dict) -> list[dict[str, str]]:
    """Rows for the bad-files table: each offending file (or class folder) with the rule it broke."""
    rows = [
        {"file": s["path"], "rule": "; ".join(s["rules"]), "action": "skipped"} for s in validation.get("skipped", [])
    ]
    for rule in validation.get("rules", []):
        if not rule["success"]:
            rows += [{"file": item, "rule": rule["rule"], "action": "stopped the run"} for item in rule["offending"]]
    return rows
