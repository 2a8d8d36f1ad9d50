from pathlib import Path

from pipeline.core.config import load_config
from pipeline.core.paths import project_root, store_root


def test_store_root_is_the_real_root_inside_a_dvc_experiment_copy(monkeypatch):
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert store_root(Path("/home/me/proj/.dvc/tmp/exps/tmpab12cd")) == Path("/home/me/proj")
    assert store_root(Path("/home/me/proj")) == Path("/home/me/proj")


def test_store_root_prefers_dvc_root_for_an_experiment_copy(monkeypatch, tmp_path):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert store_root(Path("/x/.dvc/tmp/exps/run/abc")) == tmp_path


def test_mlflow_store_of_an_experiment_copy_is_the_parent_projects(tmp_path, monkeypatch):
    monkeypatch.delenv("DVC_ROOT", raising=False)
    copy = tmp_path / ".dvc" / "tmp" / "exps" / "tmp123"
    copy.mkdir(parents=True)
    (copy / "params.yaml").write_text("{}\n")
    monkeypatch.chdir(copy)
    monkeypatch.delenv("PIPELINE_ROOT", raising=False)
    cfg = load_config()
    assert project_root() == copy
    assert cfg.paths.mlflow_db == tmp_path / "mlflow.db"
    assert cfg.paths.manifest == copy / "data" / "manifest.csv"
