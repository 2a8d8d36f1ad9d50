"""Flow parameters that override params.yaml, written the way `dvc exp run -S` writes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from pipeline.config import load_config


def apply_overrides(root: Path, overrides: dict[str, Any]) -> None:
    """Set `section.key: value` pairs in `root/params.yaml`, keeping its comments.

    The overrides are validated first: a wrong key or value raises before anything is written.
    """
    path = root / "params.yaml"
    load_config(path, overrides)
    yaml = YAML()
    yaml.preserve_quotes = True
    document = yaml.load(path.read_text())
    for dotted, value in overrides.items():
        section = document
        *parents, leaf = dotted.split(".")
        for part in parents:
            section = section.setdefault(part, {})
        section[leaf] = value
    with path.open("w") as handle:
        yaml.dump(document, handle)
