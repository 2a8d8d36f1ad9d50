"""Camera-size photos through validation, preprocessing and the attention overlay: how fast, and
in how much memory.

    sudo python -m bench.speed.camera_photos [--photos 40] [--size 128] [--limit-mb 1024]

Writes `--photos` 20-Mpx JPEGs (5472×3648, a DJI Phantom 4's frame: skimage's sample photos
scaled up, with sensor-like noise, quality 90) into two class folders, then times, in this
process, medians of 3:
- validate's scan (`image_folder.scan`: read, hash, decode, normalise every file) decoding each
  JPEG whole, as it did before 2026-12-06, and at the model's side (`at_least`, PIL's draft mode,
  as preprocess decodes);
- preprocess's decode (`image_folder.load`) to `--size` px.
Then, each in a fresh process in a memory cgroup (v1 or v2; Linux, as root), with the cgroup's own
peak memory (not the process's ru_maxrss):
- the attention overlay of one frame at its own size, as `pipeline.predict`, the server
  (`overlay: true`) and the demo draw it (`pipeline.core.overlay`; median of 3; 4 × `--limit-mb`);
- a scan and load of a folder of the largest images the defaults accept, 64 Mpx (8192×8192) as
  PNG and as JPEG (`--limit-mb`).
Writes `bench/results/camera_photos.json`; prints a markdown table.
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
DRAW = """
import json, statistics, sys, time
from pathlib import Path
import numpy as np
from pipeline.core.overlay import overlay
from pipeline.data.images import decode_image
photo = decode_image(Path(sys.argv[1]), 3)
attention = np.random.default_rng(0).random((32, 32)).astype(np.float32)
seconds = []
for _ in range(3):
    start = time.perf_counter()
    drawn = overlay(photo, attention)
    seconds.append(time.perf_counter() - start)
print(json.dumps({"seconds": statistics.median(seconds), "size": list(drawn.size)}))
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
    picture = photo("astronaut", LARGEST, 0)  # made once, written as a PNG and as a JPEG
    for label, suffix in (("a", "png"), ("b", "jpg")):
        (root / label).mkdir(parents=True, exist_ok=True)
        picture.save(root / label / f"largest.{suffix}", **({"quality": 90} if suffix == "jpg" else {}))


def median_seconds(action, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def in_cgroup(code: str, args: list[str], limit_mb: int) -> dict:
    """Run `code` in a fresh process inside a memory cgroup: its exit code, the cgroup's peak, and
    the JSON the code printed last."""
    with memory_cgroup(limit_mb * 2**20) as cgroup:
        done = subprocess.run([sys.executable, "-c", code, *args], cwd=project_root(),
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
    drawn = output["overlay"]
    rows.append(
        f"\nThe attention overlay of one frame at its own size, in a fresh process in a {drawn['limit_mb']} MB memory "
        f"cgroup: exit {drawn['returncode']}, {drawn.get('seconds', float('nan')):.2f} s, peak {drawn['peak_mb']} MB."
    )
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
            "overlay": in_cgroup(DRAW, [str(photos / "b" / "000.jpg")], 4 * args.limit_mb),
            "largest": in_cgroup(MEASURE, [str(largest), str(args.size)], args.limit_mb),
        }  # fmt: skip
    (RESULTS / "camera_photos.json").write_text(json.dumps(output, indent=2) + "\n")
    print(markdown(output))


if __name__ == "__main__":
    main()
