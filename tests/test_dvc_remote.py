"""A DVC remote (a local folder here; S3, GCS or SSH in production): `dvc push` from one repository,
and a fresh clone at a past commit pulls that commit's data and model, and retraining there gives the
same weights."""

from __future__ import annotations

import json
import shutil

import torch
import yaml

from tests.dvc_repo import dvc, make_repo, run
from tests.synthetic import write_dataset


def data_version(repo) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    (dep,) = [dep for dep in lock["stages"]["validate"]["deps"] if dep["path"] == "data/images"]
    return dep["md5"]


def test_a_fresh_clone_pulls_a_past_commits_data_and_model_and_retrains_it_exactly(tmp_path):
    repo = make_repo(tmp_path / "repo")
    dvc(repo, "remote", "add", "-d", "storage", str(tmp_path / "remote"))
    dvc(repo, "repro")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "first model")
    past = run(repo, "git", "rev-parse", "HEAD").stdout.strip()
    version = data_version(repo)
    accuracy = json.loads((repo / "metrics" / "eval.json").read_text())["accuracy"]
    dvc(repo, "push")
    write_dataset(repo / "data" / "images", {"train": 42}, seed=7)  # the data moves on
    dvc(repo, "add", "-q", "data/images")
    run(repo, "git", "commit", "-qam", "new data")
    dvc(repo, "push")
    shutil.rmtree(repo / ".dvc" / "cache")  # only the remote holds the data from here on

    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    run(clone, "git", "checkout", "-q", past)
    dvc(clone, "pull")
    assert "up to date" in dvc(clone, "status")
    assert data_version(clone) == version and len(list((clone / "data" / "images").rglob("*.png"))) == 3 * 50
    shown = json.loads(dvc(clone, "metrics", "show", "--json"))[""]["data"]["metrics/eval.json"]["data"]
    assert shown["accuracy"] == accuracy
    pulled = torch.load(clone / "models" / "model.pt", weights_only=True)

    dvc(clone, "repro", "--force", "--single-item", "train")
    retrained = torch.load(clone / "models" / "model.pt", weights_only=True)
    assert retrained["info"]["run_id"] != pulled["info"]["run_id"]
    assert retrained["info"]["data_version"] == pulled["info"]["data_version"]
    for name, tensor in pulled["state_dict"].items():
        assert torch.equal(retrained["state_dict"][name], tensor), name
