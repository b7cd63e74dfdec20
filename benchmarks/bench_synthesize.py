"""Throughput of `lrdif synthesize` on FERPlus (48x48) and on 112x112 images, vs a naive loop.

    .venv/bin/python benchmarks/bench_synthesize.py --workers 2

Measures, in one run on the same machine:

1. ``synthesize`` end to end (decode, degrade, encode, atomic writes) on all of FERPlus,
   read from ../shared/data/ferplus (never copied into the repository), into a
   temporary folder;
2. the batched simulator alone (``UDCSimulator.degrade``) on the decoded images;
3. a naive per-image reference of the same model: ``scipy.signal.fftconvolve`` per
   channel, numpy Poisson + Gaussian noise per image, one image at a time;
4. the same three on 112x112 images (FERPlus faces upscaled), written as a folder set.

Writes benchmarks/results/synthesize.md (figures, command, date, machine).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import scipy
import torch
from scipy.signal import fftconvolve

from lrdif.data.ferplus import FERPlus
from lrdif.udc.degrade import UDCConfig, UDCSimulator, stream_seed
from lrdif.udc.synthesize import encode_like, synthesize

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 16  # alternations of batched and naive timing
LINEAR = np.where(
    np.arange(256) / 255 <= 0.04045,
    np.arange(256) / 255 / 12.92,
    ((np.arange(256) / 255 + 0.055) / 1.055) ** 2.4,
)


def naive_degrade(
    image: np.ndarray, key: str, sim: UDCSimulator, kernel: np.ndarray, glare: np.ndarray
) -> np.ndarray:
    """One image through the same model, written the obvious way (the reference).

    ``kernel, glare = sim.kernel(H, W)``, computed once by the caller (as a naive script
    would, too).
    """
    config = sim.config
    r = kernel.shape[-1] // 2
    linear = LINEAR[image]
    channels = [linear] * 3 if image.ndim == 2 else [linear[..., c] for c in range(3)]
    gains = sim.transmittance / sim.mean_transmittance * sim.sensor_electrons
    rng = np.random.default_rng(stream_seed(config.seed, key))
    out = []
    for c, plane in enumerate(channels):
        padded = np.pad(plane, r, mode="symmetric")
        blurred = fftconvolve(padded, kernel[c], mode="valid") + glare[c] * plane.mean()
        electrons = np.clip(blurred, 0, None) * gains[c]
        noisy = rng.poisson(electrons) + config.read_noise_e * rng.standard_normal(plane.shape)
        value = np.clip(np.clip(noisy, 0, config.full_well_e) / sim.sensor_electrons, 0, 1)
        srgb = np.where(value <= 0.0031308, value * 12.92, 1.055 * value ** (1 / 2.4) - 0.055)
        out.append(np.round(srgb * 255).astype(np.int64))
    if image.ndim == 2:
        return ((out[0] * 19595 + out[1] * 38470 + out[2] * 7471 + 32768) >> 16).astype(np.uint8)
    return np.stack(out, -1).astype(np.uint8)


def naive_end_to_end(root: Path, relpaths: list[str], dst: Path, sim: UDCSimulator) -> float:
    """Seconds for read + naive degrade + encode + write, image by image."""
    kernels = {}
    start = time.perf_counter()
    for relpath in relpaths:
        image = cv2.imread(str(root / relpath), cv2.IMREAD_UNCHANGED)
        if image.ndim == 3:
            image = image[..., ::-1]
        if image.shape[:2] not in kernels:
            kernels[image.shape[:2]] = sim.kernel(*image.shape[:2])
        udc = naive_degrade(image, relpath, sim, *kernels[image.shape[:2]])
        target = dst / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(encode_like(udc, relpath, root / relpath))
    return time.perf_counter() - start


def interleaved_seconds(
    sim: UDCSimulator, images: np.ndarray, keys: list[str], naive_count: int, batch: int
) -> tuple[float, float, list[float]]:
    """(batched seconds for all images, naive seconds for the first ``naive_count``,
    the speed-up of each round).

    Both run in this process with one torch thread (a per-core comparison; scipy's
    fftconvolve is single-threaded too), alternating in ``ROUNDS`` short rounds so that
    both see the same load on a shared machine; the spread of the rounds' speed-ups
    shows how much that load moved.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    kernel, glare = sim.kernel(*images.shape[1:3])
    sim.degrade(images[:2], keys[:2])  # kernel spectrum for this size, outside the timing
    batched = naive = 0.0
    speedups = []
    big = np.linspace(0, len(images), ROUNDS + 1).astype(int)
    small = np.linspace(0, naive_count, ROUNDS + 1).astype(int)
    try:
        for r in range(ROUNDS):
            start = time.perf_counter()
            for i in range(big[r], big[r + 1], batch):
                j = min(i + batch, big[r + 1])
                sim.degrade(images[i:j], keys[i:j])
            batched_round = time.perf_counter() - start
            start = time.perf_counter()
            for i in range(small[r], small[r + 1]):
                naive_degrade(images[i], keys[i], sim, kernel, glare)
            naive_round = time.perf_counter() - start
            speedups.append(
                ((big[r + 1] - big[r]) / batched_round) / ((small[r + 1] - small[r]) / naive_round)
            )
            batched, naive = batched + batched_round, naive + naive_round
    finally:
        torch.set_num_threads(threads)
    return batched, naive, speedups


def _spread(speedups: list[float]) -> str:
    return (
        f"rounds: median {np.median(speedups):.1f}x, {min(speedups):.1f}x to {max(speedups):.1f}x"
    )


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if ROOT in path.parents or path == ROOT else str(path)


def load(root: Path, relpaths: list[str]) -> np.ndarray:
    return np.stack([cv2.imread(str(root / r), cv2.IMREAD_UNCHANGED) for r in relpaths])


def make_112(root: Path, ferplus: Path, relpaths: list[str]) -> list[str]:
    """A folder data set of 112x112 RGB PNGs (FERPlus faces upscaled, grey as RGB)."""
    out = []
    for i, relpath in enumerate(relpaths):
        grey = cv2.imread(str(ferplus / relpath), cv2.IMREAD_GRAYSCALE)
        big = cv2.resize(grey, (112, 112), interpolation=cv2.INTER_CUBIC)
        rgb = np.stack([big, big, big], -1)
        rgb[..., 0] = np.clip(rgb[..., 0].astype(int) + 12, 0, 255)  # a colour image
        name = f"class{i % 4}/{Path(relpath).stem}.png"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / name), rgb[..., ::-1])
        out.append(name)
    return sorted(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ferplus", type=Path, default=Path(
        os.environ.get("LRDIF_FERPLUS") or ROOT.parent / "shared/data/ferplus"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--naive-images", type=int, default=1500)
    parser.add_argument("--images-112", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/synthesize.md")
    parser.add_argument(
        "--scratch",
        type=Path,
        default=ROOT / "benchmarks/work",
        help="folder for the written data sets (deleted after); file creation speed "
        "differs between file systems, so this is recorded",
    )
    args = parser.parse_args()

    args.scratch.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="lrdif-bench-", dir=args.scratch))
    load_before = os.getloadavg()
    config = UDCConfig()
    sim = UDCSimulator(config)
    t = time.perf_counter()
    _ = sim.psf
    psf_s = time.perf_counter() - t
    rows: list[tuple[str, str, str]] = []
    try:
        relpaths = FERPlus.source_files(args.ferplus)
        n = len(relpaths)
        images = load(args.ferplus, relpaths)  # also warms the page cache for step 1
        # 1. end to end, all of FERPlus
        t = time.perf_counter()
        run = synthesize(
            "ferplus", args.ferplus, work / "udc-ferplus", config, workers=args.workers
        )
        e2e = time.perf_counter() - t
        assert run.written == n
        # 2. and 3. batched simulator alone vs naive reference, in memory, one core
        k = min(args.naive_images, n)
        batched, naive, rounds48 = interleaved_seconds(sim, images, relpaths, k, 256)
        naive_e2e = naive_end_to_end(args.ferplus, relpaths[:k], work / "naive", sim)
        rows += [
            (
                "FERPlus 48x48 grey",
                f"`lrdif synthesize --workers {args.workers}` end to end",
                f"{n} images in {e2e:.1f} s = **{n / e2e:,.0f} img/s**",
            ),
            (
                "FERPlus 48x48 grey",
                "batched `UDCSimulator.degrade`, 1 core, in memory",
                f"{n} images in {batched:.1f} s = **{n / batched:,.0f} img/s**",
            ),
            (
                "FERPlus 48x48 grey",
                "naive per-image reference (scipy fftconvolve), 1 core, in memory",
                f"{k} images in {naive:.1f} s = {k / naive:,.0f} img/s",
            ),
            (
                "FERPlus 48x48 grey",
                "naive per-image reference, end to end (read/write)",
                f"{k} images in {naive_e2e:.1f} s = {k / naive_e2e:,.0f} img/s",
            ),
            (
                "FERPlus 48x48 grey",
                "speed-up per core, simulator alone (batched / naive)",
                f"**{(n / batched) / (k / naive):.1f}x** ({_spread(rounds48)})",
            ),
            (
                "FERPlus 48x48 grey",
                f"speed-up, end to end (synthesize --workers {args.workers} / naive)",
                f"**{(n / e2e) / (k / naive_e2e):.1f}x**",
            ),
        ]
        # 4. 112x112 RGB
        m = min(args.images_112, n)
        src112 = work / "faces112"
        names = make_112(src112, args.ferplus, relpaths[:m])
        t = time.perf_counter()
        synthesize("folder", src112, work / "udc112", config, workers=args.workers)
        e2e112 = time.perf_counter() - t
        images112 = load(src112, names)[..., ::-1].copy()
        k112 = min(args.naive_images // 3, m)
        batched112, naive112, rounds112 = interleaved_seconds(sim, images112, names, k112, 64)
        kernel112, _ = sim.kernel(112, 112)
        rows += [
            (
                "112x112 RGB",
                f"`lrdif synthesize --workers {args.workers}` end to end",
                f"{m} images in {e2e112:.1f} s = **{m / e2e112:,.0f} img/s**",
            ),
            (
                "112x112 RGB",
                "batched `UDCSimulator.degrade`, 1 core, in memory",
                f"{m} images in {batched112:.1f} s = **{m / batched112:,.0f} img/s**",
            ),
            (
                "112x112 RGB",
                "naive per-image reference, 1 core, in memory",
                f"{k112} images in {naive112:.1f} s = {k112 / naive112:,.0f} img/s",
            ),
            (
                "112x112 RGB",
                "speed-up per core, simulator alone (batched / naive)",
                f"**{(m / batched112) / (k112 / naive112):.1f}x** ({_spread(rounds112)})",
            ),
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    kernel48, glare48 = sim.kernel(48, 48)
    lines = [
        "# `lrdif synthesize` throughput",
        "",
        f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Command (repository root):",
        "",
        "```",
        f".venv/bin/python benchmarks/bench_synthesize.py --workers {args.workers} "
        f"--naive-images {args.naive_images} --images-112 {args.images_112}"
        + ("" if args.scratch == ROOT / "benchmarks/work" else f" --scratch {args.scratch}"),
        "```",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"Linux {platform.release()}; Python {platform.python_version()}, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}, "
        f"scipy {scipy.__version__}. Load average (1 min) {load_before[0]:.1f} before and "
        f"{load_after[0]:.1f} after (other jobs on the machine make these lower bounds).",
        "",
        f"Setting: defaults (`toled`, severity 0.5 = 32 dB, face_px {UDCConfig().face_px:g}). "
        "Kernels: "
        f"{kernel48.shape[-1]} px at 48x48 (glare {glare48.mean():.3f}), "
        f"{kernel112.shape[-1]} px at 112x112. Sensor PSF computed once in {psf_s:.1f} s. "
        "End to end = decode, degrade, encode, atomic write, manifest, figures (sources in "
        f"the page cache; outputs written under `{_shown(args.scratch)}`). "
        "The naive reference is the same "
        "model written image by image (numpy LUT, `np.pad` + `scipy.signal.fftconvolve` per "
        "channel, numpy Poisson + Gaussian noise); it is timed on a subset, alternating with "
        f"the batched simulator in {ROUNDS} rounds (both on one core) so that both see the "
        "same load; the speed-up is the pooled one, with the spread of the rounds' own.",
        "",
        "| data | what | result |",
        "| --- | --- | --- |",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
        "",
        "Targets (issue 3): all of FERPlus in under 30 s (>= 1,200 img/s) and >= 10x the naive "
        "reference.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
