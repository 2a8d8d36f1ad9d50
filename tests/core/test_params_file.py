"""Overrides and presets: YAML files laid out like params.yaml, applied as `dvc exp run -S` would."""

import subprocess
import sys

import pytest
import yaml

from pipeline.core.config import load_config
from pipeline.core.errors import PipelineError
from pipeline.core.params_file import apply_overrides, read_preset
from tests.synthetic import PROJECT


def test_a_preset_becomes_dotted_overrides(tmp_path):
    preset = tmp_path / "preset.yaml"
    preset.write_text("model:\n  widths: [8, 16]\ntrain:\n  epochs: 3\n  augment:\n    max_shift: 0\n")
    assert read_preset(preset) == {"model.widths": [8, 16], "train.epochs": 3, "train.augment.max_shift": 0}


def test_the_gpu_preset_is_valid_and_changes_what_it_says():
    overrides = read_preset(PROJECT / "params.gpu.yaml")
    cfg = load_config(PROJECT / "params.yaml", overrides)
    assert cfg.model.widths == overrides["model.widths"] != load_config(PROJECT / "params.yaml").model.widths
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.compile) == (
        overrides["train.epochs"], overrides["train.batch_size"], overrides["train.compile"],
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, "no such preset file"),
        ("model: [unclosed\n", "not valid YAML"),
        ("- a list\n", "expected a mapping of sections"),
    ],
)
def test_a_bad_preset_file_is_one_line_naming_it(tmp_path, text, expected):
    preset = tmp_path / "preset.yaml"
    if text is not None:
        preset.write_text(text)
    with pytest.raises(PipelineError, match=expected) as error:
        read_preset(preset)
    assert str(preset) in str(error.value) and "\n" not in str(error.value)


def test_a_preset_with_an_unknown_key_changes_nothing(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    params = root / "params.yaml"
    params.write_text((PROJECT / "params.yaml").read_text())
    before = params.read_text()
    preset = tmp_path / "preset.yaml"
    preset.write_text(yaml.safe_dump({"train": {"epocs": 3}}))
    with pytest.raises(PipelineError, match="unknown key 'train.epocs'"):
        apply_overrides(root, read_preset(preset))
    assert params.read_text() == before


def test_the_flow_cli_refuses_a_missing_preset_in_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "flows.training", "--preset", str(tmp_path / "none.yaml")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert (
        done.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'none.yaml'}: no such preset file; "
        "give a YAML file laid out like params.yaml"
    )


def test_an_override_changes_its_line_only(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    params = root / "params.yaml"
    params.write_text((PROJECT / "params.yaml").read_text())
    before = params.read_text().splitlines()
    apply_overrides(root, {"train.lr": 0.002})
    changed = [(old, new) for old, new in zip(before, params.read_text().splitlines(), strict=True) if old != new]
    assert [new.split("#")[0].strip() for _, new in changed] == ["lr: 0.002"]  # `classes: null` kept, not `classes:`
