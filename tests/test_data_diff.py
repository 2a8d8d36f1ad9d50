"""`python -m pipeline.data_diff` as a user runs it: two git revisions through DVC, the workspace."""

import json
import subprocess
import sys

from PIL import Image

from tests.dvc_repo import command_env, dvc, make_repo, run


def data_diff(repo, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.data_diff", *args],
                          cwd=repo, env=command_env(), capture_output=True, text=True)  # fmt: skip


def test_two_commits_and_the_workspace_are_compared_through_dvc(tmp_path):
    repo = make_repo(tmp_path / "repo")
    dvc(repo, "repro", "validate")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "validated")
    images = repo / "data" / "images"
    for index in range(3):
        Image.new("L", (16, 16), 90 + index).save(images / "train" / "squares" / f"new{index}.png")
    (images / "test" / "bars" / "004.png").rename(images / "test" / "columns" / "was-bars-004.png")

    done = data_diff(repo, "HEAD", "workspace", "--json", "changes.json")  # before any validation or commit
    assert done.returncode == 0, done.stderr
    assert "HEAD → workspace: **+3 squares, 1 relabelled** (150 → 153 images)" in done.stdout
    assert "| squares | 3 | 0 | 0 | 0 | 0 |" in done.stdout
    changes = json.loads((repo / "changes.json").read_text())
    assert changes["relabelled"] == [{"path": "test/columns/was-bars-004.png", "from": "bars", "to": "columns"}]

    dvc(repo, "add", "-q", "data/images")
    dvc(repo, "repro", "validate")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "more squares")
    done = data_diff(repo, "HEAD~1", "HEAD")
    assert done.returncode == 0, done.stderr
    assert "HEAD~1 → HEAD: **+3 squares, 1 relabelled**" in done.stdout

    unknown = data_diff(repo, "no-such-tag", "HEAD")
    assert unknown.returncode == 1 and unknown.stderr.strip().splitlines()[-1].startswith(
        "error: no-such-tag: no manifest at that git revision"
    )
