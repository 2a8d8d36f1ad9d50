from pathlib import Path

import pytest
import yaml

from pipeline.core.config import load_config
from pipeline.core.errors import PipelineError

PROJECT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, params: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_project_params_load_with_their_values():
    cfg = load_config(PROJECT / "params.yaml")
    raw = yaml.safe_load((PROJECT / "params.yaml").read_text())
    assert cfg.train.epochs == raw["train"]["epochs"]
    assert cfg.model.widths == raw["model"]["widths"]
    assert cfg.register.model_name == raw["register"]["model_name"]
    assert cfg.validate.on_error == raw["validate"]["on_error"]
    assert cfg.root == PROJECT


def test_each_section_is_the_attribute_of_its_name():
    """`cfg.validate` and `cfg.register` too, although they shadow names of pydantic's base class."""
    from pipeline.core.config import Config

    raw = yaml.safe_load((PROJECT / "params.yaml").read_text())
    cfg = load_config(PROJECT / "params.yaml")
    assert set(Config.model_fields) == set(raw)
    assert all(getattr(cfg, name).model_dump(mode="json") == cfg.model_dump(mode="json")[name] for name in raw)


def test_unknown_key_is_named(tmp_path):
    path = write(tmp_path, {"train": {"epochz": 3}})
    with pytest.raises(PipelineError, match=r"unknown key 'train\.epochz'"):
        load_config(path)


def test_unknown_section_is_named(tmp_path):
    with pytest.raises(PipelineError, match="unknown key 'trian'"):
        load_config(write(tmp_path, {"trian": {"epochs": 3}}))


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"train": {"epochs": "many"}}, "train.epochs"),
        ({"train": {"epochs": -1}}, "train.epochs"),
        ({"data": {"val_fraction": 1.5}}, "data.val_fraction"),
        ({"data": {"val_fraction": 0}}, "data.val_fraction"),
        ({"data": {"test_fraction": 0.6}}, "data.test_fraction"),
        ({"data": {"path": ""}}, "data.path"),
        ({"data": {"path": None}}, "data.path"),
        ({"validate": {"max_pixels": 0}}, "validate.max_pixels"),
        ({"validate": {"formats": ["PNG", "PSD"]}}, "validate.formats.1"),
        ({"model": {"backbone": "vgg99"}}, "model.backbone"),
        ({"validate": {"on_error": "ignore"}}, "validate.on_error"),
        ({"validate": {"min_side": 100, "max_side": 10}}, "validate"),
        ({"register": {"max_p_value": 0}}, "register.max_p_value"),
        ({"register": {"max_p_value": 1.5}}, "register.max_p_value"),
    ],
)
def test_bad_value_is_an_error_naming_the_key(tmp_path, params, key):
    with pytest.raises(PipelineError) as error:
        load_config(write(tmp_path, params))
    assert f"'{key}" in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(PipelineError, match="no params file"):
        load_config(tmp_path / "params.yaml")
    path = tmp_path / "params.yaml"
    path.write_text("train: [unclosed")
    with pytest.raises(PipelineError, match="not valid YAML"):
        load_config(path)


def test_overrides_and_paths_resolve_from_root(tmp_path):
    cfg = load_config(write(tmp_path, {"data": {"path": "images"}}), overrides={"train.epochs": 2})
    assert cfg.train.epochs == 2
    assert cfg.source_path() == tmp_path / "images"
    assert cfg.paths.model_file == tmp_path / "models" / "model.pt"
    assert cfg.as_flat_params()["train.epochs"] == "2"


@pytest.mark.parametrize(
    ("data_path", "logged"),
    [("images", "images"), ("{root}/data/mine", "data/mine"), ("/srv/secret-share/faces", "…/faces")],
)
def test_params_for_mlflow_hold_no_absolute_path(tmp_path, data_path, logged):
    cfg = load_config(write(tmp_path, {"data": {"path": data_path.format(root=tmp_path)}}))
    assert cfg.as_flat_params()["data.path"] == logged
    assert not any(str(tmp_path) in value for value in cfg.as_flat_params().values())


def test_a_key_with_a_line_break_is_named_on_one_line(tmp_path):
    with pytest.raises(PipelineError, match=r"unknown key 'data\.\\n'") as error:
        load_config(write(tmp_path, {"data": {"\n": None}}))
    assert "\n" not in str(error.value)


def test_the_significance_test_can_be_turned_off(tmp_path):
    assert load_config(write(tmp_path, {"register": {"max_p_value": None}})).register.max_p_value is None


def test_the_code_defaults_are_the_committed_params():
    """One set of defaults: a params file without a key gets what params.yaml documents."""
    from pipeline.core.config import Config, flatten

    in_code = flatten(Config().model_dump(mode="json"))
    documented = flatten(yaml.safe_load((PROJECT / "params.yaml").read_text()))  # `auto` keys as written
    assert {key: (in_code[key], value) for key, value in documented.items() if in_code[key] != value} == {}
