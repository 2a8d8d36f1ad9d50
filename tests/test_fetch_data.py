"""The default dataset in data/fashion-mnist, pinned by data/fashion-mnist.dvc: filled from Debian's
package or from a DVC remote, never under another hash."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dvc_repo import command_env, dvc, run
from tests.synthetic import PROJECT

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
PINNED = (PROJECT / "data" / "fashion-mnist.dvc").read_text()


def project_repo(root: Path) -> Path:
    """The project with its default params and the committed .dvc file, without the data, as a git + DVC repo."""
    for package in ("pipeline", "flows"):
        shutil.copytree(PROJECT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore", "data/fashion-mnist.dvc", "data/.gitignore"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT / name, root / name)
    run(root, "git", "init", "-q")
    dvc(root, "init", "-q")
    dvc(root, "config", "core.analytics", "false")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "project")
    return root


def error_line(done: subprocess.CompletedProcess) -> str:
    """The one `error:` line a failed command prints (progress lines may come before it)."""
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    return line


def fetch(root: Path, debian: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.fetch_data", "--debian", str(debian)],
                          cwd=root, env=command_env(), capture_output=True, text=True)  # fmt: skip


@pytest.fixture
def debian_copy(tmp_path: Path) -> Path:
    """The Debian package's files, as a folder the test may change (the installed package, or the
    project's own pinned copy where the package is absent)."""
    source = DEBIAN if DEBIAN.is_dir() else PROJECT / "data" / "fashion-mnist"
    return Path(shutil.copytree(source, tmp_path / "debian"))


def test_without_a_remote_the_debian_files_are_copied_checked_and_cached(tmp_path, debian_copy):
    repo = project_repo(tmp_path / "repo")
    done = fetch(repo, debian_copy)
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in (repo / "data" / "fashion-mnist").iterdir())
    assert names == sorted(p.name for p in debian_copy.iterdir()) and len(names) == 4
    assert (repo / "data" / "fashion-mnist.dvc").read_text() == PINNED
    assert "up to date" in dvc(repo, "status", "data/fashion-mnist.dvc")
    assert run(repo, "git", "status", "--porcelain").stdout == ""  # nothing for git: the data is DVC's
    assert fetch(repo, tmp_path / "nowhere").returncode == 0  # a second call finds the folder in place


def test_other_bytes_are_refused_under_the_pinned_name(tmp_path, debian_copy):
    labels = debian_copy / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(labels.read_bytes())
    data[len(data) // 2] ^= 0xFF
    labels.write_bytes(bytes(data))  # a package upgrade that changed a file
    repo = project_repo(tmp_path / "repo")
    done = fetch(repo, debian_copy)
    assert done.returncode == 1
    line = error_line(done)
    assert "data/fashion-mnist: its files (md5" in line and "differ from the version fashion-mnist.dvc pins" in line
    assert (repo / "data" / "fashion-mnist.dvc").read_text() == PINNED
    assert not (repo / "data" / "fashion-mnist").exists()


def test_with_neither_a_remote_nor_the_package_the_command_says_what_to_install(tmp_path):
    repo = project_repo(tmp_path / "repo")
    done = fetch(repo, tmp_path / "nowhere")
    assert done.returncode == 2
    line = error_line(done)
    assert "Fashion-MNIST not found and no DVC remote has it" in line
    assert "apt-get install dataset-fashion-mnist" in line


def test_a_clone_without_the_debian_package_pulls_the_data_from_the_remote_and_reproduces(tmp_path, debian_copy):
    repo = project_repo(tmp_path / "repo")
    dvc(repo, "remote", "add", "-d", "storage", str(tmp_path / "remote"))
    run(repo, "git", "commit", "-qam", "remote")
    assert fetch(repo, debian_copy).returncode == 0
    dvc(repo, "push")
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    done = fetch(clone, tmp_path / "no-debian-package-here")
    assert done.returncode == 0, done.stderr
    for name in (p.name for p in debian_copy.iterdir()):
        assert (clone / "data" / "fashion-mnist" / name).read_bytes() == (debian_copy / name).read_bytes()
    output = dvc(clone, "repro", "preprocess")  # the validate and preprocess stages run on the pulled data
    assert "Running stage 'validate'" in output and "Running stage 'preprocess'" in output
    assert (clone / "data" / "processed" / "train" / "index.json").is_file()
