"""The reference: what a user following the usual tutorials writes, on the same data and model.

torchvision `ImageFolder` over PNG files, `ToTensor` + `Normalize`, a `DataLoader`, the model in
default NCHW fp32, a plain training loop.

    python -m bench.speed.reference PNG_FOLDER PROJECT_ROOT [--images N]

Prints one JSON line: {"images_per_second": ...}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn
from torchvision import datasets, transforms

from pipeline.core.config import load_config
from pipeline.model.network import AttentionCNN

BATCH_SIZE = 64
WARMUP_BATCHES = 5


def measure(png_folder: Path, project_root: Path, images: int) -> dict:
    cfg = load_config(project_root / "params.yaml")
    meta = json.loads((project_root / "data" / "processed" / "meta.json").read_text())
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    transform = transforms.Compose(
        [transforms.Grayscale() if meta["channels"] == 1 else transforms.Lambda(lambda image: image.convert("RGB")),
         transforms.ToTensor(), transforms.Normalize(meta["mean"], meta["std"])]
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(
        datasets.ImageFolder(str(png_folder), transform=transform), batch_size=BATCH_SIZE, shuffle=True, num_workers=2
    )
    # The tutorial normalises in the transform, so the model's own normalisation is the identity.
    identity = ([0.0] * meta["channels"], [1 / 255] * meta["channels"])
    model = AttentionCNN(cfg.model, meta["channels"], len(meta["classes"]), *identity).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    criterion = nn.CrossEntropyLoss()
    model.train()
    seen, start = 0, 0.0
    for step, (inputs, labels) in enumerate(loader):
        if step == WARMUP_BATCHES:
            seen, start = 0, time.perf_counter()
        inputs, labels = inputs.to(device), labels.to(device)
        optimizer.zero_grad()
        loss = criterion(model(inputs).logits, labels)
        loss.backward()
        optimizer.step()
        seen += len(labels)
        if step >= WARMUP_BATCHES and seen >= images:
            break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"images_per_second": seen / (time.perf_counter() - start)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.speed.reference")
    parser.add_argument("png_folder", type=Path)
    parser.add_argument("project_root", type=Path)
    parser.add_argument("--images", type=int, default=6400)
    args = parser.parse_args()
    print(json.dumps(measure(args.png_folder, args.project_root, args.images)))


if __name__ == "__main__":
    main()
