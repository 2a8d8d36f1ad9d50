"""Camera-size photos through validation and preprocessing: how fast, and in how much memory.

    sudo python -m bench.speed.camera_photos [--photos 40] [--size 128] [--limit-mb 1024]

Writes `--photos` 20-Mpx JPEGs (5472×3648, a DJI Phantom 4's frame: skimage's sample photos
scaled up, with sensor-like noise, quality 90) into two class folders, then times, in this
process, medians of 3:
- validate's scan (`image_folder.scan`: read, hash, decode, normalise every file) decoding each
  JPEG whole, as it did before 2026-12-06, and at the model's side (`at_least`, PIL's draft mode,
  as preprocess decodes);
- preprocess's decode (`image_folder.load`) to `--size` px.
Then, in a memory cgroup of `--limit-mb` (v1 or v2; Linux, as root), a fresh process scans and
loads a folder of the largest images the defaults accept, 64 Mpx (8192×8192) as PNG and as JPEG,
and the cgroup's own peak memory is reported (not the process's ru_maxrss). Writes
`bench/results/camera_photos.json`; prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

from bench import RESULTS
from bench.machine import describe
from bench.speed.memory_limit import cgroup_unavailable, memory_cgroup
from pipeline.core.paths import project_root
from pipeline.data import image_folder
from pipeline.data.images import DEFAULT_MAX_PIXELS

DRONE = (5472, 3648)
LARGEST = (8192, 8192)  # 64 Mpx: validate.max_pixels' default
SAMPLES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")
MEASURE = """
import json, sys
from pathlib import Path
from pipeline.data import image_folder
root, size = Path(sys.argv[1]), int(sys.argv[2])
scan = image_folder.scan(root, at_least=size)
files = scan.files
ok = files[files["decodable"]]
arrays = image_folder.load(root, list(ok["path"]), size, 3)
print(json.dumps({"decodable": int(files["decodable"].sum()), "files": len(files), "shape": list(arrays.shape)}))
"""


def photo(name: str, size: tuple[int, int], seed: int) -> Image.Image:
    """A sample photo scaled up to `size` with sensor-like noise (JPEG then costs what a real one does)."""
    image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize(size, Image.Resampling.BICUBIC)
    noise = np.random.default_rng(seed).normal(0, 6, (size[1], size[0], 1))
    return Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8))


def write_photos(root: Path, count: int) -> None:
    for index in range(count):
        folder = root / ("a" if index % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        photo(SAMPLES[index % len(SAMPLES)], DRONE, index).save(folder / f"{index:03d}.jpg", quality=90)


def write_largest(root: Path) -> None:
    for label, suffix in (("a", "png"), ("b", "jpg")):
        (root / label).mkdir(parents=True, exist_ok=True)
        picture = photo("astronaut", LARGEST, 0)
        picture.save(root / label / f"largest.{suffix}", **({"quality": 90} if suffix == "jpg" else {}))


def median_seconds(action, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_in_cgroup(root: Path, size: int, limit_mb: int) -> dict:
    """Scan and load `root` in a fresh process inside a memory cgroup; its exit code and peak."""
    with memory_cgroup(limit_mb * 2**20) as cgroup:
        done = subprocess.run([sys.executable, "-c", MEASURE, str(root), str(size)], cwd=project_root(),
                              preexec_fn=cgroup.enter, capture_output=True, text=True, timeout=600)  # fmt: skip
        peak = cgroup.peak_bytes()
    result = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {}
    return {"returncode": done.returncode, "peak_mb": round(peak / 2**20), "limit_mb": limit_mb, **result}


def markdown(output: dict) -> str:
    n, size = output["photos"], output["size"]
    rows = [
        f"| step ({n} JPEGs of {DRONE[0]}×{DRONE[1]}, to {size} px) | seconds | photos/s |",
        "|---|---|---|",
    ]
    for label, key in (("validate's scan, each JPEG decoded whole (before)", "scan_whole_seconds"),
                       ("validate's scan, decoded at the model's side (now)", "scan_draft_seconds"),
                       ("preprocess's decode to the model's side", "load_seconds")):  # fmt: skip
        rows.append(f"| {label} | {output[key]:.2f} | {n / output[key]:.1f} |")
    memory = output["largest"]
    rows.append(
        f"\nThe largest images the defaults accept ({LARGEST[0]}×{LARGEST[1]}, one PNG and one JPEG), scanned and "
        f"decoded in a fresh process in a {memory['limit_mb']} MB memory cgroup: exit {memory['returncode']}, "
        f"peak {memory['peak_mb']} MB, {memory.get('decodable', 0)} of 2 decodable."
    )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=40)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--limit-mb", type=int, default=1024)
    args = parser.parse_args()
    if reason := cgroup_unavailable():
        raise SystemExit(f"bench.speed.camera_photos: {reason}; run it as root on Linux")
    with tempfile.TemporaryDirectory(prefix="attention-pipeline-photos-") as work:
        photos, largest = Path(work) / "photos", Path(work) / "largest"
        write_photos(photos, args.photos)
        write_largest(largest)
        whole = median_seconds(lambda: image_folder.scan(photos, DEFAULT_MAX_PIXELS))
        draft = median_seconds(lambda: image_folder.scan(photos, DEFAULT_MAX_PIXELS, at_least=args.size))
        paths = list(image_folder.scan(photos, at_least=args.size).files["path"])
        load = median_seconds(lambda: image_folder.load(photos, paths, args.size, 3))
        output = {
            "machine": describe(), "photos": args.photos, "size": args.size,
            "jpeg_megabytes": round(sum(p.stat().st_size for p in photos.rglob("*.jpg")) / 1e6 / args.photos, 2),
            "scan_whole_seconds": whole, "scan_draft_seconds": draft, "load_seconds": load,
            "largest": peak_in_cgroup(largest, args.size, args.limit_mb),
        }  # fmt: skip
    (RESULTS / "camera_photos.json").write_text(json.dumps(output, indent=2) + "\n")
    print(markdown(output))


if __name__ == "__main__":
    main()
