import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

from pipeline import preprocess, train, validate
from pipeline.core.config import load_config
from pipeline.core.errors import PipelineError
from pipeline.data.splits import load_split
from pipeline.model.model_file import load_model
from pipeline.training import checkpoints
from pipeline.training.runtime import predict_batches, select_runtime
from tests.synthetic import write_dataset


@pytest.fixture
def prepared(project):
    validate.run(project)
    preprocess.run(project)
    return project


def test_training_writes_model_metrics_and_logs_one_mlflow_run(prepared):
    cfg = load_config(overrides={"train.epochs": 2})
    result = train.run(cfg)
    assert cfg.paths.model_file.is_file() and not cfg.paths.checkpoint.exists()
    metrics = json.loads((cfg.paths.metrics / "train.json").read_text())
    assert metrics["epochs"] == 2 and list(result.history["epoch"]) == [1, 2]
    assert metrics["kept_epoch"] == 2 and metrics["val_accuracy"] == result.history["val_accuracy"].iloc[-1]
    run = mlflow.get_run(result.run_id)
    assert run.data.params["train.epochs"] == "2"
    assert {"data_version", "git_commit"} <= set(run.data.tags)
    history = mlflow.MlflowClient().get_metric_history(result.run_id, "val_accuracy")
    assert [m.step for m in history] == [1, 2]


def swap_labels_of_every_other_image(root: Path) -> None:
    """Move every other training image of each class into the next class's folder: half the labels wrong."""
    folders = sorted(p for p in (root / "train").iterdir() if p.is_dir())
    moves = [(image, folders[(i + 1) % len(folders)]) for i, folder in enumerate(folders)
             for image in sorted(folder.iterdir())[::2]]  # fmt: skip
    for image, target in moves:
        image.rename(target / f"moved-{image.parent.name}-{image.name}")


def test_keep_best_saves_the_epoch_with_the_lowest_validation_loss(project, dataset, monkeypatch):
    swap_labels_of_every_other_image(dataset)  # a run that memorises noise: the validation loss rises late
    validate.run(project)
    preprocess.run(project)
    cfg = load_config(overrides={"train.epochs": 40, "train.keep": "best", "train.calibrate": False})
    result = train.run(cfg)
    losses = list(result.history["val_loss"])
    kept = max(epoch for epoch, loss in enumerate(losses, start=1) if loss == min(losses))  # ties: the later
    assert kept < 40, "this run should overfit before its end; the test cannot tell a kept epoch from the last"
    metrics = json.loads((cfg.paths.metrics / "train.json").read_text())
    assert metrics["kept_epoch"] == kept and metrics["val_loss"] == losses[kept - 1]
    assert mlflow.get_run(result.run_id).data.metrics["kept_epoch"] == kept
    # the file holds that epoch's weights: its validation answers, scored unfolded as training scored them
    # (folded batch norms round differently in bf16: one of 27 answers moved on a CPU with AMX)
    model, _ = load_model(cfg.paths.model_file, fold=False)
    val = load_split(cfg.paths.processed, "val")
    runtime = select_runtime(cfg.train.device, cfg.train.precision, backbone=cfg.model.backbone)
    answers = predict_batches(model, val.images, len(val.labels), runtime).logits.argmax(1)
    assert (answers == val.labels).float().mean().item() == pytest.approx(result.history["val_accuracy"][kept - 1])

    # interrupted after the kept epoch, the run resumes knowing which one it was
    reference = torch.load(cfg.paths.model_file, weights_only=True)["state_dict"]
    cfg.paths.model_file.unlink()
    real_epoch = crash_in_epoch(monkeypatch, kept + 2)
    with pytest.raises(KeyboardInterrupt):
        train.run(cfg)
    monkeypatch.setattr(train, "train_epoch", real_epoch)
    resumed = train.run(cfg)
    assert resumed.metrics["kept_epoch"] == kept
    weights = torch.load(cfg.paths.model_file, weights_only=True)["state_dict"]
    for name, tensor in reference.items():
        torch.testing.assert_close(weights[name], tensor, msg=name)


def test_the_run_names_its_training_data_as_an_mlflow_dataset(prepared):
    result = train.run(load_config(overrides={"train.epochs": 1}))
    run = mlflow.get_run(result.run_id)
    (used,) = run.inputs.dataset_inputs
    dataset = used.dataset
    assert dataset.name == "images" and dataset.digest == run.data.tags["data_version"]  # the folder's name
    assert [tag.value for tag in used.tags if tag.key == "mlflow.data.context"] == ["training"]
    source = json.loads(dataset.source)
    assert dataset.source_type == "dvc" and source["path"] == prepared.portable_source()
    assert source["rev"] == run.data.tags["git_commit"] and source["md5"] == dataset.digest
    profile = json.loads(dataset.profile)
    assert profile["images"] == 150 and profile["train"] == {"bars": 40, "columns": 40, "squares": 40}
    assert {"path", "split", "label", "sha256"} <= {c["name"] for c in json.loads(dataset.schema)["mlflow_colspec"]}
    found = mlflow.search_runs([run.info.experiment_id], f"dataset.digest = '{dataset.digest}'", output_format="list")
    assert [r.info.run_id for r in found] == [result.run_id]


def crash_in_epoch(monkeypatch, epoch: int):
    """Make the train stage stop with KeyboardInterrupt when epoch `epoch` starts; returns the real step."""
    real_epoch = train.train_epoch

    def crashing(*args, **kwargs):
        if args[-1] == epoch:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train, "train_epoch", crashing)
    return real_epoch


def test_interrupted_training_resumes_from_its_checkpoint(prepared, monkeypatch):
    cfg = load_config(overrides={"train.epochs": 2})
    uninterrupted = train.run(cfg)
    reference = torch.load(cfg.paths.model_file, weights_only=True)["state_dict"]

    cfg.paths.model_file.unlink()
    real_epoch = crash_in_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train.run(cfg)
    assert cfg.paths.checkpoint.is_file() and not cfg.paths.model_file.exists()
    crashed_run = torch.load(cfg.paths.checkpoint, weights_only=True)["run_id"]
    monkeypatch.setattr(train, "train_epoch", real_epoch)

    resumed = train.run(cfg)
    assert list(resumed.history["epoch"]) == [1, 2]
    assert resumed.run_id == crashed_run != uninterrupted.run_id
    assert mlflow.get_run(resumed.run_id).info.status == "FINISHED"
    weights = torch.load(cfg.paths.model_file, weights_only=True)["state_dict"]
    for name, tensor in reference.items():
        torch.testing.assert_close(weights[name], tensor, msg=name)


def test_checkpoints_wait_for_train_checkpoint_seconds(prepared, monkeypatch):
    cfg = load_config(overrides={"train.epochs": 3, "train.checkpoint_seconds": 3600})
    real_epoch = crash_in_epoch(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train.run(cfg)
    assert not cfg.paths.checkpoint.exists()  # two epochs done, an hour not passed: none written
    monkeypatch.setattr(train, "train_epoch", real_epoch)
    assert list(train.run(cfg).history["epoch"]) == [1, 2, 3]  # started over


def test_checkpoint_of_other_settings_is_not_resumed(prepared):
    cfg = load_config(overrides={"train.epochs": 1})
    cfg.paths.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"fingerprint": "other", "epoch": 5}, cfg.paths.checkpoint)
    result = train.run(cfg)
    assert list(result.history["epoch"]) == [1]


def test_a_checkpoint_written_by_other_code_is_not_resumed(prepared, monkeypatch, tmp_path):
    cfg = load_config(overrides={"train.epochs": 2})
    package = tmp_path / "pipeline"  # a copy of the code, to edit
    shutil.copytree(checkpoints.PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(train, "code_digest", lambda: checkpoints.code_digest(package))
    real_epoch = crash_in_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train.run(cfg)
    crashed = torch.load(cfg.paths.checkpoint, weights_only=True)
    assert crashed["epoch"] == 1
    monkeypatch.setattr(train, "train_epoch", real_epoch)
    augment = package / "training" / "augment.py"
    augment.write_text(augment.read_text() + "\n# an edit to the augmentation\n")
    assert checkpoints.code_digest(package) != checkpoints.code_digest()
    started_over = train.run(cfg)
    assert list(started_over.history["epoch"]) == [1, 2] and started_over.run_id != crashed["run_id"]


def test_corrupt_checkpoint_starts_over(prepared):
    cfg = load_config(overrides={"train.epochs": 1})
    cfg.paths.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    cfg.paths.checkpoint.write_bytes(b"half a file")
    assert list(train.run(cfg).history["epoch"]) == [1]


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(prepared, monkeypatch):
    cfg = load_config(overrides={"train.epochs": 3})
    real_epoch = crash_in_epoch(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train.run(cfg)
    assert torch.load(checkpoints.previous(cfg.paths.checkpoint), weights_only=True)["epoch"] == 1
    cfg.paths.checkpoint.write_bytes(cfg.paths.checkpoint.read_bytes()[:100])  # a torn write
    resumed_epochs = []
    monkeypatch.setattr(train, "train_epoch", lambda *a, **k: resumed_epochs.append(a[-1]) or real_epoch(*a, **k))
    result = train.run(cfg)
    assert resumed_epochs == [2, 3] and list(result.history["epoch"]) == [1, 2, 3]
    assert not cfg.paths.checkpoint.exists() and not checkpoints.previous(cfg.paths.checkpoint).exists()


def test_training_killed_with_sigkill_resumes_and_ends_where_an_uninterrupted_run_does(prepared):
    epochs = 40
    params = yaml.safe_load((prepared.root / "params.yaml").read_text())
    params["train"]["epochs"] = epochs
    (prepared.root / "params.yaml").write_text(yaml.safe_dump(params))
    cfg = load_config()
    uninterrupted = train.run(cfg)
    reference = torch.load(cfg.paths.model_file, weights_only=True)["state_dict"]
    cfg.paths.model_file.unlink()

    process = subprocess.Popen([sys.executable, "-m", "pipeline.train"], cwd=cfg.root, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not checkpoints.previous(cfg.paths.checkpoint).exists() and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    # the kill can land between rotating the newest checkpoint to `previous` and renaming the next one
    # into place: then `previous` (epoch 1 at the earliest) is all there is, and training resumes from it
    survivor = next(p for p in (cfg.paths.checkpoint, checkpoints.previous(cfg.paths.checkpoint)) if p.exists())
    killed_at = torch.load(survivor, weights_only=True)["epoch"]
    assert 1 <= killed_at < epochs and not cfg.paths.model_file.exists()

    resumed = train.run(cfg)
    assert list(resumed.history["epoch"]) == list(range(1, epochs + 1)) and resumed.run_id != uninterrupted.run_id
    weights = torch.load(cfg.paths.model_file, weights_only=True)["state_dict"]
    for name, tensor in reference.items():
        torch.testing.assert_close(weights[name], tensor, msg=name)
    assert resumed.metrics["val_accuracy"] == uninterrupted.metrics["val_accuracy"]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_tracking_server_stops_training_before_it_starts(prepared, monkeypatch):
    uri = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(PipelineError, match=f"MLflow tracking server {uri} is unreachable .*MLFLOW_TRACKING_URI"):
        train.run(load_config())
    assert not prepared.paths.checkpoint.exists() and not prepared.paths.model_file.exists()


def test_data_preprocessed_by_an_older_version_is_refused_before_training(prepared):
    meta_path = prepared.paths.processed / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["bit_depth"]  # what preprocess wrote before data.bit_depth
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(PipelineError, match=r"meta.json: written by an older preprocess \(no bit_depth\); run it"):
        train.run(prepared)
    assert not prepared.paths.checkpoint.exists() and not prepared.paths.model_file.exists()


def test_unusable_tracking_store_is_named(prepared, monkeypatch, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    uri = f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(PipelineError, match="MLflow tracking store .*a-file/mlflow.db"):
        train.run(load_config())


def test_training_streamed_from_the_shards_learns_as_training_from_memory(prepared, caplog):
    caplog.set_level("INFO", logger="pipeline.train")
    memory = train.run(load_config(overrides={"train.epochs": 5, "train.loader": "memory"}))
    assert "images streamed from the shards" not in caplog.text
    streamed = train.run(load_config(overrides={"train.epochs": 5, "train.loader": "stream"}))
    assert "images streamed from the shards" in caplog.text
    assert streamed.metrics["steps"] == memory.metrics["steps"]
    assert streamed.history["train_accuracy"].iloc[-1] > 0.6  # three classes: 1/3 by chance
    assert streamed.metrics["val_accuracy"] >= memory.metrics["val_accuracy"] - 0.1


@pytest.mark.parametrize(("per_class", "warned"), [(40, True), (100, False)])
def test_a_validation_split_too_small_to_fit_thresholds_on_is_said(project, tmp_path, caplog, per_class, warned):
    images = write_dataset(tmp_path / "more", {"train": per_class, "test": 5})  # val: a fifth, about 24 or 60
    cfg = load_config(overrides={"data.path": str(images)})
    validate.run(cfg)
    preprocess.run(cfg)
    caplog.set_level("INFO", logger="pipeline.train")
    train.run(cfg)
    assert (len(load_split(cfg.paths.processed, "val").labels) < train.FEW_VALIDATION_IMAGES) == warned
    assert ("the validation split holds only" in caplog.text) == warned
