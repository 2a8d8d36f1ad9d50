"""What changed between two versions of the data: per class, images added, removed, changed,
relabelled and moved between splits.

    python -m pipeline.data_diff [OLD] [NEW] [--json FILE]

Each version is one of:
- `champion`: the data the registry's champion was trained on (its run's manifest; OLD's default);
- `workspace`: what `data.path` holds now, scanned afresh (NEW's default; no validation needed);
- a git revision (`HEAD~1`, a tag, a branch): the validated manifest committed there, read through
  DVC (from its cache or remote);
- a manifest file (`data/manifest.csv`, or any CSV with path, split, label and sha256 columns).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pandas as pd

from pipeline.core.config import Config, load_config
from pipeline.core.errors import PipelineError, first_line, run_cli
from pipeline.core.files import write_json
from pipeline.data.manifest_diff import IDENTITY, DataDiff, diff

MANIFEST = "data/manifest.csv"


def champion_manifest(cfg: Config) -> pd.DataFrame:
    """The manifest the registry's champion was trained on."""
    from mlflow import MlflowClient

    from pipeline.core.tracking import connect
    from pipeline.data.mlflow_dataset import training_manifest
    from pipeline.model.aliases import current_champion

    connect(cfg)
    champion = current_champion(MlflowClient(), cfg.register.model_name)
    if champion is None:
        raise PipelineError(f"{cfg.register.model_name}: no champion in the registry; name a git revision or a file")
    manifest = training_manifest(champion.run_id)
    if manifest is None:
        raise PipelineError(
            f"{cfg.register.model_name} version {champion.version}: its run logged no manifest (trained before "
            "datasets were tracked); name a git revision or a file instead"
        )
    return manifest


def revision_manifest(cfg: Config, rev: str) -> pd.DataFrame:
    """The validated manifest committed at git revision `rev`, read through DVC."""
    import dvc.api
    from dvc.exceptions import DvcException
    from scmrepo.exceptions import SCMError

    try:
        text = dvc.api.read(MANIFEST, repo=str(cfg.root), rev=rev)
    except (DvcException, SCMError, FileNotFoundError) as error:
        reason = first_line(error)
        raise PipelineError(
            f"{rev}: no manifest at that git revision ({reason}); give a commit, tag or branch whose dvc.lock "
            "has it, and 'dvc pull' if its data is only on the remote"
        ) from None
    return pd.read_csv(io.StringIO(text))


def file_manifest(path: Path) -> pd.DataFrame:
    try:
        manifest = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise PipelineError(f"{path}: unreadable manifest ({type(error).__name__})") from None
    if missing := [column for column in IDENTITY if column not in manifest.columns]:
        raise PipelineError(f"{path}: not a manifest (no column {', '.join(missing)})")
    return manifest


def load_version(cfg: Config, name: str) -> pd.DataFrame:
    """A data version's manifest, by the names the command takes."""
    if name == "champion":
        return champion_manifest(cfg)
    if name == "workspace":
        from pipeline.data import sources

        return sources.scan(cfg).files
    if Path(name).is_file():
        return file_manifest(Path(name))
    return revision_manifest(cfg, name)


def run(cfg: Config, old: str = "champion", new: str = "workspace") -> DataDiff:
    """The changes from version `old` to version `new`."""
    return diff(load_version(cfg, old), load_version(cfg, new))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.data_diff", description=__doc__.splitlines()[0])
    parser.add_argument("old", nargs="?", default="champion", help="champion (default), a git revision or a file")
    parser.add_argument("new", nargs="?", default="workspace", help="workspace (default), a git revision or a file")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the changes as JSON")
    args = parser.parse_args()
    changes = run(load_config(), args.old, args.new)
    print(f"{args.old} → {args.new}: " + changes.markdown())
    if args.json:
        write_json(args.json, {"old": args.old, "new": args.new, **changes.as_dict()})


if __name__ == "__main__":
    run_cli(main)
