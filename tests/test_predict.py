"""Batch prediction as a user runs it: folders in, a CSV out, unreadable files listed, reruns resume."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from pipeline import train
from pipeline.model.model_file import load_model
from tests.synthetic import CLASSES, prepared_project


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model file trained on the generated dataset, and that dataset's folder."""
    root = tmp_path_factory.mktemp("predict")
    with prepared_project(root, {"train": 40, "test": 10}) as cfg:
        train.run(cfg)
    return cfg.root, root / "images"


def predict(project, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.predict", *map(str, args), "--model", "models/model.pt"],
                          cwd=project, capture_output=True, text=True)  # fmt: skip


def rows(path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_folder_is_classified_into_a_csv_listing_unreadable_files_and_a_rerun_resumes(trained, tmp_path):
    project, images = trained
    folder = tmp_path / "batch"
    for split in ("train", "test"):
        for path in (images / split).rglob("*.png"):
            target = folder / split / path.relative_to(images / split)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    (folder / "test" / "broken.png").write_bytes(b"\x89PNG not really")
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.png").write_bytes(b"")  # hidden: not read
    out = tmp_path / "predictions.csv"

    done = predict(project, folder, "--out", out, "--top-k", "2", "--workers", "2", "--batch-size", "32")
    assert done.returncode == 0, done.stderr
    written = rows(out)
    assert len(written) == 152 and len({row["path"] for row in written}) == 152
    assert list(written[0]) == [
        "path",
        "class",
        "probability",
        "novelty",
        "unknown",
        "class_2",
        "probability_2",
        "error",
    ]
    classified = [row for row in written if not row["error"]]
    assert len(classified) == 150
    assert all(float(row["novelty"]) >= 0 and row["unknown"] in {"true", "false"} for row in classified)
    assert all(row["class"] in {"bars", "columns", "squares"} for row in classified)
    weights = dict(zip(CLASSES, load_model(project / "models" / "model.pt")[1].rule.weights or [1.0] * 3, strict=True))
    for row in classified:  # the answer: the most probable class, each weighed by its training weight (none here)
        weighed, second = (float(row[f"probability{n}"]) * weights[row[f"class{n}"]] for n in ("", "_2"))
        assert row["class"] != row["class_2"] and weighed >= second - 1e-5
    unreadable = {row["path"]: row["error"] for row in written if row["error"]}
    assert set(unreadable) == {str(folder / "test" / "broken.png"), str(folder / "notes.txt")}
    assert all("cannot decode image" in reason and "BytesIO" not in reason for reason in unreadable.values())
    summary = done.stderr.strip().splitlines()[-1]
    assert summary.startswith("150 classified, 2 unreadable: ") and summary.endswith(f"-> {out}")

    with out.open("w", newline="") as handle:  # an interrupted run: the header and the first 40 rows
        writer = csv.DictWriter(handle, fieldnames=list(written[0]))
        writer.writeheader()
        writer.writerows(written[:40])
    resumed = predict(project, folder, "--out", out, "--top-k", "2")
    assert resumed.returncode == 0 and "40 already in" in resumed.stderr
    assert sorted(r["path"] for r in rows(out)) == sorted(r["path"] for r in written)
    again = predict(project, folder, "--out", out, "--top-k", "2")
    assert "0 classified, 0 unreadable; 152 already in" in again.stderr and len(rows(out)) == 152
    other_k = predict(project, folder, "--out", out, "--top-k", "3")
    assert other_k.returncode == 1 and "not a predictions file of this model and --top-k" in other_k.stderr


def test_heatmaps_keep_the_folder_layout_and_the_image_size(trained, tmp_path):
    project, images = trained
    big = tmp_path / "in" / "a" / "same.png"
    big.parent.mkdir(parents=True)
    Image.open(next((images / "test" / "bars").iterdir())).resize((48, 32)).save(big)
    other = tmp_path / "in" / "b" / "same.png"  # the same name in another folder: no collision
    other.parent.mkdir(parents=True)
    other.write_bytes(big.read_bytes())
    done = predict(project, tmp_path / "in", "--heatmap", tmp_path / "maps")
    assert done.returncode == 0, done.stderr
    lines = [line.split("\t") for line in done.stdout.splitlines()]
    assert [line[3] for line in lines] == [str(tmp_path / "maps" / d / "same_attention.png") for d in ("a", "b")]
    assert Image.open(lines[0][3]).size == (48, 32)


def test_heatmaps_of_images_with_one_name_in_a_folder_or_in_inputs_given_apart_are_all_kept(trained, tmp_path):
    project, images = trained
    source = next((images / "test" / "bars").iterdir())
    for folder in ("in", "apart"):
        (tmp_path / folder).mkdir()
        Image.open(source).save(tmp_path / folder / "a.png")
    Image.open(source).convert("RGB").save(tmp_path / "in" / "a.jpg")
    done = predict(project, tmp_path / "in", tmp_path / "apart", "--heatmap", tmp_path / "maps")
    assert done.returncode == 0, done.stderr
    written = [Path(line.split("\t")[3]).name for line in done.stdout.splitlines()]
    assert written == ["a_jpg_attention.png", "a_png_attention.png", "a_png_2_attention.png"]
    assert len(list((tmp_path / "maps").iterdir())) == 3
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = predict(project, empty)
    assert nothing.returncode == 1 and nothing.stderr.strip() == f"error: {empty}: no files to classify in it"


def test_a_path_that_does_not_exist_stops_before_anything_runs(trained, tmp_path):
    project, _ = trained
    done = predict(project, tmp_path / "nope")
    assert done.returncode == 1 and done.stderr.strip() == f"error: {tmp_path / 'nope'}: no such image file or folder"
