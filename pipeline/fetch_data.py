"""Fill `data/fashion-mnist/`, the default dataset, with the exact bytes that `data/fashion-mnist.dvc` pins.

    python -m pipeline.fetch_data [--debian DIR]      (`make setup` runs it)

From the project's DVC remote where one is configured (`dvc pull`), else by copying the four IDX
files of Debian's `dataset-fashion-mnist` package. Then checks the folder against the committed hash
and puts it in DVC's cache, so that `dvc push` carries it. The pinned hash never changes: a copy that
differs is removed and the command fails naming both hashes. Exit status 2: neither the remote nor
the Debian package has the data (`make setup` then installs the package and runs it again).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.core.errors import PipelineError, run_cli
from pipeline.core.paths import project_root
from pipeline.data.fashion_mnist import FILES

log = logging.getLogger(__name__)

FOLDER = Path("data/fashion-mnist")
DEBIAN = Path("/usr/share/datasets/fashion-mnist")


class PackageMissing(PipelineError):
    """Neither the DVC remote nor Debian's package can fill the folder."""


def pinned_md5(dvc_file: Path) -> str:
    """The folder hash a `.dvc` file pins."""
    return str(yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"])


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True)


def pull(root: Path) -> bool:
    """`dvc pull` the folder from the default remote; whether that filled it."""
    done = _dvc(root, "pull", "-q", f"{FOLDER}.dvc")
    if done.returncode:
        reason = (done.stderr.strip().splitlines() or ["no remote"])[-1]
        log.info("fetch_data: not pulled from a DVC remote (%s)", reason)
    return done.returncode == 0 and (root / FOLDER).is_dir()


def copy_debian(source: Path, target: Path) -> None:
    """Copy the IDX files from Debian's package folder into `target`, all or nothing."""
    names = [name for pair in FILES.values() for name in pair]
    missing = [name for name in names if not (source / name).is_file()]
    if missing:
        raise PackageMissing(
            f"{source / missing[0]}: Fashion-MNIST not found and no DVC remote has it; install it with "
            "'apt-get install dataset-fashion-mnist' (make setup does), or configure the DVC remote and 'dvc pull'"
        )
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in names:
        shutil.copyfile(source / name, staging / name)
    staging.rename(target)


def cache(root: Path) -> str:
    """Check the folder against the pinned hash and put it in DVC's cache; the hash."""
    dvc_file = root / f"{FOLDER}.dvc"
    pinned, pinned_text = pinned_md5(dvc_file), dvc_file.read_text()
    done = _dvc(root, "add", "-q", str(FOLDER))
    found = pinned_md5(dvc_file)
    if done.returncode or found != pinned:
        dvc_file.write_text(pinned_text)
        shutil.rmtree(root / FOLDER)
        reason = (done.stderr.strip().splitlines() or [""])[-1] if done.returncode else ""
        raise PipelineError(
            f"{FOLDER}: its files (md5 {found}) differ from the version {dvc_file.name} pins ({pinned}) {reason}; "
            "removed them: 'dvc pull' the pinned data, or 'dvc add' the new version on purpose"
        )
    return found


def run(root: Path, debian: Path = DEBIAN) -> str:
    """Make sure the folder holds the pinned data and DVC's cache has it; the data's hash."""
    target = root / FOLDER
    if not target.is_dir() and not pull(root):
        copy_debian(debian, target)
        log.info("fetch_data: copied %s -> %s", debian, FOLDER)
    version = cache(root)
    log.info("fetch_data: %s holds the pinned Fashion-MNIST (md5 %s)", FOLDER, version)
    return version


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.fetch_data", description=__doc__.splitlines()[0])
    parser.add_argument("--debian", type=Path, default=DEBIAN, help=f"Debian's package folder (default {DEBIAN})")
    args = parser.parse_args()
    try:
        run(project_root(), args.debian)
    except PackageMissing as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run_cli(main)
