"""The registered model's MLflow form (`pipeline/model/pyfunc.py`), and versions registered before
it had that name."""

import base64
import io
import json
import shutil
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml
from mlflow.models import ModelSignature
from mlflow.types import ParamSchema
from PIL import Image

from pipeline import serve, train
from pipeline.core import overlay
from pipeline.model import pyfunc
from pipeline.monitoring.image_quality import measure
from tests.synthetic import PROJECT, prepared_project

# `pipeline/model/serving.py` as it was when the wrapper had that name, byte for byte: the code file
# that the versions registered until then carry
BEFORE_RENAME = Path(__file__).with_name("serving_before_rename.py.txt")


def png_base64(side: int = 28) -> str:
    buffer = io.BytesIO()
    Image.new("L", (side, side), 90).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def test_a_model_registered_as_serving_py_still_loads_and_predicts(tmp_path, monkeypatch, capfd):
    """MLflow's "models from code" copies the code file into the model and runs it under a module
    name of its own when loading (`code_model_<uuid>`), so nothing refers to `pipeline.model.serving`
    by name: what an old version needs is that the project modules its code file imports still
    exist. Loaded as the server loads it (the project's `pipeline` imported first), it answers."""
    with prepared_project(tmp_path, {"train": 30, "test": 10}) as cfg:
        train.run(cfg)
    bundled = tmp_path / "code"  # the old version's code_paths: the package without pyfunc.py
    shutil.copytree(PROJECT / "pipeline", bundled / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    (bundled / "pipeline" / "model" / "pyfunc.py").unlink()
    old_code = bundled / "pipeline" / "model" / "serving.py"
    shutil.copyfile(BEFORE_RENAME, old_code)
    saved = tmp_path / "old-version"
    old_params = ParamSchema([spec for spec in pyfunc.SIGNATURE.params.params if spec.name != "quality"])
    mlflow.pyfunc.save_model(
        saved, python_model=str(old_code), artifacts={"model_file": str(cfg.paths.model_file)},
        code_paths=[str(bundled / "pipeline")], signature=ModelSignature(params=old_params),
    )  # fmt: skip
    flavor = yaml.safe_load((saved / "MLmodel").read_text())["flavors"]["python_function"]
    assert Path(flavor["model_code_path"]).name == "serving.py"

    monkeypatch.setattr(sys, "path", list(sys.path))  # loading puts the model's code folder first
    model = mlflow.pyfunc.load_model(str(saved))
    assert type(model.unwrap_python_model()).__module__.startswith("code_model_")  # the old file, run as itself
    answer = model.predict([png_base64(), png_base64(40)], params={"top_k": 3})
    assert len(answer["class"]) == 2 and [len(top) for top in answer["top_k"]] == [3, 3]
    assert answer["attention"].shape[0] == 2

    response, _ = serve.answer(model, json.dumps({"inputs": [png_base64()], "params": {"top_k": 2}}).encode())
    assert response.status_code == 200, response.body
    assert len(json.loads(response.body)["predictions"]["top_k"][0]) == 2
    # a server of today logging its answers wants the image figures, which this version does not know:
    # it does not ask for them (MLflow would warn of the unknown param on every request)
    capfd.readouterr()
    response, records = serve.answer(model, json.dumps({"inputs": [png_base64()]}).encode(), log=True)
    assert response.status_code == 200 and records[0]["embedding"] and records[0]["sharpness"] is None
    assert "Unrecognized params" not in capfd.readouterr().err


def trained_and_served(tmp_path: Path) -> pyfunc.AttentionClassifier:
    """The served form of a model trained on a small generated folder."""
    from pipeline.model.model_file import load_model

    with prepared_project(tmp_path, {"train": 30, "test": 10}) as cfg:
        train.run(cfg)
    served = pyfunc.AttentionClassifier()
    served.model, served.info = load_model(cfg.paths.model_file)
    return served


def test_a_request_larger_than_one_pass_is_answered_in_passes_with_the_answers_of_one(tmp_path, monkeypatch):
    """The served model scores a request a CPU scoring batch at a time (`pyfunc.SERVING`), so that a
    request of large images does not hold every layer's output for all of them at once (BENCHMARKS.md:
    256 RGB images at 224 px in one pass were killed under a 3 GB limit); the answers are those of one pass."""
    from pipeline.training import runtime

    served = trained_and_served(tmp_path)
    side, channels = served.info.image_size, served.info.channels
    images = np.random.default_rng(0).integers(0, 256, (11, channels, side, side), dtype=np.uint8)
    with torch.no_grad():
        whole = served.model.eval()(torch.from_numpy(images))
    passes = []
    monkeypatch.setattr(served, "model", _Counting(served.model, passes))
    monkeypatch.setitem(runtime.SCORING_VALUES, "cpu", 4 * images[0].size)  # 4 images a pass
    answer = served.predict(None, images)
    assert passes == [4, 4, 3]
    np.testing.assert_allclose(answer["probabilities"], whole.logits.softmax(1).numpy(), atol=1e-5)
    np.testing.assert_allclose(answer["attention"], whole.attention.numpy(), atol=1e-6)
    assert "sharpness" not in answer  # the image figures on request only, as the logging server asks
    photo = io.BytesIO()
    Image.new("RGB", (3000, 2000), (90, 120, 150)).save(photo, format="JPEG")
    overlays = served.predict(None, [photo.getvalue(), base64.b64decode(png_base64(40))], params={"overlay": True})
    sizes = [Image.open(io.BytesIO(base64.b64decode(text))).size for text in overlays["overlay"]]
    assert sizes == [(overlay.LARGEST, round(2000 * overlay.LARGEST / 3000)), (40, 40)]  # a photo reduced, aspect kept
    figures = served.predict(None, images, params={"quality": True})
    for name, values in measure(images).items():
        np.testing.assert_array_equal(figures[name], values)


class _Counting(torch.nn.Module):
    """A model that records how many images each forward pass holds."""

    def __init__(self, model, passes: list[int]):
        super().__init__()
        self.model, self.passes = model, passes

    def forward(self, images):
        self.passes.append(len(images))
        return self.model(images)


def test_array_inputs_take_whole_numbers_as_floats_and_refuse_fractions_naming_the_scale(tmp_path):
    served = trained_and_served(tmp_path)
    side, channels = served.info.image_size, served.info.channels
    images = np.random.default_rng(1).integers(0, 256, (3, channels, side, side), dtype=np.uint8)
    as_ints = served.predict(None, images)["probabilities"]
    np.testing.assert_allclose(served.predict(None, images.astype(np.float64))["probabilities"], as_ints, atol=1e-6)
    with pytest.raises(pyfunc.BadInput, match=r"whole numbers 0\.\.255 \(scale 0\.\.1 images by 255\)"):
        served.predict(None, images / 255.0)  # 0..1 floats: silently black before
