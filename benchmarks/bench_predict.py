"""Prediction speed on CPU: LRDif stage 2 (T = 4) and the fast model vs the ResNet-18
baseline vs `fer`.

Measures, in one run on one machine:

1. faces per second on pre-cropped 48x48 faces (FERPlus test crops when present)
   through ``Recognizer.predict(faces, detect=False)``, for the shipped LRDif stage 2
   (T = 4) in float32 one face at a time (batch 1), in float32 batched (batch 64, the
   default) and in bf16 autocast batched (``precision="bfloat16"``), for the shipped
   ``fast`` model (MobileNetV2 at 48 px, batches of 64 and 256) when installed, and for
   the ResNet-18 baseline; with each model's forward cost in MFLOP per face;
2. the share of LRDif's time spent in the reverse diffusion loop (Eq. 16 x T);
3. end-to-end latency on one 640x480 JPEG photo with one face (decode, Haar
   detection, crop, model), median of repeated runs;
4. the same for the ``fer`` package (its shipped FER2013 model via TFLite, Haar faces),
   run with ``--fer-python`` pointing at a Python where ``fer`` is installed (keep it
   out of lrdif's environment: it pulls TensorFlow), e.g.
   ``python -m venv /tmp/fervenv && /tmp/fervenv/bin/pip install --no-deps fer &&
   /tmp/fervenv/bin/pip install tensorflow-cpu "opencv-python-headless<5" requests pillow``
   (fer's own requirements pull CUDA PyTorch and facenet for MTCNN, unused here).

Speed does not depend on training: LRDif is the shipped file, the ResNet-18 freshly
initialised; no accuracy is reported. Run: ``python benchmarks/bench_predict.py [--threads 2]
[--md benchmarks/results/predict.md]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from lrdif.checkpoint import save_checkpoint
from lrdif.data.images import read_image
from lrdif.io import atomic_write, atomic_write_json, portable_path, portable_paths
from lrdif.models.baselines import ResNet18
from lrdif.predict.recognizer import DEFAULT_WEIGHTS, FAST_WEIGHTS, Recognizer
from lrdif.train.provenance import git_commit

ROOT = Path(__file__).resolve().parents[1]
FERPLUS_TEST = ROOT.parent / "shared" / "data" / "ferplus" / "FER2013Test"
ASTRONAUT = ROOT / "src" / "lrdif" / "assets" / "astronaut.jpg"

FER_SCRIPT = textwrap.dedent("""
    import json, statistics, sys, time
    import cv2, numpy as np
    from fer.fer import FER
    photo, crops_path, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
    detector = FER(mtcnn=False)  # OpenCV Haar faces + the shipped TFLite model
    faces = len(detector.detect_emotions(cv2.imread(photo)))
    times = []
    for _ in range(repeats + 2):  # from the file, as lrdif's latency is measured
        start = time.perf_counter()
        detector.detect_emotions(cv2.imread(photo))
        times.append(time.perf_counter() - start)
    crops = np.load(crops_path)
    boxes = [(0, 0, crops.shape[2], crops.shape[1])]
    for crop in crops[:8]:
        detector.detect_emotions(cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR), face_rectangles=boxes)
    start = time.perf_counter()
    for crop in crops:
        detector.detect_emotions(cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR), face_rectangles=boxes)
    rate = len(crops) / (time.perf_counter() - start)
    print(json.dumps({"faces_found": faces, "latency_ms": 1000 * statistics.median(times[2:]),
                      "latency_best_ms": 1000 * min(times[2:]), "faces_per_s": rate}))
""")


def load_faces(n: int) -> tuple[np.ndarray, str]:
    """(n, 48, 48) uint8 face crops: FERPlus test images, or noise where FERPlus is absent."""
    files = sorted(FERPLUS_TEST.glob("*.png"))[:n]
    if len(files) == n:
        return np.stack([read_image(p, mode="L") for p in files]), "FERPlus test crops"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 48, 48), dtype=np.uint8), "random 48x48 crops"


def make_photo(folder: Path) -> Path:
    """A 640x480 JPEG with one face: the astronaut asset at 480x480, edges repeated to 640."""
    face = cv2.resize(read_image(ASTRONAUT), (480, 480), interpolation=cv2.INTER_AREA)
    photo = cv2.copyMakeBorder(face, 0, 0, 80, 80, cv2.BORDER_REPLICATE)
    path = folder / "photo640x480.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return path


def mflop_per_face(recognizer: Recognizer) -> float:
    """The model's forward cost (multiply-adds counted as 2 FLOP) on one 48x48 face."""
    from torch.utils.flop_counter import FlopCounterMode

    c = recognizer.model.config
    images = torch.rand(4, c.in_channels, c.image_size, c.image_size)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        recognizer.model(images)
    return counter.get_total_flops() / 4 / 1e6


def faces_per_second(recognizer: Recognizer, faces: list[np.ndarray], repeats: int) -> float:
    recognizer.predict(faces[:64], detect=False, progress=False)  # warm-up
    best = min(_timed(lambda: recognizer.predict(faces, detect=False, progress=False))
               for _ in range(repeats))
    return len(faces) / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def diffusion_share(recognizer: Recognizer, crops: np.ndarray) -> float:
    """Time in ``estimate_epr`` (the T reverse steps) over time in the whole model."""
    model = recognizer.model
    spent = []
    inner = model.estimate_epr

    def timed_estimate(*args, **kwargs):
        start = time.perf_counter()
        out = inner(*args, **kwargs)
        spent.append(time.perf_counter() - start)
        return out

    model.estimate_epr = timed_estimate  # instance attribute: measures, changes nothing
    try:
        recognizer.classify(crops[:64])  # warm-up
        spent.clear()
        total = _timed(lambda: recognizer.classify(crops))
    finally:
        del model.estimate_epr
    return sum(spent) / total


def latency_ms(recognizer: Recognizer, photo: Path, repeats: int) -> tuple[float, float, int]:
    """(median ms, best ms, faces found) of ``predict(photo)`` after two warm-up calls."""
    faces = len(recognizer.predict(photo, progress=False).faces)
    times = [_timed(lambda: recognizer.predict(photo, progress=False)) for _ in range(repeats + 2)]
    return 1000 * statistics.median(times[2:]), 1000 * min(times[2:]), faces


def run_fer(python: str, photo: Path, crops: np.ndarray, folder: Path, repeats: int) -> dict:
    crops_path = folder / "crops.npy"
    np.save(crops_path, crops)
    result = subprocess.run(
        [python, "-c", FER_SCRIPT, str(photo), str(crops_path), str(repeats)],
        capture_output=True, text=True, timeout=1800,
    )
    if result.returncode != 0:
        raise RuntimeError(f"fer run failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--faces", type=int, default=640, help="pre-cropped faces to classify")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (best is kept)")
    parser.add_argument("--latency-repeats", type=int, default=20)
    parser.add_argument("--fer-python", help="a python with the fer package installed")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--md", help="also write the table, command, date and commit here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    commit = git_commit()  # before this run writes its own results
    torch.manual_seed(0)
    crops, crop_source = load_faces(args.faces)
    faces = list(crops)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        photo = make_photo(folder)
        baseline = folder / "resnet18.safetensors"
        save_checkpoint(baseline, ResNet18().eval(), meta={})
        models = {  # name: (weights, batch size, precision)
            "LRDif stage 2 (shipped, T=4), fp32, one at a time": (DEFAULT_WEIGHTS, 1, "float32"),
            "LRDif stage 2 (shipped, T=4), fp32, batch 64": (DEFAULT_WEIGHTS, 64, "float32"),
            "LRDif stage 2 (shipped, T=4), bf16, batch 64": (DEFAULT_WEIGHTS, 64, "bfloat16"),
            "ResNet-18, fp32, batch 64": (baseline, 64, "float32"),
        }
        if FAST_WEIGHTS.is_file():  # the shipped model for bulk crops (Recognizer("fast"))
            models.update({
                "fast (MobileNetV2, 48 px), fp32, batch 64": (FAST_WEIGHTS, 64, "float32"),
                "fast (MobileNetV2, 48 px), fp32, batch 256": (FAST_WEIGHTS, 256, "float32"),
                "fast (MobileNetV2, 48 px), bf16, batch 256": (FAST_WEIGHTS, 256, "bfloat16"),
            })
        for name, (path, batch, precision) in models.items():
            recognizer = Recognizer.from_checkpoint(path, device="cpu", batch_size=batch,
                                                    precision=precision)
            row = {"faces_per_s": faces_per_second(recognizer, faces, args.repeats),
                   "mflop_per_face": mflop_per_face(recognizer)}
            row["latency_ms"], row["latency_best_ms"], row["faces_found"] = latency_ms(
                recognizer, photo, args.latency_repeats)
            if path == DEFAULT_WEIGHTS and batch > 1 and precision == "float32":
                row["diffusion_share"] = diffusion_share(recognizer, crops[:, None])
            results[name] = row
        if args.fer_python:
            results["fer 25 (TFLite, Haar)"] = run_fer(args.fer_python, photo, crops, folder,
                                                       args.latency_repeats)
    lines = [
        f"CPU ({os.cpu_count()} cores, load average {load_before:.1f} before and "
        f"{os.getloadavg()[0]:.1f} after), {args.threads} torch thread(s), {len(faces)} "
        f"{crop_source}; latency: one 640x480 JPEG with one face",
        "",
        "| model | faces/s (pre-cropped, best) | MFLOP/face | latency ms (median / best) "
        "| faces found | time in diffusion loop |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in results.items():
        share = f"{100 * row['diffusion_share']:.1f}%" if "diffusion_share" in row else "-"
        flop = f"{row['mflop_per_face']:.0f}" if "mflop_per_face" in row else "-"
        lines.append(f"| {name} | {row['faces_per_s']:.0f} | {flop} | {row['latency_ms']:.1f} / "
                     f"{row['latency_best_ms']:.1f} | {row['faces_found']} | {share} |")
    print("\n".join(lines))
    if args.json:
        atomic_write_json(args.json, results)
    if args.md:
        command = "python " + " ".join(portable_paths(a, ROOT) for a in sys.argv)
        header = ["# Prediction speed (benchmarks/bench_predict.py)", "",
                  f"- Command: `{command}`",
                  f"- Date: {datetime.datetime.now().isoformat(timespec='minutes')}, commit "
                  f"{commit}", f"- Weights: `{portable_path(DEFAULT_WEIGHTS, ROOT)}`", ""]
        with atomic_write(args.md, "w") as handle:
            handle.write("\n".join(header + lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
