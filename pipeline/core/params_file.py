"""Flow parameters that override params.yaml, written the way `dvc exp run -S` writes them, and
presets: YAML files of such overrides laid out like params.yaml (e.g. `params.gpu.yaml`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from pipeline.core.config import flatten, load_config, read_sections


def read_preset(path: Path) -> dict[str, Any]:
    """A preset file's settings as dotted overrides: `{"train.epochs": 40, ...}`."""
    return flatten(read_sections(path, "no such preset file; give a YAML file laid out like params.yaml"))


def _null(representer, _value):
    return representer.represent_scalar("tag:yaml.org,2002:null", "null")


def apply_overrides(root: Path, overrides: dict[str, Any]) -> None:
    """Set `section.key: value` pairs in `root/params.yaml`, keeping its comments.

    The overrides are validated first: a wrong key or value raises before anything is written.
    """
    path = root / "params.yaml"
    load_config(path, overrides)
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.representer.add_representer(type(None), _null)  # `key: null` stays so (ruamel writes `key:`)
    document = yaml.load(path.read_text())
    for dotted, value in overrides.items():
        section = document
        *parents, leaf = dotted.split(".")
        for part in parents:
            section = section.setdefault(part, {})
        section[leaf] = value
    with path.open("w") as handle:
        yaml.dump(document, handle)
