"""What changed between two versions of a dataset, from their manifests (path, split, label, sha256).

An image is followed by its path first, then by its content (a file moved to another class folder
keeps its bytes): the same path with other bytes is *changed*; the same image (by path, or by bytes
under a new path) with another label is *relabelled*, in another split *moved*; what is left is
*added* or *removed*. Counts are per class: the new label for added, changed, relabelled and moved
images, the old one for removed images.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

IDENTITY = ["path", "split", "label", "sha256"]  # the manifest columns a diff reads
KINDS = ("added", "removed", "changed", "relabelled", "moved")


@dataclass(frozen=True)
class DataDiff:
    """Per-class counts of each kind of change, and each relabelled image (path, old label, new label)."""

    counts: pd.DataFrame  # index: class; columns: KINDS
    relabelled: list[tuple[str, str, str]] = field(default_factory=list)
    old_images: int = 0
    new_images: int = 0

    @property
    def unchanged(self) -> bool:
        return not self.counts.to_numpy().any()

    def summary(self) -> str:
        """One line: '+120 Sneaker, −3 Bag, 2 changed, 2 relabelled, 5 moved between splits'."""
        if self.unchanged:
            return "no change"
        parts = [f"+{n} {label}" for label, n in self.counts["added"].items() if n]
        parts += [f"−{n} {label}" for label, n in self.counts["removed"].items() if n]
        for kind, words in (("changed", "changed"), ("relabelled", "relabelled"), ("moved", "moved between splits")):
            if total := int(self.counts[kind].sum()):
                parts.append(f"{total} {words}")
        return ", ".join(parts)

    def as_dict(self) -> dict:
        changed = self.counts[self.counts.to_numpy().any(axis=1)]
        return {
            "summary": self.summary(),
            "old_images": self.old_images,
            "new_images": self.new_images,
            "per_class": {label: {k: int(v) for k, v in row.items()} for label, row in changed.iterrows()},
            "relabelled": [{"path": p, "from": old, "to": new} for p, old, new in self.relabelled],
        }

    def markdown(self) -> str:
        """The per-class table (classes with a change only) under the summary line."""
        changed = self.counts[self.counts.to_numpy().any(axis=1)]
        lines = [f"**{self.summary()}** ({self.old_images} → {self.new_images} images)"]
        if len(changed):
            lines += ["", "| class | " + " | ".join(KINDS) + " |", "|---" * (len(KINDS) + 1) + "|"]
            lines += [f"| {label} | " + " | ".join(str(int(row[k])) for k in KINDS) + " |"
                      for label, row in changed.iterrows()]  # fmt: skip
        return "\n".join(lines)


def diff(old: pd.DataFrame, new: pd.DataFrame) -> DataDiff:
    """Compare two manifests (only their IDENTITY columns are read)."""
    old, new = old[IDENTITY].reset_index(drop=True), new[IDENTITY].reset_index(drop=True)
    by_path = old.merge(new, on="path", suffixes=("_old", "_new"))
    rest_old = old[~old["path"].isin(by_path["path"])].copy()
    rest_new = new[~new["path"].isin(by_path["path"])].copy()
    # the n-th copy of some bytes left in the old version pairs with the n-th copy in the new one
    rest_old["copy"] = rest_old.groupby("sha256").cumcount()
    rest_new["copy"] = rest_new.groupby("sha256").cumcount()
    by_bytes = rest_old.merge(rest_new, on=["sha256", "copy"], suffixes=("_old", "_new"))
    added = rest_new[~rest_new.set_index(["sha256", "copy"]).index.isin(by_bytes.set_index(["sha256", "copy"]).index)]
    removed = rest_old[~rest_old.set_index(["sha256", "copy"]).index.isin(by_bytes.set_index(["sha256", "copy"]).index)]

    followed = pd.concat([
        by_path.assign(changed=by_path["sha256_old"] != by_path["sha256_new"], path_new=by_path["path"]),
        by_bytes.assign(changed=False),
    ], ignore_index=True)  # fmt: skip
    relabelled = followed[followed["label_old"] != followed["label_new"]]
    classes = sorted(set(old["label"]) | set(new["label"]))
    counts = pd.DataFrame({
        "added": added["label"].value_counts(),
        "removed": removed["label"].value_counts(),
        "changed": followed.loc[followed["changed"], "label_new"].value_counts(),
        "relabelled": relabelled["label_new"].value_counts(),
        "moved": followed.loc[followed["split_old"] != followed["split_new"], "label_new"].value_counts(),
    }, index=classes, columns=list(KINDS)).fillna(0).astype(int)  # fmt: skip
    counts.index.name = "class"
    return DataDiff(
        counts=counts,
        relabelled=list(zip(relabelled["path_new"], relabelled["label_old"], relabelled["label_new"], strict=True)),
        old_images=len(old),
        new_images=len(new),
    )
