"""How often MediaPipe's face mesh finds a face on FERPlus 48x48 crops, clean and UDC.

Run in the landmark environment (mediapipe needs numpy<2; see .ci/run), one thread:

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv-landmarks/bin/python benchmarks/landmark_rate.py

For each data set (clean FERPlus, its UDC T-OLED copy) and split (majority-vote images, as
training reads them with ``lrdif.data.splits.read_split``), runs the ``mediapipe``
LANDMARKS source through ``cache_landmarks`` and reports the detection rate (images with a
face / images) overall and per class, and the detector's time per image. Also:

- paired clean vs UDC outcomes (the two sets share label.csv, hence image order);
- a sanity check of the meshes found (median mesh width and height as a fraction of the
  crop, share of meshes with points outside the image);
- the same detector on a seeded sample of test images upscaled to 192x192 (bicubic), to
  check that 48x48 crops need no upscaling (``MediaPipeFaceMesh.detect`` passes them as
  they are, grey replicated to RGB).

Caches go under benchmarks/work/landmarks/<set>/<split>.npz (with a .json of the time
the detection took), so a rerun is instant and reports the first run's times. Writes
benchmarks/results/landmarks.md and benchmarks/results/landmarks.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

import lrdif.data  # noqa: F401  (registers the LANDMARKS sources)
from lrdif.data.ferplus import FERPlus
from lrdif.data.landmarks import cache_landmarks
from lrdif.data.splits import DataSection, read_split
from lrdif.io import atomic_write, atomic_write_json
from lrdif.registry import LANDMARKS

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "valid", "test")
UPSCALE_SIZE = 192  # the face-mesh model's own input size


def rel(path: Path) -> str:
    """``path`` relative to the repository root (``../`` for paths beside it)."""
    return os.path.relpath(Path(path).resolve(), ROOT)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def detect_cached(images: np.ndarray, detector, path: Path) -> tuple[np.ndarray, dict]:
    """``cache_landmarks`` plus a sidecar .json holding the time the detection took."""
    timing_path = path.with_suffix(".json")
    before = path.stat().st_mtime_ns if path.is_file() else None
    start = time.perf_counter()
    landmarks = cache_landmarks(images, detector, path)
    seconds = time.perf_counter() - start
    computed = before is None or path.stat().st_mtime_ns != before
    if computed or not timing_path.is_file():
        timing = {
            "images": len(images),
            "seconds": seconds if computed else None,
            "computed": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "load_avg_1min_after": os.getloadavg()[0],
        }
        with atomic_write(timing_path, "w") as handle:
            json.dump(timing, handle, indent=2)
    timing = json.loads(timing_path.read_text())
    timing["from_cache"] = not computed
    return landmarks, timing


def mesh_stats(landmarks: np.ndarray) -> dict:
    found = ~np.isnan(landmarks).any(axis=(1, 2))
    meshes = landmarks[found]
    if not len(meshes):
        return {"median_width": None, "median_height": None, "share_outside": None}
    extent = meshes.max(axis=1) - meshes.min(axis=1)
    outside = ((meshes < 0) | (meshes > 1)).any(axis=(1, 2))
    return {
        "median_width": float(np.median(extent[:, 0])),
        "median_height": float(np.median(extent[:, 1])),
        "share_outside": float(outside.mean()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clean", type=Path, default=ROOT.parent / "shared/data/ferplus")
    parser.add_argument("--udc", type=Path, default=ROOT / "benchmarks/work/udc-ferplus-toled")
    parser.add_argument("--cache", type=Path, default=ROOT / "benchmarks/work/landmarks")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    parser.add_argument("--train-sample", type=int, default=0,
                        help="detect on a seeded sample of this many train images (0: all)")
    parser.add_argument("--upscale-sample", type=int, default=1000,
                        help="test images (seeded sample) for the upscaling check (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    detector = LANDMARKS.build("mediapipe")
    sets = {"clean": args.clean, "udc_toled": args.udc}
    same_labels = all(
        sha256(root / FERPlus.folders[s] / "label.csv")
        == sha256(args.clean / FERPlus.folders[s] / "label.csv")
        for root in sets.values() for s in SPLITS
    )
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    results: dict = {"sets": {}, "paired": {}, "upscale_check": {}}
    found_by: dict = {}
    for name, root in sets.items():
        results["sets"][name] = {"root": rel(root), "splits": {}}
        for split in SPLITS:
            section = DataSection(dataset="ferplus", root=str(root),
                                  options={"label_mode": "majority"})
            images, labels, classes = read_split(section, split)
            total = len(images)
            cache = args.cache / name / f"{split}.npz"
            sampled = split == "train" and 0 < args.train_sample < total
            if sampled:
                rng = np.random.default_rng(args.seed)
                index = np.sort(rng.choice(total, args.train_sample, replace=False))
                images, labels = images[index], labels[index]
                cache = cache.with_name(f"{split}_sample{args.train_sample}_seed{args.seed}.npz")
            landmarks, timing = detect_cached(images, detector, cache)
            found = ~np.isnan(landmarks).any(axis=(1, 2))
            found_by[name, split] = (found, labels)
            per_class = {}
            for c, cname in enumerate(classes):
                mask = labels == c
                per_class[cname] = {"images": int(mask.sum()), "found": int(found[mask].sum()),
                                    "rate": float(found[mask].mean()) if mask.any() else None}
            seconds = timing["seconds"]
            results["sets"][name]["splits"][split] = {
                "images": len(images), "split_images": total, "sampled": sampled,
                "found": int(found.sum()), "rate": float(found.mean()),
                "per_class": per_class,
                "seconds": seconds,
                "ms_per_image": 1000 * seconds / len(images) if seconds else None,
                "detected_on": timing["computed"],
                "load_avg_1min_after": timing["load_avg_1min_after"],
                "from_cache": timing["from_cache"], "cache": rel(cache),
                "mesh": mesh_stats(landmarks),
            }
            print(f"{name} {split}: {found.sum()}/{len(images)} = {found.mean():.2%}"
                  f"{' (cached)' if timing['from_cache'] else ''}", flush=True)
            if split == "test" and args.upscale_sample > 0:
                rng = np.random.default_rng(args.seed)
                n = min(args.upscale_sample, total)
                index = np.sort(rng.choice(total, n, replace=False))
                up = np.stack([cv2.resize(im, (UPSCALE_SIZE, UPSCALE_SIZE),
                                          interpolation=cv2.INTER_CUBIC) for im in images[index]])
                up_name = f"test_up{UPSCALE_SIZE}_sample{n}_seed{args.seed}.npz"
                up_cache = args.cache / name / up_name
                up_marks, up_timing = detect_cached(up, detector, up_cache)
                up_found = ~np.isnan(up_marks).any(axis=(1, 2))
                base = found[index]
                results["upscale_check"][name] = {
                    "images": n, "size": UPSCALE_SIZE, "interpolation": "bicubic",
                    "rate_48": float(base.mean()), "rate_up": float(up_found.mean()),
                    "found_only_48": int((base & ~up_found).sum()),
                    "found_only_up": int((~base & up_found).sum()),
                    "ms_per_image_up": (1000 * up_timing["seconds"] / n
                                        if up_timing["seconds"] else None),
                    "cache": rel(up_cache),
                }
    if same_labels:
        for split in SPLITS:
            clean, labels = found_by["clean", split]
            udc, udc_labels = found_by["udc_toled", split]
            if len(clean) != len(udc) or not np.array_equal(labels, udc_labels):
                continue
            results["paired"][split] = {
                "both": int((clean & udc).sum()), "clean_only": int((clean & ~udc).sum()),
                "udc_only": int((~clean & udc).sum()), "neither": int((~clean & ~udc).sum()),
            }
    elapsed = time.perf_counter() - started

    import mediapipe

    results["meta"] = {
        "command": ("OMP_NUM_THREADS=1 PYTHONPATH=src .venv-landmarks/bin/python "
                    + " ".join([rel(Path(sys.argv[0])), *sys.argv[1:]])),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(), "logical_cpus": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "platform": platform.platform(), "python": platform.python_version(),
        "mediapipe": mediapipe.__version__, "numpy": np.__version__, "opencv": cv2.__version__,
        "detector": detector.cache_key, "label_mode": "majority",
        "load_avg_1min_before": load_before, "load_avg_1min_after": os.getloadavg()[0],
        "wall_seconds": elapsed, "train_sample": args.train_sample, "seed": args.seed,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "landmarks.json", results)
    with atomic_write(args.out / "landmarks.md", "w") as handle:
        handle.write(render(results, classes))
    print(f"wrote {rel(args.out / 'landmarks.md')} and landmarks.json in {elapsed:.0f} s")
    return 0


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def detection_total(results: dict) -> str:
    """One line: the detector's time over all splits, when each split was detected."""
    runs = [r for entry in results["sets"].values() for r in entry["splits"].values()]
    timed = [r for r in runs if r["seconds"]]
    if not timed:
        return "Detection times: not recorded (caches from elsewhere)."
    seconds = sum(r["seconds"] for r in timed)
    images = sum(r["images"] for r in timed)
    dates = sorted({r["detected_on"] for r in timed})
    loads = [r["load_avg_1min_after"] for r in timed]
    return (f"Detection (one thread, computed {dates[0]}"
            f"{' to ' + dates[-1] if len(dates) > 1 else ''}): {images} images in "
            f"{seconds:.0f} s = {1000 * seconds / images:.2f} ms / image over "
            f"{len(timed)} of {len(runs)} splits; load average (1 min) after each split "
            f"{min(loads):.1f} to {max(loads):.1f}.")


def render(results: dict, classes: tuple[str, ...]) -> str:
    meta = results["meta"]
    lines = [
        "# Landmark detection rate: MediaPipe face mesh on FERPlus 48x48",
        "",
        f"Date: {meta['date']}. Command (repository root):",
        "",
        "```",
        meta["command"],
        "```",
        "",
        f"Machine: {meta['cpu']}, {meta['logical_cpus']} logical CPUs, OMP_NUM_THREADS="
        f"{meta['omp_num_threads']}; {meta['platform']}; Python {meta['python']}, mediapipe "
        f"{meta['mediapipe']}, numpy {meta['numpy']}, opencv {meta['opencv']}. Load average "
        f"(1 min) {meta['load_avg_1min_before']:.1f} before and "
        f"{meta['load_avg_1min_after']:.1f} after (training runs share the machine, so times "
        "are upper bounds). Wall time of this run: "
        f"{meta['wall_seconds']:.0f} s (cached splits load instantly).",
        "",
        detection_total(results),
        "",
        f"Detector: `LANDMARKS.build(\"mediapipe\")` ({meta['detector']}: static-image "
        "mode, one face, BlazeFace + 468-point mesh), through `cache_landmarks`. Images: "
        "`read_split(..., label_mode=\"majority\")`, i.e. the majority-vote images training "
        "uses (FER2013's unknown / not-a-face / no-majority images are excluded), grey 48x48 "
        "passed as they are (replicated to RGB, no upscaling). A face counts as found when "
        "the detector returns a mesh (no NaN row).",
        "",
        "## Detection rate",
        "",
        "| set | split | images | found | rate | ms / image |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, entry in results["sets"].items():
        for split, r in entry["splits"].items():
            ms = "–" if r["ms_per_image"] is None else f"{r['ms_per_image']:.2f}"
            what = split + (f" (seeded sample of {r['split_images']})" if r["sampled"] else "")
            lines.append(f"| {name} | {what} | {r['images']} | {r['found']} | "
                         f"**{_pct(r['rate'])}** | {ms} |")
    lines += ["", "Roots: " + ", ".join(f"{n} = `{e['root']}`"
                                        for n, e in results["sets"].items()) + ".", "",
              "## Per class (rate; images in brackets)", "",
              "| set | split | " + " | ".join(classes) + " |",
              "| --- | --- |" + " ---: |" * len(classes)]
    for name, entry in results["sets"].items():
        for split, r in entry["splits"].items():
            cells = [f"{_pct(r['per_class'][c]['rate'])} ({r['per_class'][c]['images']})"
                     for c in classes]
            lines.append(f"| {name} | {split} | " + " | ".join(cells) + " |")
    if results["paired"]:
        lines += ["", "## Clean vs UDC, same images", "",
                  "| split | both | clean only | UDC only | neither |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for split, p in results["paired"].items():
            lines.append(f"| {split} | {p['both']} | {p['clean_only']} | {p['udc_only']} | "
                         f"{p['neither']} |")
    lines += ["", "## Meshes found", "",
              "Median extent of the 468 points as a fraction of the crop, and the share of "
              "meshes with a point outside the image.", "",
              "| set | split | median width | median height | outside |",
              "| --- | --- | ---: | ---: | ---: |"]
    for name, entry in results["sets"].items():
        for split, r in entry["splits"].items():
            m = r["mesh"]
            if m["median_width"] is None:
                continue
            lines.append(f"| {name} | {split} | {m['median_width']:.2f} | "
                         f"{m['median_height']:.2f} | {_pct(m['share_outside'])} |")
    if results["upscale_check"]:
        lines += ["", "## Does upscaling help?", "",
                  "`MediaPipeFaceMesh.detect` passes 48x48 crops as they are; MediaPipe "
                  "resizes internally (detector input 128x128, mesh input a 192x192 crop of "
                  "the face region). Here the same detector on a seeded sample of test images, "
                  "as they are and upscaled first (bicubic).", "",
                  "| set | images | 48x48 | upscaled | found only at 48 | found only upscaled "
                  "| ms / image upscaled |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for name, u in results["upscale_check"].items():
            ms = "–" if u["ms_per_image_up"] is None else f"{u['ms_per_image_up']:.2f}"
            lines.append(f"| {name} | {u['images']} | {_pct(u['rate_48'])} | "
                         f"{_pct(u['rate_up'])} ({u['size']}x{u['size']}) | "
                         f"{u['found_only_48']} | {u['found_only_up']} | {ms} |")
    lines += ["", "Caches: `benchmarks/work/landmarks/<set>/<split>.npz` (git-ignored), each "
              "with a `.json` of the time its detection took.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
