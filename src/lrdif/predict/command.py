"""``lrdif predict PATH...``: emotions of the faces in photos, folders and videos.

Prints one summary line per picture (per video: a line for the whole clip) with the
three likeliest emotions of each face (``--all``: every class), writes the records as
JSON or CSV (every class's calibrated probability, always, and ``confidence``: the
dominant class's), and with ``--annotate DIR`` draws each picture with its boxes,
labels and probability bars (with percentages). Exit status: 0 when every input was
read, 1 when some failed (their errors are in the output, the rest is written), 2 on a
usage error (bad option, missing or unusable checkpoint).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from lrdif.predict.annotate import annotate, save_image
from lrdif.predict.recognizer import Picture, Recognizer
from lrdif.predict.records import NO_FACE, Predictions
from lrdif.registry import FACE_DETECTORS


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="image files, folders (searched recursively) or video files")
    parser.add_argument("--weights", metavar="CKPT",
                        help="checkpoint made by `lrdif train`, or a shipped model: 'lrdif' "
                             "(the default, LRDif stage 2) or 'fast' (MobileNetV2 at 48x48, "
                             "for bulk face crops)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", metavar="FILE",
                     help="write the face records as JSON (every class's probability)")
    out.add_argument("--csv", metavar="FILE",
                     help="write the face records as CSV (a probability column per class)")
    parser.add_argument("--all", action="store_true",
                        help="print every class's probability, likeliest first "
                             "(default: the top three)")
    parser.add_argument("--annotate", metavar="DIR",
                        help="write each picture with boxes, labels and probability bars")
    parser.add_argument("--simulate-udc", choices=("toled", "poled"),
                        help="pass each face through this under-display camera simulation first")
    parser.add_argument("--batch-size", type=_positive_int, default=64, metavar="N",
                        help="faces per forward pass (default 64)")
    parser.add_argument("--every", type=_positive_int, default=1, metavar="N",
                        help="keep every N-th video frame (default 1)")
    parser.add_argument("--no-detect", action="store_true",
                        help="inputs are face crops already (FERPlus style): no detection")
    parser.add_argument("--detector", choices=FACE_DETECTORS.names(), default="haar",
                        help="face detector (default haar: OpenCV's bundled cascade)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                        help="bfloat16: bf16 autocast, faster on CPUs with bf16 arithmetic "
                             "and on GPUs (probabilities within about 1e-2)")


def main(args: argparse.Namespace) -> int:
    try:
        recognizer = Recognizer(
            args.weights, device=args.device, detector=args.detector,
            batch_size=args.batch_size, simulate_udc=args.simulate_udc,
            precision=args.precision,
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        print(f"lrdif predict: error: {exc}", file=sys.stderr)
        return 2
    annotate_dir = Path(args.annotate) if args.annotate else None
    written: set[str] = set()
    records: list[dict[str, Any]] = []
    clip: list[dict[str, Any]] = []  # the records of the video being read
    for picture in recognizer.iter_predict(args.paths, detect=not args.no_detect,
                                           every=args.every):
        if clip and (picture.frame is None or picture.source != clip[0]["source"]):
            print(_clip_line(clip))
            clip = []
        if picture.frame is None:
            print(_picture_line(picture, args.no_detect, None if args.all else 3))
        else:
            clip += picture.records
        if annotate_dir is not None and picture.image is not None:
            _write_annotated(annotate_dir, picture, written)
        records += picture.records
    if clip:
        print(_clip_line(clip))
    predictions = Predictions(records, class_names=recognizer.class_names)
    if args.json:
        predictions.to_json(args.json)
    if args.csv:
        predictions.to_csv(args.csv)
    failed = sorted({r["source"] for r in predictions.failures})
    sources = {r["source"] for r in predictions}
    print(f"{len(sources)} input(s), {len(predictions.faces)} face(s), "
          f"{sum(r['error'] is not None for r in predictions) - len(predictions.failures)} "
          f"picture(s) without a face, {len(failed)} failed"
          + (f"; results in {args.json or args.csv}" if args.json or args.csv else ""))
    return 1 if failed else 0


def _top(emotions: dict[str, float], n: int | None = 3) -> str:
    """The ``n`` likeliest emotions (``None``: all), likeliest first, as percentages."""
    ranked = sorted(emotions.items(), key=lambda kv: kv[1], reverse=True)[:n]
    return ", ".join(f"{name} {p:.0%}" for name, p in ranked)


def _picture_line(picture: Picture, no_detect: bool, top: int | None = 3) -> str:
    source, records = picture.source, picture.records
    error = records[0]["error"]
    if error == NO_FACE and not no_detect and max(picture.image.shape[:2]) <= 128:
        return f"{source}: {NO_FACE} (a face crop already? use --no-detect)"
    if error is not None:  # read errors already name the file
        return error if error.startswith(source) else f"{source}: {error}"
    faces = [f"face at {r['box']}: {_top(r['emotions'], top)}" for r in records]
    return f"{source}: " + "; ".join(faces)


def _clip_line(records: list[dict[str, Any]]) -> str:
    source = records[0]["source"]  # a read error ends a clip: it is a record of its own
    frames = {r["frame"] for r in records if r["frame"] is not None}
    with_face = {r["frame"] for r in records if r["error"] is None}
    counts = Counter(r["dominant_emotion"] for r in records if r["error"] is None)
    line = f"{source}: {len(frames)} frame(s) read, {len(with_face)} with a face"
    if counts:
        line += ", most often " + ", ".join(f"{k} ({v})" for k, v in counts.most_common(3))
    return line


def _write_annotated(folder: Path, picture: Picture, written: set[str]) -> None:
    stem = Path(picture.source).stem if not picture.source.startswith("<") else "input"
    if picture.frame is not None:
        stem += f"_frame{picture.frame:06d}"
    name, n = f"{stem}.jpg", 1
    while name in written:  # same stem in two folders
        n += 1
        name = f"{stem}_{n}.jpg"
    written.add(name)
    save_image(folder / name, annotate(picture.image, picture.records))
