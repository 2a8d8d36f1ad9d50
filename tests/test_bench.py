"""The benchmark's own code on a tiny project: it measures the real training step and writes its report.
(Timings are not asserted: the benchmark is `make bench`, not a test.)"""

import json
import subprocess
import sys

import pytest
import torch
import yaml
from PIL import Image

from bench import benchmarks_md
from bench.gpu import time_to_accuracy
from bench.quality import attention as bench_attention
from bench.run import export_pngs
from bench.speed import camera_photos, training_step
from pipeline import preprocess, train, validate
from pipeline.core.config import load_config
from pipeline.training.runtime import native_cpu_bf16


@pytest.fixture
def prepared(project):
    validate.run(project)
    preprocess.run(project)
    return project


def test_pipeline_variant_is_the_train_stage_runtime_and_counts_flops(prepared):
    result = training_step.measure(prepared.root, "pipeline", images=64, count_flops=True)
    expected_precision = "bf16" if native_cpu_bf16() else "fp32"
    assert result["runtime"] == f"cpu/{expected_precision}" and result["batch_size"] == prepared.train.batch_size
    # two 3x3 convolutions (1->8 at 16x16, 8->16 at 8x8), forward and backward: well over 1 MFLOP per image
    assert result["flops_per_image"] > 1e6 and result["images_per_second"] > 0


@pytest.mark.parametrize("variant", list(training_step.LADDER))
def test_each_ladder_step_sets_what_it_names(prepared, variant):
    cfg, runtime = training_step.variant_setup(load_config(), variant)
    batch, channels_last, bf16, _ = training_step.LADDER[variant]
    assert cfg.train.batch_size == (batch or prepared.train.batch_size)
    assert runtime.channels_last == channels_last and (runtime.amp_dtype == torch.bfloat16) == bf16


def test_reference_images_are_the_preprocessed_training_split(prepared, tmp_path):
    folder = export_pngs(prepared.paths.processed, tmp_path / "png")
    meta = json.loads((prepared.paths.processed / "meta.json").read_text())
    assert sorted(p.name for p in folder.iterdir()) == meta["classes"]
    assert sum(1 for _ in folder.rglob("*.png")) == meta["counts"]["train"]


def test_report_replaces_only_its_section(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    before, after = "# Benchmarks\n\nnotes before\n\n", "\n\nnotes after\n"
    path.write_text(f"{before}{benchmarks_md.BEGIN}\nold\n{benchmarks_md.END}{after}")
    benchmarks_md.update_benchmarks(path, "new results")
    assert path.read_text() == f"{before}{benchmarks_md.BEGIN}\nnew results\n{benchmarks_md.END}{after}"


def test_time_to_accuracy_trains_like_the_stage_and_scores_the_test_split_each_epoch(prepared):
    result = time_to_accuracy.measure(prepared.root, {"train.epochs": 2})
    assert [row["epoch"] for row in result["epochs"]] == [1, 2]
    assert all(0 <= row["test_accuracy"] <= 1 and row["seconds"] > 0 for row in result["epochs"])
    assert result["training_seconds"] == pytest.approx(sum(row["seconds"] for row in result["epochs"]))
    for key in ("seconds_to_94", "seconds_to_95"):  # the first epoch at or above the target, else None
        reached = [row["training_seconds"] for row in result["epochs"] if row["test_accuracy"] >= int(key[-2:]) / 100]
        assert result[key] == (reached[0] if reached else None)
    assert result["flops_per_image"] > 1e6


def test_the_attention_benchmark_summarises_each_pooling_over_its_seeds():
    def fake(attention, seed, accuracy):
        return {"attention": attention, "seed": seed, "test_accuracy": accuracy, "pointing_game": 0.5,
                "pointing_game_centre_baseline": 0.4, "box_attention_mass": 0.3, "box_area_share": 0.1,
                "gradcam_pointing_game": 0.45, "gradcam_box_mass": 0.25, "deletion_auc_attention": 0.2,
                "deletion_auc_gradcam": 0.25, "deletion_auc_random": 0.3}  # fmt: skip

    runs = [fake("soft", 0, 0.80), fake("none", 0, 0.70), fake("soft", 1, 0.90), fake("none", 1, 0.70)]
    table = bench_attention.summary(runs)
    assert table["soft"]["test_accuracy"] == pytest.approx((0.85, 0.0707107), rel=1e-5)
    assert table["none"]["test_accuracy"] == (0.70, 0.0)
    text = bench_attention.markdown({"summary": table, "clutter": 4, "train_images": 10, "test_images": 5,
                                     "epochs": 1, "seeds": 2})  # fmt: skip
    assert "| soft | 85.0 ± 7.1 % | 50.0 ± 0.0 % / 45.0 ± 0.0 % (40.0 ± 0.0 %) |" in text
    assert "| none | 70.0 ± 0.0 % | uniform / 45.0 ± 0.0 % (40.0 ± 0.0 %) |" in text


def test_the_real_example_cuts_crowns_with_their_boxes_and_open_ground_by_its_rule(tmp_path):
    """bench.quality.neon_crowns' rule on a made-up tile: a crown patch holds its whole box, an open patch
    touches no box, and the test split comes from the tile's bottom quarter only."""
    import numpy as np
    from PIL import Image

    from bench.quality import neon_crowns

    pixels = np.random.default_rng(0).integers(0, 255, (400, 300, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 50, 40], [200, 320, 240, 360], [100, 150, 200, 260]])  # the last: too big
    patches = neon_crowns.cut_tile(pixels, boxes, np.random.default_rng(0))
    crowns = {split: [p for p in found if p[0] == "crown"] for split, found in patches.items()}
    assert [len(crowns["train"]), len(crowns["test"])] == [1, 1]
    for found in patches.values():
        for label, patch, crowns in found:
            assert patch.shape == (neon_crowns.PATCH, neon_crowns.PATCH, 3)
            if label == "crown":
                [(x0, y0, x1, y1)] = crowns
                assert 0 <= x0 < x1 <= neon_crowns.PATCH and 0 <= y0 < y1 <= neon_crowns.PATCH
    xml = tmp_path / "tile.xml"
    objects = "".join(
        f"<object><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
        for a, b, c, d in boxes
    )
    xml.write_text(f"<annotation><filename>tile.png</filename>{objects}</annotation>")
    Image.fromarray(pixels).save(tmp_path / "tile.png")
    counts = neon_crowns.build(tmp_path, tmp_path / "out")
    assert counts["train"]["crown"] == counts["test"]["crown"] == 1 and counts["test"]["open"] > 0
    lines = (tmp_path / "out" / "boxes.csv").read_text().splitlines()
    assert lines[0] == "path,x_min,y_min,x_max,y_max" and len(lines) == 3
    opened = np.asarray(Image.open(next((tmp_path / "out" / "test" / "open").iterdir())))
    test_rows = pixels[300:]  # the bottom quarter
    assert any((test_rows[y : y + 64, x : x + 64] == opened).all() for y in range(0, 37) for x in range(0, 237, 64))
    # the attention-variants set: larger patches around crowns no larger than max_box
    for max_box, crowns in ((40, [1, 1]), (39, [0, 0])):  # both small boxes have a 40-px side
        wide = neon_crowns.cut_tile(pixels, boxes, np.random.default_rng(0), patch=96, max_box=max_box)
        assert [sum(p[0] == "crown" for p in wide[split]) for split in ("train", "test")] == crowns
        assert all(patch.shape == (96, 96, 3) for found in wide.values() for _, patch, _ in found)


def test_a_crown_mosaic_puts_the_crown_patch_in_the_quarter_its_box_names(tmp_path):
    """bench.quality.neon_mosaics' rule on a made-up tile: 128-px mosaics, one box per crown mosaic,
    exactly the quarter that holds the crown patch; the other quarters and open mosaics are open patches."""
    import numpy as np
    from PIL import Image

    from bench.quality import neon_crowns, neon_mosaics

    pixels = np.random.default_rng(1).integers(0, 255, (640, 640, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 50, 40], [300, 100, 340, 130], [200, 520, 240, 560]])
    objects = "".join(
        f"<object><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
        for a, b, c, d in boxes
    )
    (tmp_path / "tile.xml").write_text(f"<annotation><filename>tile.png</filename>{objects}</annotation>")
    Image.fromarray(pixels).save(tmp_path / "tile.png")
    patches = neon_crowns.cut_tile(pixels, boxes, np.random.default_rng(0), neon_mosaics.PATCH, neon_mosaics.MAX_BOX)
    crown_cuts = [cut for found in patches.values() for label, cut, _ in found if label == "crown"]
    open_cuts = [cut for found in patches.values() for label, cut, _ in found if label == "open"]
    counts = neon_mosaics.build(tmp_path, tmp_path / "out")
    assert counts == {"train": {"crown": 2, "open": 2}, "test": {"crown": 1, "open": 1}}
    rows = (tmp_path / "out" / "boxes.csv").read_text().splitlines()[1:]
    assert len(rows) == 3 and all("/crown/" in row for row in rows)
    side = neon_mosaics.PATCH

    def quarters(image: np.ndarray) -> list[np.ndarray]:
        return [image[y : y + side, x : x + side] for y in (0, side) for x in (0, side)]

    def among(cut: np.ndarray, cuts: list[np.ndarray]) -> bool:
        return any((cut == other).all() for other in cuts)

    for row in rows:
        path, x0, y0, x1, y1 = row.split(",")
        image = np.asarray(Image.open(tmp_path / "out" / path))
        assert image.shape == (2 * side, 2 * side, 3) and (int(x1) - int(x0), int(y1) - int(y0)) == (side, side)
        boxed = int(y0) // side * 2 + int(x0) // side
        assert [among(q, crown_cuts) for q in quarters(image)] == [i == boxed for i in range(4)]
        assert all(among(q, open_cuts) for i, q in enumerate(quarters(image)) if i != boxed)
    for path in (tmp_path / "out").glob("*/open/*.png"):
        assert all(among(q, open_cuts) for q in quarters(np.asarray(Image.open(path))))


def test_a_crown_patch_lists_every_crown_mostly_inside_it_clipped():
    import numpy as np

    from bench.quality import neon_crowns

    boxes = np.array([[10, 10, 20, 20], [60, 0, 80, 10], [58, 0, 66, 10], [-4, 30, 6, 40]])
    crowns = neon_crowns.crowns_in(boxes, 0, 0, 64)
    # the second has a fifth of its area inside: left out; the third three quarters, the fourth 60 %: clipped
    assert crowns.tolist() == [[10, 10, 20, 20], [58, 0, 64, 10], [0, 30, 6, 40]]
    assert neon_crowns.crowns_in(boxes, 100, 100, 64).shape == (0, 4)


def test_the_benchmark_copy_holds_the_data_its_dvc_files_pin_so_the_stages_run_there(tmp_path):
    """`make bench` right after `make run` on a fresh clone: the copy needs `data/fashion-mnist`, which
    DVC tracks and git ignores."""
    from bench.default_run import copy_project, run
    from pipeline.core.paths import project_root

    source = project_root() / "data" / "fashion-mnist"
    copy = copy_project(project_root(), tmp_path / "copy")
    assert sorted(p.name for p in (copy / "data" / "fashion-mnist").iterdir()) == sorted(
        p.name for p in source.iterdir()
    )
    run(copy, sys.executable, "-m", "dvc", "repro", "validate")  # failed before: missing data 'source'
    assert (copy / "data" / "manifest.csv").is_file()


def test_a_copy_without_git_keeps_the_code_and_leaves_data_models_and_stores(tmp_path):
    """A lent GPU machine gets the working tree without `.git`: the copy is the tree less what git
    would ignore at the top (data, models, stores) and caches anywhere, and DVC runs there without git."""
    from bench.default_run import copy_project

    source = tmp_path / "tree"
    for name in (".dvc/config", "params.yaml", "pipeline/data/images.py", "data/fashion-mnist/x.gz",
                 "models/model.pt", ".venv/bin/python", "mlflow.db", "pipeline/__pycache__/x.pyc"):  # fmt: skip
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text("" if name == ".dvc/config" else name)
    copy = copy_project(source, tmp_path / "copy")
    kept = sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file())
    assert kept == [".dvc/config", ".dvc/config.local", "params.yaml", "pipeline/data/images.py"]
    assert "no_scm = true" in (copy / ".dvc" / "config.local").read_text()
    assert (source / "data" / "fashion-mnist" / "x.gz").is_file()  # the source untouched


def test_the_smoke_run_sets_the_benchmark_up_end_to_end_on_a_tiny_project(tmp_path):
    """`make bench-smoke`: the benchmark's own path (copy, stores, `dvc repro` in the copy, every
    measurement in its process, the report) on a tiny generated project whose data DVC pins, so a
    copy without that data fails here, as `make bench` once did on a fresh clone."""
    from bench import RESULTS
    from bench.run import smoke

    before = (RESULTS / "run.json").read_text()
    results = smoke(tmp_path)
    copy = tmp_path / "project"
    assert len(list((copy / "data" / "fashion-mnist").iterdir())) == 4  # the generated IDX files, copied
    assert json.loads((copy / "data" / "processed" / "meta.json").read_text())["counts"]["train"] > 0
    assert results["training"]["pipeline_images_per_second"] > 0 and results["inference"]["images_per_second"] > 0
    assert (copy / "mlflow.db").is_file() and results["default_run"] is None
    assert "### Training throughput" in (tmp_path / "BENCHMARKS.md").read_text()
    assert (RESULTS / "run.json").read_text() == before  # the project's own results untouched


def test_generated_cells_are_grey_300_px_split_75_25_with_one_box_per_defective_cell(tmp_path):
    """bench.quality.cell_cracks' data in the held-back set's shape: every defective cell, and no ok cell,
    has one box inside the image, and the box holds a crack: its darkest pixels lie further below the
    cell's median than those of the same box turned half a circle (which catches boxes that miss it)."""
    import numpy as np
    from PIL import Image

    from bench.quality import cell_cracks

    counts = cell_cracks.build(tmp_path, seed=1, cells=60)
    assert sum(n for split in counts.values() for n in split.values()) == 60
    assert 0.1 < sum(split.get("defective", 0) for split in counts.values()) / 60 < 0.5
    assert 0.05 < sum(counts["test"].values()) / 60 < 0.45
    rows = [row.split(",") for row in (tmp_path / "boxes.csv").read_text().split()[1:]]
    boxes = {row[0]: list(map(int, row[1:])) for row in rows}
    images = sorted(tmp_path.glob("*/*/*.png"))
    assert len(images) == 60
    assert {p.relative_to(tmp_path).as_posix() for p in images if p.parent.name == "defective"} == set(boxes)
    depth, elsewhere = [], []
    for name, (x0, y0, x1, y1) in boxes.items():
        image = Image.open(tmp_path / name)
        assert image.mode == "L" and image.size == (300, 300)
        assert 0 <= x0 < x1 <= 300 and 0 <= y0 < y1 <= 300
        pixels = np.asarray(image, float)
        depth.append(np.median(pixels) - np.percentile(pixels[y0:y1, x0:x1], 1))
        elsewhere.append(np.median(pixels) - np.percentile(pixels[::-1, ::-1][y0:y1, x0:x1], 1))
    assert np.mean(depth) > np.mean(elsewhere) + 25


def test_borderline_cells_carry_one_faint_short_crack_under_either_label(tmp_path):
    """bench.quality.cell_cracks_borderline's data: borderline cells under both labels, a box for every
    defective cell and only for them, and a borderline defective cell's crack shorter and shallower
    than a clear one's (which catches borderline cells drawn as clear ones)."""
    import numpy as np
    from PIL import Image

    from bench.quality import cell_cracks_borderline

    counts = cell_cracks_borderline.build(tmp_path, seed=5, cells=80)
    assert sum(n for split in counts.values() for n in split.values()) == 80
    borderline = set((tmp_path / "borderline.txt").read_text().split())
    assert {path.split("/")[1] for path in borderline} == {"ok", "defective"}
    rows = [row.split(",") for row in (tmp_path / "boxes.csv").read_text().split()[1:]]
    boxes = {row[0]: list(map(int, row[1:])) for row in rows}
    defective = {p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("*/defective/*.png")}
    assert set(boxes) == defective
    extent, depth = {True: [], False: []}, {True: [], False: []}
    for name, (x0, y0, x1, y1) in boxes.items():
        pixels = np.asarray(Image.open(tmp_path / name), float)
        extent[name in borderline].append(max(x1 - x0, y1 - y0))
        depth[name in borderline].append(np.median(pixels) - np.percentile(pixels[y0:y1, x0:x1], 1))
    assert max(extent[True]) <= 130 and np.mean(extent[True]) < np.mean(extent[False])  # 80 px, a branch of 40
    assert np.mean(depth[True]) < np.mean(depth[False])


def test_12_bit_cells_are_the_same_cells_in_a_12_bit_cameras_16_bit_files(tmp_path):
    """bench.quality.cell_cracks_12bit's data: the 8-bit cells' pictures, split and boxes, as 16-bit
    PNGs whose samples use 12 bits, which the pipeline reads back to the 8-bit pictures."""
    import numpy as np
    from PIL import Image

    from bench.quality import cell_cracks
    from pipeline.data.images import load_image

    assert cell_cracks.build(tmp_path / "8", seed=2, cells=6) == cell_cracks.build(
        tmp_path / "12", seed=2, cells=6, bits=12
    )
    assert (tmp_path / "8" / "boxes.csv").read_text() == (tmp_path / "12" / "boxes.csv").read_text()
    for eight in sorted((tmp_path / "8").glob("*/*/*.png")):
        twelve = tmp_path / "12" / eight.relative_to(tmp_path / "8")
        assert Image.open(twelve).mode == "I;16" and 255 < np.asarray(Image.open(twelve)).max() < 4096
        back = load_image(twelve, 300, 1, bits=12).astype(int)
        assert np.abs(back - load_image(eight, 300, 1)).max() <= 1


def test_a_cell_mosaic_puts_the_cracked_cell_in_the_quarter_its_box_names(tmp_path):
    """bench.quality.cell_mosaics' rule: one box per defective mosaic, exactly the quarter holding a
    cracked cell of its split; every other quarter, and every quarter of an ok mosaic, an ok cell of it."""
    import numpy as np
    from PIL import Image

    from bench.quality import cell_mosaics

    counts = cell_mosaics.build(tmp_path, seed=3, cells=40)
    cells = cell_mosaics.cells_by_split(np.random.default_rng(3), 40)
    assert counts == {split: {"defective": len(found[True]), "ok": len(found[True])} for split, found in cells.items()}
    assert min(counts["train"]["defective"], counts["test"]["defective"]) > 0
    rows = [row.split(",") for row in (tmp_path / "boxes.csv").read_text().split()[1:]]
    assert len(rows) == counts["train"]["defective"] + counts["test"]["defective"]
    side = 300

    def quarters(path: str) -> list[np.ndarray]:
        image = np.asarray(Image.open(tmp_path / path))
        assert image.shape == (2 * side, 2 * side)
        return [image[y : y + side, x : x + side] for y in (0, side) for x in (0, side)]

    def among(quarter: np.ndarray, split: str, cracked: bool) -> bool:
        return any((quarter == other).all() for other in cells[split][cracked])

    for path, *box in rows:
        x0, y0, x1, y1 = map(int, box)
        split, label = path.split("/")[:2]
        assert label == "defective" and (x1 - x0, y1 - y0) == (side, side)
        boxed = y0 // side * 2 + x0 // side
        assert [among(q, split, True) for q in quarters(path)] == [i == boxed for i in range(4)]
        assert all(among(q, split, False) for i, q in enumerate(quarters(path)) if i != boxed)
    for path in tmp_path.glob("*/ok/*.png"):
        split = path.relative_to(tmp_path).parts[0]
        assert all(among(q, split, False) for q in quarters(path.relative_to(tmp_path).as_posix()))


def test_a_variants_nested_setting_changes_that_key_and_keeps_its_siblings():
    """`train.augment.vflip` alone: the other augmentation settings stay as params.yaml has them."""
    import yaml

    from bench.quality.neon_crowns import with_changes
    from pipeline.core.paths import project_root

    params = yaml.safe_load((project_root() / "params.yaml").read_text())
    changed = with_changes(params, {"train": {"augment": {"vflip": True}}, "data": {"image_size": 256}})
    assert changed["train"]["augment"] == {**params["train"]["augment"], "vflip": True}
    assert changed["data"] == {**params["data"], "image_size": 256} and changed["train"]["lr"] == params["train"]["lr"]
    assert params["train"]["augment"]["vflip"] is False  # the given params untouched


@pytest.mark.parametrize(
    "bench", ["attention_variants", "cell_cracks", "cell_cracks_borderline", "cell_mosaics", "neon_mosaics"]
)
def test_every_variant_of_a_quality_bench_is_a_valid_config(bench, tmp_path):
    """A misspelt key in a variant fails here, not after the minutes of data building before its run."""
    import importlib

    import yaml

    from bench.quality.neon_crowns import with_changes
    from pipeline.core.errors import PipelineError
    from pipeline.core.paths import project_root

    params = yaml.safe_load((project_root() / "params.yaml").read_text())
    variants = importlib.import_module(f"bench.quality.{bench}").VARIANTS
    for changes in variants.values():
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(with_changes(params, changes)))
        load_config(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(with_changes(params, {"train": {"augment": {"vfilp": True}}})))
    with pytest.raises(PipelineError, match="vfilp"):
        load_config(tmp_path / "params.yaml")


def test_deletion_edges_scores_hard_and_soft_masks_per_predicted_class(prepared):
    from bench.quality import deletion_edges

    train.run(prepared)
    figures = deletion_edges.measure(prepared.root)
    called = [key.removeprefix("soft_") for key in figures if key.startswith("soft_")]
    assert called and all(f"hard_{label}" in figures for label in called)
    assert sum(figures[f"soft_{label}"]["images"] for label in called) == figures["images"] > 0
    for label in called:
        hard, soft = figures[f"hard_{label}"], figures[f"soft_{label}"]
        assert set(hard) == set(soft)
        assert all(0 <= soft[f"auc_{order}"] <= 1 for order in ("attention", "gradcam", "random"))
    table = deletion_edges.markdown({"runs": [figures]})
    assert len(table.splitlines()) == 2 + len(called)


def test_the_readme_path_bench_adds_the_images_as_the_readme_says_so_the_stages_read_them(tmp_path):
    """bench.speed.user_path's project: the images copied to `data/my_images`, pinned by a committed
    `.dvc` file (git ignores the folder), and params.yaml's data section the README's line, so that
    validation reads them and not Fashion-MNIST."""
    from functools import partial

    from bench.default_run import run
    from bench.quality import cell_cracks
    from bench.speed import user_path

    root, timings = user_path.user_project(tmp_path, partial(cell_cracks.build, cells=200))
    assert timings["dvc_add_seconds"] > 0
    tracked = run(root, "git", "ls-files")[1].split()
    assert "data/my_images.dvc" in tracked and not any(name.startswith("data/my_images/") for name in tracked)
    assert run(root, "git", "status", "--porcelain")[1].strip() == "M params.yaml"
    data = yaml.safe_load((root / "params.yaml").read_text())["data"]
    assert {key: data[key] for key in user_path.DATA} == user_path.DATA
    run(root, sys.executable, "-m", "dvc", "repro", "validate")
    manifest = (root / "data" / "manifest.csv").read_text()
    assert manifest.count("\n") == 201 and "defective" in manifest  # a header and the 200 cells


def test_the_camera_photos_bench_writes_drone_frames_in_two_classes(tmp_path):
    camera_photos.write_photos(tmp_path, 2)
    frames = sorted(tmp_path.rglob("*.jpg"))
    assert [p.parent.name for p in frames] == ["a", "b"]
    for frame in frames:
        with Image.open(frame) as image:
            assert (image.format, image.size) == ("JPEG", camera_photos.DRONE)


def test_the_inspection_drift_windows_change_the_cells_as_named_and_keep_their_labels():
    """bench.serving.inspection_drift's windows: three disjoint unchanged ones, each camera change and
    each creeping share applied to the first (labels kept), and a line change at 62 % defective."""
    import numpy as np

    from bench.serving import inspection_drift

    cells, labels = inspection_drift.new_cells(60, seed=3)
    windows = inspection_drift.windows(cells, labels, seed=0)
    first, first_labels = windows["unchanged 1"]
    assert [len(w[0]) for name, w in windows.items() if name.startswith("unchanged")] == [20, 20, 20]
    assert not any(np.array_equal(first[0], image) for image in windows["unchanged 2"][0])
    darker = windows["exposure -30 %"][0]
    assert np.mean(darker) == pytest.approx(0.7 * np.mean(first), rel=0.01)
    assert np.array_equal(windows["camera turned 90°"][0][0], np.rot90(first[0]))
    for name in [*inspection_drift.CHANGES, "25% at exposure -30 %"]:
        assert np.array_equal(windows[name][1], first_labels)
    changed = [not np.array_equal(a, b) for a, b in zip(windows["25% at exposure -30 %"][0], first, strict=True)]
    assert sum(changed) == 5
    line = windows["twice the defective share"][1]
    assert len(line) == 20 and line.mean() == pytest.approx(0.6, abs=0.05)
    served = inspection_drift.as_served(darker[:2], 32, 8)
    assert served.shape == (2, 1, 32, 32) and served.dtype == np.uint8


@pytest.mark.parametrize(
    ("bench", "argument", "message"),
    [
        ("bench.quality.attention_variants", "--variants=gated,gatd", "gatd: not one of soft, gated"),
        ("bench.quality.attention_variants", "--sets=smal", "smal: not one of crowns, small"),
        ("bench.quality.cell_cracks", "--seeds=0,one", "'0,one': give the seeds as whole numbers"),
        ("bench.quality.tuned", "--seeds=0 1", "'0 1': give the seeds as whole numbers"),
        ("bench.quality.tuned", "--fixed=train.lrr", "invalid choice: 'train.lrr'"),
    ],
)
def test_a_quality_bench_refuses_a_mistyped_seed_or_name_before_building_anything(bench, argument, message, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", bench, argument, f"--workdir={tmp_path}"], capture_output=True, text=True
    )
    assert done.returncode == 2 and message in done.stderr and not any(tmp_path.iterdir())
