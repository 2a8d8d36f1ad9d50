"""Behaviour: on cluttered data, a trained model's attention follows the item across the canvas."""

import numpy as np
import pytest
import torch
import yaml

from pipeline import preprocess, train, validate
from pipeline.core.config import load_config
from pipeline.data.fashion_mnist import fit, read_split
from pipeline.model.model_file import load_model
from tests.synthetic import PROJECT, write_small_fashion_mnist

CANVAS, SIZE = 56, 28  # canvases generated at 56 px, seen by the model at 28 px: a 7×7 map of 4 px cells


@pytest.fixture(scope="module")
def cluttered_model(tmp_path_factory):
    """A small soft-attention model trained on cluttered Fashion-MNIST, and the test items (28×28)."""
    folder = tmp_path_factory.mktemp("follows")
    source = write_small_fashion_mnist(folder / "fashion", train=2000, test=200)
    root = folder / "project"
    root.mkdir()
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["data"].update(source="cluttered-fashion-mnist", path=str(source), image_size=SIZE, canvas=CANVAS)
    params["validate"]["max_imbalance"] = 100.0
    params["model"].update(widths=[16, 32, 64], attention_dim=32)
    params["train"].update(epochs=8, batch_size=64, lr=0.005, min_steps_per_epoch=1)  # as given:
    params["train"].update(min_steps=0, min_images=0)  # no floor on the run's length
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIPELINE_ROOT", str(root))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("MLFLOW_REGISTRY_URI", raising=False)
        cfg = load_config()
        validate.run(cfg)
        preprocess.run(cfg)
        train.run(cfg)
        model, _ = load_model(cfg.paths.model_file)
    return model, read_split(source, "test")[0]


def peaks_near_the_item(attention_of, items: np.ndarray) -> float:
    """The share of (item, position) pairs, each item pasted alone on a blank canvas at a 5×5 grid of
    places, where the attention peak lies within one cell of the cell holding the item's centre."""
    places = np.linspace(0, CANVAS - 28, 5).round().astype(int)
    canvases, centres = [], []
    for item in items:
        rows, cols = np.nonzero(item)
        for y in places:
            for x in places:
                canvas = np.zeros((CANVAS, CANVAS), dtype=np.uint8)
                canvas[y : y + 28, x : x + 28] = item
                canvases.append(canvas)
                centres.append(((y + rows.mean()) * SIZE / CANVAS, (x + cols.mean()) * SIZE / CANVAS))
    attention = attention_of(torch.from_numpy(fit(np.stack(canvases), SIZE, 1)))
    rows_, cols_ = attention.shape[1:]
    peak_row, peak_col = np.divmod(attention.flatten(1).argmax(1).numpy(), cols_)
    centre = np.array(centres)
    centre_row, centre_col = (centre[:, 0] // (SIZE / rows_)).astype(int), (centre[:, 1] // (SIZE / cols_)).astype(int)
    return float(np.mean((abs(peak_row - centre_row) <= 1) & (abs(peak_col - centre_col) <= 1)))


def test_moving_an_item_across_a_blank_canvas_moves_the_attention_peak_with_it(cluttered_model):
    model, items = cluttered_model

    def attention(images):
        with torch.no_grad():
            return model(images).attention

    def fixed_on_the_centre(images):  # a map that ignores the image, peaked where items sit most often
        maps = torch.full_like(attention(images), 0.5 / 48)
        maps[:, 3, 3] = 0.5
        return maps

    followed = peaks_near_the_item(attention, items[:20])
    assert followed >= 0.9, followed
    # the same check fails for a map that does not move: it is near the item only where the item is central
    still = peaks_near_the_item(fixed_on_the_centre, items[:20])
    assert 0.2 < still < 0.5, still
