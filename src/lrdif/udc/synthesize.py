"""``lrdif synthesize``: write the UDC version of a FER data set in its native layout.

The paper trains and tests on UDC-RAF-DB, UDC-FERPlus and UDC-KDEF (Sec. 4.1-4.2),
made by a degradation model. This command reads a data set with its reader
(:mod:`lrdif.data`), degrades every image the reader lists with
:class:`lrdif.udc.degrade.UDCSimulator`, and writes it at the same relative path in the
same format; every other file (label files) is copied. Every reader and tool therefore
works on the output unchanged. Beside the data, ``DST/.lrdif-udc/`` holds:

- ``manifest.json``: every parameter, the seed, PSF checksums, versions and counts;
- ``psf.png``: the display's PSF per channel at sensor and at image scale;
- ``preview.png``: clean vs UDC images.

Runs are resumable: the manifest's parameters are written first; each output is written
atomically; a rerun skips outputs already present and valid and ends with the same
files as an uninterrupted run (each image's noise depends only on the seed and its
path). Output made with other parameters is refused, not mixed.

Over 400 lines: the command's resumable worker pool, its destination checks and its
figures (PSF, preview) are kept with it; the figures and the argparse front end
are the parts that could move out.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, JpegImagePlugin
from tqdm import tqdm

from lrdif.config import flatten, to_dict
from lrdif.io import TMP_SUFFIX, atomic_write_bytes, atomic_write_json
from lrdif.udc.degrade import UDCConfig, UDCSimulator
from lrdif.udc.optics import Optics, psf_checksums
from lrdif.vocabulary import __version__

INFO_DIR = ".lrdif-udc"  # hidden: readers that scan folders skip it
MANIFEST = "manifest.json"
PREVIEW_COUNT = 8


class SynthesizeError(ValueError):
    """The destination cannot take this run (other parameters, not ours, inside the source)."""


# --------------------------------------------------------------------------- image files


def encode_like(image: np.ndarray, relpath: str, source: str | Path) -> bytes:
    """Encode ``image`` in the format of ``relpath``'s extension.

    PNG through OpenCV (fast, lossless); JPEG with the source's own quantisation tables
    and chroma subsampling when the source is a JPEG (same compression as the clean
    set), else quality 95; other formats through Pillow's defaults.
    """
    suffix = os.path.splitext(relpath)[1].lower()
    if suffix == ".png":
        ok, data = cv2.imencode(".png", image[..., ::-1] if image.ndim == 3 else image)
        if not ok:
            raise OSError(f"OpenCV could not encode {relpath} as PNG")
        return data.tobytes()
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None:
        raise SynthesizeError(f"{relpath}: no encoder for {suffix!r} files")
    options: dict[str, Any] = {}
    if fmt == "JPEG":
        options = {"quality": 95}
        with Image.open(source) as clean:
            tables = getattr(clean, "quantization", None)
            if clean.format == "JPEG" and tables and (len(tables) > 1 or image.ndim == 2):
                options = {"qtables": tables}
                sampling = JpegImagePlugin.get_sampling(clean)
                if sampling >= 0:
                    options["subsampling"] = sampling
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _remove_debris(dst: Path) -> None:
    """Delete temporary files a killed run left behind (they are never valid outputs)."""
    for folder, _, files in os.walk(dst):
        for name in files:
            if name.startswith(".") and name.endswith(TMP_SUFFIX):
                (Path(folder) / name).unlink(missing_ok=True)


def _valid_output(path: str) -> tuple[int, ...] | None:
    """Shape of a decodable output file, or ``None`` when absent or damaged."""
    from lrdif.data.images import ImageError, read_image

    if not os.path.isfile(path):
        return None
    try:
        return read_image(path).shape
    except ImageError:
        return None


# --------------------------------------------------------------------------- one chunk


@dataclass
class ChunkResult:
    """What one chunk of images did; summed over the run."""

    written: int = 0
    present: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)
    sizes: Counter = field(default_factory=Counter)  # "HxW" -> images

    def add(self, other: ChunkResult) -> None:
        self.written += other.written
        self.present += other.present
        self.bad += other.bad
        self.sizes.update(other.sizes)


@dataclass
class _Job:
    """Everything a worker needs; sent once to each worker process."""

    simulator: UDCSimulator
    root: Path
    dst: Path
    skip_bad: bool


_JOB: _Job | None = None


def _init_worker(job: _Job | None, threads: int) -> None:
    global _JOB
    _JOB = job
    torch.set_num_threads(threads)


def _size_key(shape: tuple[int, ...]) -> str:
    return f"{shape[0]}x{shape[1]}"


def process_chunk(relpaths: list[str]) -> ChunkResult:
    """Degrade and write one chunk (skipping valid outputs); runs in a worker or in-process."""
    from lrdif.data.images import ImageError, read_image

    assert _JOB is not None, "process_chunk needs _init_worker first"
    job = _JOB
    root, dst = str(job.root), str(job.dst)  # strings: pathlib's parsing costs 10 us a call
    result = ChunkResult()
    groups: dict[tuple[int, ...], list[tuple[str, np.ndarray]]] = {}
    for relpath in relpaths:
        shape = _valid_output(f"{dst}/{relpath}")
        if shape is not None:
            result.present += 1
            result.sizes[_size_key(shape)] += 1
            continue
        try:
            image = read_image(f"{root}/{relpath}")
        except ImageError as exc:
            if not job.skip_bad:
                raise
            result.bad.append((relpath, str(exc)))
            continue
        groups.setdefault(image.shape, []).append((relpath, image))
    for shape, members in groups.items():  # one batched call per image size
        keys = [relpath for relpath, _ in members]
        udc = job.simulator.degrade(np.stack([image for _, image in members]), keys)
        for relpath, image in zip(keys, udc, strict=True):
            data = encode_like(image, relpath, f"{root}/{relpath}")
            atomic_write_bytes(f"{dst}/{relpath}", data, fsync=False)
        result.written += len(members)
        result.sizes[_size_key(shape)] += len(members)
    return result


# --------------------------------------------------------------------------- the run


def _check_destination(dst: Path, root: Path, settings: dict[str, Any]) -> None:
    """Refuse a destination that is the source, holds foreign files, or other parameters."""
    src_r, dst_r = root.resolve(), dst.resolve()
    if dst_r == src_r or src_r in dst_r.parents or dst_r in src_r.parents:
        raise SynthesizeError(
            f"--dst {dst} and the source {root} must not contain each other; pick another --dst"
        )
    manifest = dst / INFO_DIR / MANIFEST
    if manifest.is_file():
        try:
            old = json.loads(manifest.read_text())["settings"]
        except (json.JSONDecodeError, KeyError, OSError) as exc:
            raise SynthesizeError(
                f"{manifest}: unreadable manifest ({exc}); remove {dst}"
            ) from None
        new, before = flatten(settings), flatten(old)
        diff = sorted(k for k in new.keys() | before.keys() if new.get(k) != before.get(k))
        if diff:
            shown = "; ".join(f"{k}: {before.get(k)!r} there, {new.get(k)!r} now" for k in diff[:6])
            raise SynthesizeError(
                f"{dst} holds a UDC set made with other parameters ({shown}"
                f"{' ...' if len(diff) > 6 else ''}). Refusing to mix them: use another "
                "--dst, or the same parameters to resume."
            )
    elif dst.exists() and any(p.name != INFO_DIR for p in dst.iterdir()):
        raise SynthesizeError(
            f"{dst} is not empty and holds no {INFO_DIR}/{MANIFEST}: not a UDC set made by "
            "lrdif synthesize. Use an empty or new --dst."
        )


def _copy_other_files(root: Path, dst: Path, images: set[str]) -> tuple[int, list[str]]:
    """Copy every non-image file under ``root``; return (copied count, unlisted images)."""
    from lrdif.data.base import IMAGE_SUFFIXES

    copied, unlisted = 0, []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != INFO_DIR)
        for name in sorted(files):
            path = Path(folder) / name
            relpath = path.relative_to(root).as_posix()
            if relpath in images:
                continue
            if path.suffix.lower() in IMAGE_SUFFIXES:
                unlisted.append(relpath)  # an image the reader does not use: not copied clean
                continue
            data = path.read_bytes()
            target = dst / relpath
            if not (target.is_file() and target.read_bytes() == data):
                atomic_write_bytes(target, data)
            copied += 1
    return copied, unlisted


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _run_chunks(
    job: _Job, chunks: list[list[str]], workers: int, progress: bool, total: int
) -> ChunkResult:
    total_result = ChunkResult()
    bar = tqdm(total=total, unit="img", desc="synthesize", disable=not progress, smoothing=0.1)
    try:
        if workers == 1:
            _init_worker(job, torch.get_num_threads())
            results = map(process_chunk, chunks)
            for result in results:
                total_result.add(result)
                bar.update(len(result.bad) + result.written + result.present)
        else:
            # spawn: forking a process that already ran torch/OpenMP code is unsafe
            context = multiprocessing.get_context("spawn")
            with context.Pool(workers, initializer=_init_worker, initargs=(job, 1)) as pool:
                for result in pool.imap_unordered(process_chunk, chunks):
                    total_result.add(result)
                    bar.update(len(result.bad) + result.written + result.present)
    finally:
        bar.close()
        _init_worker(None, torch.get_num_threads())  # drop the in-process job
    return total_result


def settings_of(dataset: str, root: Path, simulator: UDCSimulator) -> dict[str, Any]:
    """The parameters that define a UDC set; a resumed run must match them exactly."""
    settings = {
        "dataset": dataset,
        "source": str(root.resolve()),
        "simulator": to_dict(simulator.config),
        "physics": simulator.describe(),
        "psf_sha256": psf_checksums(simulator.psf),
        "versions": {"lrdif": __version__, "torch": torch.__version__, "numpy": np.__version__},
    }
    return json.loads(json.dumps(settings))  # the form it has once read back from disk


@dataclass
class Synthesis:
    """A finished run: its manifest (as written) and what this run itself did."""

    manifest: dict[str, Any]
    written: int
    already_present: int


def synthesize(
    dataset: str,
    src: Path,
    dst: Path,
    config: UDCConfig,
    *,
    workers: int = 1,
    skip_bad: bool = False,
    batch_size: int = 256,
    progress: bool = True,
) -> Synthesis:
    """Write the UDC version of data set ``dataset`` at ``src`` into ``dst``.

    ``src`` is what the reader takes (a folder, or the CSV file for ``csv``); paths are
    relative to the folder that holds the images. Raises ``LayoutError`` (wrong layout),
    ``ImageError`` (an unreadable image, unless ``skip_bad``) or :class:`SynthesizeError`.
    """
    import lrdif.data  # noqa: F401  (registers the readers)
    from lrdif.registry import DATASETS

    if workers < 1 or batch_size < 1:
        raise ValueError(f"workers and batch_size must be >= 1, got {workers}, {batch_size}")
    reader = DATASETS.get(dataset)
    src, dst = Path(src), Path(dst)
    root = src if src.is_dir() else src.parent
    images = reader.source_files(src)
    simulator = UDCSimulator(config)
    settings = settings_of(dataset, root, simulator)
    _check_destination(dst, root, settings)
    info = dst / INFO_DIR
    manifest: dict[str, Any] = {"format": 1, "complete": False, "settings": settings}
    atomic_write_json(info / MANIFEST, manifest)  # parameters first: a resume is checked

    _remove_debris(dst)
    copied, unlisted = _copy_other_files(root, dst, set(images))
    job = _Job(simulator=simulator, root=root, dst=dst, skip_bad=skip_bad)
    workers = min(workers, max(1, -(-len(images) // batch_size)))
    result = _run_chunks(job, _chunks(images, batch_size), workers, progress, len(images))

    sizes = dict(sorted(result.sizes.items()))
    kernels = {}
    for key in sizes:
        height, width = map(int, key.split("x"))
        kernel, glare = simulator.kernel(height, width)
        kernels[key] = {
            "scale_sensor_px_per_px": simulator.scale(height, width),
            "kernel_size": kernel.shape[-1],
            "glare_rgb": glare.tolist(),
            "sha256": psf_checksums(kernel),
        }
    manifest.update(
        complete=True,
        counts={
            "listed": len(images),
            "udc_images": result.written + result.present,
            "bad": len(result.bad),
            "copied_files": copied,
            "unlisted_images_not_copied": len(unlisted),
        },
        image_sizes=sizes,
        kernels=kernels,
        bad_files=[{"path": p, "error": e} for p, e in sorted(result.bad)],
        unlisted_images=unlisted[:100],
    )
    if sizes:
        common = max(sizes, key=lambda k: sizes[k])
        atomic_write_bytes(info / "psf.png", psf_figure(simulator, *map(int, common.split("x"))))
        done = [r for r in images if (dst / r).is_file()]
        picks = [
            done[i] for i in np.linspace(0, len(done) - 1, min(PREVIEW_COUNT, len(done)), dtype=int)
        ]
        atomic_write_bytes(info / "preview.png", preview_figure(root, dst, picks, simulator))
    atomic_write_json(info / MANIFEST, manifest)
    return Synthesis(manifest=manifest, written=result.written, already_present=result.present)


# --------------------------------------------------------------------------- figures


def _png(figure: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    return buffer.getvalue()


def psf_figure(simulator: UDCSimulator, height: int, width: int, half_px: int = 64) -> bytes:
    """PNG: log10 PSF per channel at sensor scale (+-half_px) and the image-scale kernel."""
    from matplotlib.figure import Figure

    psf = simulator.psf
    c = psf.shape[-1] // 2
    kernel, glare = simulator.kernel(height, width)
    figure = Figure(figsize=(10, 6.4))
    axes = figure.subplots(
        2, 3, gridspec_kw={"left": 0.02, "right": 0.9, "bottom": 0.02, "top": 0.88, "wspace": 0.08}
    )
    for i, name in enumerate(("R", "G", "B")):
        wavelength = simulator.config.optics.wavelengths_nm[i]
        crop = psf[i, c - half_px : c + half_px + 1, c - half_px : c + half_px + 1]
        shown = axes[0, i].imshow(np.log10(crop + 1e-9), cmap="magma", vmin=-7, vmax=0)
        axes[0, i].set_title(f"{name} {wavelength:g} nm, sensor px (log10)", fontsize=9)
        axes[1, i].imshow(np.log10(kernel[i] + 1e-9), cmap="magma", vmin=-5, vmax=0)
        axes[1, i].set_title(
            f"{name} at {height}x{width} px (log10)\n"
            f"{kernel.shape[-1]} px kernel, glare {glare[i]:.3f}",
            fontsize=9,
        )
        for axis in axes[:, i]:
            axis.set_xticks([])
            axis.set_yticks([])
    figure.colorbar(shown, cax=figure.add_axes((0.92, 0.55, 0.015, 0.33)))
    spec = simulator.display.spec()
    figure.suptitle(
        f"display {spec['name']}: pitch {spec['pitch_um'][0]:g} um, open ratio "
        f"{spec['open_ratio']:.3f}; face {simulator.config.face_px:g} sensor px "
        f"= {simulator.scale(height, width):.2f} px per image px"
    )
    return _png(figure)


def grid_figure(rows: list[tuple[str, list[np.ndarray]]], title: str) -> bytes:
    """PNG: one labelled row of images per entry (uint8 grey or RGB arrays)."""
    from matplotlib.figure import Figure

    columns = max(len(images) for _, images in rows)
    figure = Figure(figsize=(1.3 * columns + 1.2, 1.45 * len(rows) + 0.4), layout="constrained")
    axes = np.atleast_2d(figure.subplots(len(rows), columns, squeeze=False))
    for r, (label, images) in enumerate(rows):
        for col in range(columns):
            axis = axes[r, col]
            axis.set_xticks([])
            axis.set_yticks([])
            if col < len(images):
                image = images[col]
                axis.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
        axes[r, 0].set_ylabel(label, fontsize=8)
    figure.suptitle(title, fontsize=9)
    return _png(figure)


def preview_figure(root: Path, dst: Path, relpaths: list[str], simulator: UDCSimulator) -> bytes:
    """PNG: the clean images ``relpaths`` over their UDC versions as written to ``dst``."""
    from lrdif.data.images import read_image

    config = simulator.config
    return grid_figure(
        [
            ("clean", [read_image(root / r) for r in relpaths]),
            ("UDC", [read_image(dst / r) for r in relpaths]),
        ],
        f"{simulator.display.name}, {config.snr_db:g} dB, face {config.face_px:g} sensor px, "
        f"seed {config.seed}",
    )


# --------------------------------------------------------------------------- command line


def configure_parser(parser: argparse.ArgumentParser) -> None:
    import lrdif.data  # noqa: F401  (registers the readers)
    from lrdif.registry import DATASETS

    defaults = UDCConfig()
    parser.add_argument("--dataset", required=True, choices=DATASETS.names(), help="reader")
    parser.add_argument(
        "--src", required=True, type=Path, help="the clean data set (as its reader takes it)"
    )
    parser.add_argument(
        "--dst", required=True, type=Path, help="output folder (new, empty, or a run to resume)"
    )
    parser.add_argument(
        "--display",
        default=defaults.display,
        help="toled | poled | rect (with --display-pitch-um, --display-opening-um) | "
        "an image of one display tile (255 = open; with --display-pitch-um)",
    )
    parser.add_argument("--display-pitch-um", type=float, help="tile width in um (rect, image)")
    parser.add_argument(
        "--display-opening-um", type=float, nargs=2, metavar=("W", "H"), help="opening (rect)"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="noise seed (default 0)")
    parser.add_argument(
        "--severity",
        type=float,
        default=defaults.severity,
        help="noise: 0 = 40 dB .. 1 = 24 dB SNR at white (default 0.5 = 32 dB)",
    )
    parser.add_argument(
        "--face-px",
        type=float,
        default=defaults.face_px,
        help="sensor pixels spanned by an image's longer side: the PSF's scale "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--rgb-output", action="store_true", help="write greyscale inputs as RGB (with colour cast)"
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per chunk")
    parser.add_argument(
        "--skip-bad", action="store_true", help="skip unreadable images (listed in the manifest)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    from lrdif.data.base import LayoutError
    from lrdif.data.images import ImageError

    try:
        config = UDCConfig(
            display=args.display,
            display_pitch_um=args.display_pitch_um,
            display_opening_um=tuple(args.display_opening_um) if args.display_opening_um else None,
            severity=args.severity,
            face_px=args.face_px,
            seed=args.seed,
            keep_grey=not args.rgb_output,
            optics=Optics(),
        )
        run = synthesize(
            args.dataset,
            args.src,
            args.dst,
            config,
            workers=args.workers,
            skip_bad=args.skip_bad,
            batch_size=args.batch_size,
            progress=not args.no_progress,
        )
    except (LayoutError, ImageError, SynthesizeError, ValueError) as exc:
        print(f"lrdif synthesize: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\nlrdif synthesize: interrupted; rerun the same command to resume into {args.dst}",
            file=sys.stderr,
        )
        return 130
    counts = run.manifest["counts"]
    print(
        f"{args.dst}: {counts['udc_images']} UDC images ({run.written} written now, "
        f"{run.already_present} already there), {counts['copied_files']} files copied, "
        f"{counts['bad']} bad skipped; manifest, PSF and preview in {args.dst / INFO_DIR}"
    )
    return 0
