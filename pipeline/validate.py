"""Stage 1, validate: check the source dataset with Great Expectations before anything trains.

Reads the source in place (`data.path`: Fashion-MNIST's IDX files or a folder of class
sub-folders). Writes `data/manifest.csv` (the accepted files), `reports/validation.json` (every rule, pass or
fail, with the offending files) and Great Expectations Data Docs under `reports/data_docs/`, which
open with no network (their scripts and styles are copied in beside them).
Only reads the images: nothing of the user's data is modified, moved or deleted.
"""

from __future__ import annotations

import copy
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.core.config import Config, load_config
from pipeline.core.errors import PipelineError, run_cli
from pipeline.core.files import atomic_path, write_json
from pipeline.core.versions import data_version
from pipeline.data import sources
from pipeline.data.data_docs_offline import make_offline
from pipeline.data.image_folder import BOXES_FILE
from pipeline.data.manifest import BOXES, Scan, box_array, upright_size

log = logging.getLogger(__name__)

MAX_LISTED = 1000


@dataclass(frozen=True)
class Rule:
    """One expectation with the words a user reads when it fails."""

    name: str
    table: str  # "files", "classes" or "boxes" (the rows of a user's boxes.csv)
    expectation: object


@dataclass
class RuleResult:
    name: str
    expectation: str
    success: bool
    table: str  # the rule's table: "files", "classes" or "boxes"
    offending: list[str] = field(default_factory=list)

    def summary(self) -> str:
        shown = ", ".join(self.offending[:5])
        more = f" (+{len(self.offending) - 5} more)" if len(self.offending) > 5 else ""
        count = len(self.offending)
        return f"{self.name}: {count} {UNITS[self.table]}{'s' if count != 1 else ''} ({shown}{more})"


@dataclass(frozen=True)
class DataDocs:
    """Where GX writes its Data Docs, and the names they show: the data source (the data asset is
    `<source>-<table>`) and the run, named after the data version."""

    folder: Path
    source: str
    run_name: str


@dataclass(frozen=True)
class ValidationOutcome:
    success: bool
    results: list[RuleResult]
    manifest: pd.DataFrame
    skipped: dict[str, list[str]]
    ignored: list[str]
    left_out: list[str]  # class folders outside data.classes


def class_set(cfg: Config, scan: Scan) -> list[str]:
    """The labels a file may have: `data.classes` when given, else the train split's class folders."""
    if cfg.data.classes:
        return list(cfg.data.classes)
    return sorted({label for split, label in scan.class_folders if split == "train"})


def check_classes(cfg: Config, scan: Scan) -> None:
    """Raise PipelineError naming each class of `data.classes` that has no class folder."""
    found = {label for _, label in scan.class_folders}
    missing = [name for name in cfg.data.classes or [] if name not in found]
    if missing:
        folders = sorted(found | {Path(folder).name for folder in scan.left_out})
        raise PipelineError(
            f"data.classes: no class folder {', '.join(repr(name) for name in missing)} in {cfg.data.path} "
            f"(its class folders: {', '.join(folders)}); fix the name in params.yaml, or set data.classes: null"
        )


def file_table(files: pd.DataFrame) -> pd.DataFrame:
    """The manifest with the per-hash columns that the duplicate and leakage rules check."""
    table = files.copy()
    by_hash = table.groupby("sha256")
    table["labels_per_image"] = by_hash["label"].transform("nunique")
    table["splits_per_image"] = by_hash["split"].transform("nunique")
    table["box_fits"] = box_fits(table)
    return table


def box_fits(files: pd.DataFrame) -> pd.Series:
    """Per row: no box, or every box inside the upright image: 0 ≤ x_min < x_max ≤ width, and the same for y."""
    fits = pd.Series(True, index=files.index)
    boxed = files[BOXES].notna()
    width, height = upright_size(files[boxed])
    for index, cell, side_x, side_y in zip(files.index[boxed], files.loc[boxed, BOXES], width, height, strict=True):
        if pd.isna(side_x) or pd.isna(side_y):
            fits[index] = False
            continue
        x_min, y_min, x_max, y_max = box_array(cell).T
        across = (0 <= x_min) & (x_min < x_max) & (x_max <= side_x)
        fits[index] = bool((across & (0 <= y_min) & (y_min < y_max) & (y_max <= side_y)).all())
    return fits


def class_table(files: pd.DataFrame, scan: Scan, classes: list[str]) -> pd.DataFrame:
    """Image count per (split, class) of the class set among `files` (the scan's, or those left after
    skipping), including empty folders and classes with none, and how many classes of the split have
    images; each named as its folder is (`Scan.folder_name`). A folder of no class of the set is the
    label rule's to name."""
    splits = sorted({split for split, _ in scan.class_folders})
    keys = sorted({(split, label) for split in splits for label in classes})
    counts = files.groupby(["split", "label"]).size()
    table = pd.DataFrame([
        {"class_folder": scan.folder_name(s, c), "split": s, "count": int(counts.get((s, c), 0))} for s, c in keys
    ])  # fmt: skip
    table["classes_with_images"] = table.groupby("split")["count"].transform(lambda counts: int((counts > 0).sum()))
    largest = table.groupby("split")["count"].transform("max")
    table["ratio_to_largest"] = largest / table["count"].where(table["count"] > 0)
    table["ratio_to_largest"] = table["ratio_to_largest"].fillna(float("inf"))
    return table


def rules(cfg: Config, classes: list[str]) -> list[Rule]:
    """The dataset's rules, from `validate:` in params.yaml."""
    import great_expectations as gx

    v = cfg.validate
    e = gx.expectations
    formats = list(v.formats) if cfg.data.source == "imagefolder" else [*v.formats, "IDX"]
    return [
        Rule("every file decodes as an image", "files",
             e.ExpectColumnValuesToBeInSet(column="decodable", value_set=[True])),
        Rule(f"image format in {formats} (validate.formats; GIF may be added)", "files",
             e.ExpectColumnValuesToBeInSet(column="format", value_set=formats)),
        Rule(f"label in the class set {classes}", "files",
             e.ExpectColumnValuesToBeInSet(column="label", value_set=classes)),
        Rule(f"width within [{v.min_side}, {v.max_side}] (validate.min_side, validate.max_side)", "files",
             e.ExpectColumnValuesToBeBetween(column="width", min_value=v.min_side, max_value=v.max_side)),
        Rule(f"height within [{v.min_side}, {v.max_side}] (validate.min_side, validate.max_side)", "files",
             e.ExpectColumnValuesToBeBetween(column="height", min_value=v.min_side, max_value=v.max_side)),
        Rule("a single frame (not animated)", "files",
             e.ExpectColumnValuesToBeBetween(column="frames", max_value=1)),
        Rule("no identical image under two labels", "files",
             e.ExpectColumnValuesToBeBetween(column="labels_per_image", max_value=1)),
        Rule("no identical image in two splits", "files",
             e.ExpectColumnValuesToBeBetween(column="splits_per_image", max_value=1)),
        Rule("object boxes inside their image (0 ≤ x_min < x_max ≤ width, 0 ≤ y_min < y_max ≤ height)", "files",
             e.ExpectColumnValuesToBeInSet(column="box_fits", value_set=[True])),
        Rule("at least 2 classes with images in each split", "classes",
             e.ExpectColumnValuesToBeBetween(column="classes_with_images", min_value=2)),
        Rule(f"at least {v.min_images_per_class} images per class in each split (validate.min_images_per_class)",
             "classes",
             e.ExpectColumnValuesToBeBetween(column="count", min_value=v.min_images_per_class)),
        Rule(f"largest class at most {v.max_imbalance}x any other (validate.max_imbalance)", "classes",
             e.ExpectColumnValuesToBeBetween(column="ratio_to_largest", max_value=v.max_imbalance)),
        Rule(f"{BOXES_FILE}: each row names an image of the dataset", "boxes",
             e.ExpectColumnValuesToBeInSet(column="image_known", value_set=[True])),
        Rule(f"{BOXES_FILE}: four numbers per row (x_min, y_min, x_max, y_max)", "boxes",
             e.ExpectColumnValuesToBeInSet(column="coordinates_numeric", value_set=[True])),
    ]  # fmt: skip


_INDEX_COLUMN = {"files": "path", "classes": "class_folder", "boxes": "row"}
UNITS = {"files": "file", "classes": "class folder", "boxes": "row"}  # what a rule of each table counts
# what to do when a table's rule fails: a class-level rule is not met by leaving files out
REMEDY = {
    "files": "fix or remove those files, or set validate.on_error: skip",
    "classes": "add images to those class folders, or change the param the rule names",
    "boxes": f"fix those rows of {BOXES_FILE}",
}


def run_expectations(tables: dict[str, pd.DataFrame], rule_list: list[Rule], docs: DataDocs | None) -> list[RuleResult]:
    """Validate each table with its rules in one GX checkpoint per table; optionally build Data Docs."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    run_id = RunIdentifier(run_name=docs.run_name if docs else None)
    source = context.data_sources.add_pandas(docs.source if docs else "dataset")
    stored = {}
    results: list[RuleResult] = []
    for table_name, table in tables.items():
        table_rules = [rule for rule in rule_list if rule.table == table_name]
        batch = source.add_dataframe_asset(table_name).add_batch_definition_whole_dataframe("all")
        suite = context.suites.add(
            gx.ExpectationSuite(
                name=f"{table_name}_suite", expectations=[copy.copy(r.expectation) for r in table_rules]
            )
        )
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{table_name}_validation", data=batch, suite=suite)
        )
        index_column = _INDEX_COLUMN[table_name]
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=f"{table_name}_checkpoint",
                validation_definitions=[definition],
                result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [index_column]},
            )
        )
        outcome = checkpoint.run(batch_parameters={"dataframe": table}, run_id=run_id)
        ((key, suite_result),) = outcome.run_results.items()
        stored[key] = suite_result
        for rule, result in zip(table_rules, suite_result.results, strict=True):
            offending = [str(row[index_column]) for row in result.result.get("unexpected_index_list") or []]
            results.append(RuleResult(rule.name, result.expectation_config.type, result.success, table_name, offending))
    if docs is not None:
        build_docs(context, stored, docs)
    return results


def build_docs(context, results: dict, docs: DataDocs) -> None:
    """Data Docs for the validation results, made to work offline. GX's page header reads the data
    asset's name from a field its fluent data sources leave empty ("Data asset: None"): fill it in first."""
    context.add_data_docs_site(
        site_name="validation",
        site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs.folder)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    for key, result in results.items():
        asset = result.meta.get("active_batch_definition", {}).get("data_asset_name")
        result.meta.setdefault("batch_spec", {})["data_asset_name"] = f"{docs.source}: {asset}"
        context.validation_results_store.set(key, result)
    context.build_data_docs(site_names=["validation"])
    make_offline(docs.folder)


def _describe_files(files: pd.DataFrame, paths: list[str]) -> list[str]:
    errors = files.set_index("path")["error"]
    return [f"{p} ({errors[p]})" if isinstance(errors.get(p), str) else p for p in paths]


def _describe_folders(classes: pd.DataFrame, folders: list[str]) -> list[str]:
    counts = classes.set_index("class_folder")["count"]
    return [f"{folder}: {counts[folder]} image{'s' if counts[folder] != 1 else ''}" for folder in folders]


def validate_scan(cfg: Config, scan: Scan, docs: DataDocs | None = None) -> ValidationOutcome:
    """Apply the rules to a scanned dataset; with `on_error: skip`, leave bad files out and re-check."""
    classes = class_set(cfg, scan)
    rule_list = rules(cfg, classes)
    files = scan.files

    def check(frame: pd.DataFrame, docs: DataDocs | None) -> tuple[list[RuleResult], pd.DataFrame]:
        tables = {
            "files": file_table(frame),
            "classes": class_table(frame, scan, classes),
        }
        if scan.box_rows is not None:
            tables["boxes"] = scan.box_rows
        return run_expectations(tables, rule_list, docs), tables["classes"]

    skip = cfg.validate.on_error == "skip"
    results, class_counts = check(files, None if skip else docs)
    skipped: dict[str, list[str]] = {}
    if skip:
        for result in results:
            if result.table == "files":
                for path in result.offending:
                    skipped.setdefault(path, []).append(result.name)
        files = files[~files["path"].isin(skipped)]
        results, class_counts = check(files, docs)
    for result in results:
        if result.table == "files":
            result.offending = _describe_files(scan.files, result.offending)
        elif result.table == "classes":
            result.offending = _describe_folders(class_counts, result.offending)
    success = all(r.success for r in results)
    return ValidationOutcome(success, results, files.reset_index(drop=True), skipped, scan.ignored, scan.left_out)


def normalisations(manifest: pd.DataFrame) -> dict[str, int]:
    """How many accepted images preprocessing will change beyond resizing: by source mode (16-bit,
    with the mode's bright level, which sets the bits they are read at; palette, alpha, CMYK, ...)
    and EXIF rotation."""
    brightest = manifest.groupby("mode")["bright_sample"].max()
    counts = {}
    for mode, n in manifest["mode"].value_counts().items():
        if mode not in ("L", "RGB"):
            peak = f" (samples up to {int(brightest[mode]):,}, hot pixels aside)" if pd.notna(brightest[mode]) else ""
            counts[f"mode {mode} to 8-bit L/RGB{peak}"] = int(n)
    rotated = int((manifest["exif_orientation"].fillna(1) != 1).sum())
    if rotated:
        counts["EXIF rotation applied"] = rotated
    return counts


def write_report(path: Path, outcome: ValidationOutcome, total_files: int, docs_index: Path) -> None:
    """Write `reports/validation.json`: each rule, pass or fail, with (up to 1000) offending files,
    the files left unread (outside the class folders, hidden, Windows' `Thumbs.db`), the class
    folders left out (outside `data.classes`) and the normalisations preprocessing applies."""
    write_json(
        path,
        {
            "success": outcome.success,
            "files": total_files,
            "accepted": len(outcome.manifest) if outcome.success else 0,
            "skipped": [{"path": p, "rules": r} for p, r in sorted(outcome.skipped.items())],
            "ignored": outcome.ignored,
            "left_out": outcome.left_out,
            "normalised": normalisations(outcome.manifest),
            "rules": [
                {
                    "rule": r.name,
                    "expectation": r.expectation,
                    "success": r.success,
                    "offending_count": len(r.offending),
                    "offending": r.offending[:MAX_LISTED],
                }
                for r in outcome.results
            ],
            "data_docs": docs_index.as_posix(),
        },
    )


def run(cfg: Config) -> ValidationOutcome:
    """Validate the source; write the manifest and reports; raise PipelineError naming failed rules."""
    source = sources.scan(cfg)
    check_classes(cfg, source)
    reports = cfg.paths.reports
    docs_dir = reports / "data_docs"
    shutil.rmtree(docs_dir, ignore_errors=True)
    outcome = validate_scan(cfg, source, DataDocs(docs_dir, cfg.dataset_name(), data_version(cfg)))
    report_path = reports / "validation.json"
    write_report(report_path, outcome, len(source.files), (docs_dir / "index.html").relative_to(cfg.root))
    for path in outcome.ignored:
        log.warning("validate: ignored %s (outside the class folders, hidden, or a system file)", path)
    for folder in outcome.left_out:
        log.info("validate: left out %s (not in data.classes)", folder)
    for path, reasons in sorted(outcome.skipped.items()):
        log.warning("validate: skipped %s (%s)", path, "; ".join(reasons))
    if not outcome.success:
        failed = [r for r in outcome.results if not r.success]
        remedies = dict.fromkeys(REMEDY[r.table] for r in failed)  # the tables' remedies, in the rules' order
        raise PipelineError(
            f"data validation failed: {'; '.join(r.summary() for r in failed)}; "
            f"details in {report_path.relative_to(cfg.root)} ({'; '.join(remedies)})"
        )
    with atomic_path(cfg.paths.manifest) as temporary:
        outcome.manifest.to_csv(temporary, index=False)
    log.info(
        "validate: %d of %d files accepted, %d rules passed -> %s",
        len(outcome.manifest), len(source.files), len(outcome.results), cfg.paths.manifest,
    )  # fmt: skip
    return outcome


def main() -> None:
    run(load_config())


if __name__ == "__main__":
    run_cli(main)
