"""Readers for FER data sets in their native layouts, one registry (``lrdif.registry.DATASETS``).

The paper (Sec. 4.1-4.2) trains and tests on RAF-DB, FERPlus and KDEF and on their UDC
versions; ``lrdif synthesize`` writes a UDC set in the same layout as its source, so
these readers serve both. Each reader lists ``samples`` (image path relative to ``root``
plus an integer label) and decodes with :func:`lrdif.data.images.read_image`.

    DATASETS.build("ferplus", root=Path, split="train", label_mode="majority")

Layouts, label modes and the KDEF split rule are documented in docs/datasets.md.
"""

from __future__ import annotations

import csv
import hashlib
import multiprocessing
import os
import re
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import chain, pairwise, repeat
from pathlib import Path
from typing import ClassVar, Literal

import cv2
import numpy as np

from lrdif.data.images import (
    ImageError,
    ImageMode,
    read_image,
)
from lrdif.registry import DATASETS
from lrdif.vocabulary import FERPLUS_CLASSES

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class LayoutError(ValueError):
    """A data-set folder that does not have the reader's layout; shows the expected tree."""


@dataclass(frozen=True)
class Sample:
    """One labelled image: ``relpath`` under the data set's root, class index, raw votes."""

    relpath: str
    label: int
    votes: np.ndarray | None = None


def _listing(folder: Path, limit: int = 8) -> str:
    """What ``folder`` holds, for error messages: ``'a/, b.txt, ... (12 entries)'``."""
    if not folder.is_dir():
        return f"{folder} does not exist or is not a folder"
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return f"{folder} is empty"
    shown = ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")
    return f"{folder} holds {shown} ({len(names)} entries)"


class FERDataset:
    """Base of every reader: a list of :class:`Sample` plus decoding.

    Subclasses set ``splits``, ``layout`` (the expected tree, shown in errors),
    ``class_names``, ``image_mode`` and ``samples`` and implement ``source_files``.
    """

    splits: ClassVar[tuple[str, ...]] = ()
    layout: ClassVar[str] = ""

    def __init__(self, *, root: str | Path, split: str) -> None:
        if split not in self.splits:
            raise ValueError(
                f"{type(self).__name__}: unknown split {split!r}; expected one of {self.splits}"
            )
        self.root = Path(root)
        self.split = split
        self.class_names: tuple[str, ...] = ()
        self.samples: list[Sample] = []
        self.image_mode: ImageMode = "RGB"
        self.skipped: list[tuple[str, str]] = []

    @classmethod
    def source_files(cls, root: str | Path) -> list[str]:
        """Every image relpath of every split, sorted, after validating the layout."""
        raise NotImplementedError

    @classmethod
    def label_files(cls, root: str | Path) -> list[str]:
        """Relpaths of the annotation files a copy of this data set must carry along."""
        return []

    @classmethod
    def layout_error(cls, root: Path, found: str) -> LayoutError:
        return LayoutError(f"{root}: {found}.\nExpected layout:\n{cls.layout}")

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
            f"{len(self)} images, {len(self.class_names)} classes)"
        )

    def load(self, i: int) -> np.ndarray:
        """Image ``i`` as ``uint8`` ``(H, W)`` (grey sets) or ``(H, W, 3)``."""
        return read_image(self.root / self.samples[i].relpath, mode=self.image_mode)

    def labels(self) -> np.ndarray:
        """``(N,)`` int64 class indices."""
        return np.fromiter((s.label for s in self.samples), np.int64, len(self.samples))

    def label_distribution(self) -> np.ndarray:
        """``(N, K)`` float32 targets: normalised crowd votes where known, else one-hot."""
        if self.samples and all(s.votes is not None for s in self.samples):
            votes = np.stack([s.votes for s in self.samples]).astype(np.float32)
            return votes / votes.sum(axis=1, keepdims=True)
        out = np.zeros((len(self.samples), len(self.class_names)), np.float32)
        out[np.arange(len(self.samples)), self.labels()] = 1.0
        return out

    def load_all(
        self,
        *,
        skip_bad: bool = False,
        workers: int = 0,
        size: int | tuple[int, int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Decode every sample: ``(images uint8 (N, H, W[, 3]), labels int64 (N,))``.

        ``workers > 0`` decodes contiguous chunks in that many spawned processes (Pillow's
        warnings bookkeeping is per process, so this is safe where threads are not);
        results do not depend on ``workers``. ``size`` (``S`` or ``(H, W)``) resizes each
        image with area averaging as it is decoded, so sets of large or mixed-size photos
        fit in memory. A bad image raises :class:`ImageError` naming it; with ``skip_bad``
        it is left out and recorded in ``self.skipped`` as ``(relpath, reason)``.
        """
        target = (size, size) if isinstance(size, int) else size
        relpaths = [s.relpath for s in self.samples]
        if workers > 0:
            bounds = np.linspace(0, len(relpaths), 4 * workers + 1).astype(int)
            chunks = [relpaths[a:b] for a, b in pairwise(bounds)]
            context = multiprocessing.get_context("spawn")  # fork is unsafe under torch/cv2
            with ProcessPoolExecutor(workers, mp_context=context) as pool:
                parts = pool.map(
                    _decode_list, repeat(self.root), chunks, repeat(self.image_mode), repeat(target)
                )
                results = list(chain.from_iterable(parts))
        else:
            results = _decode_each(self.root, relpaths, self.image_mode, target)
        self.skipped = []
        images: list[np.ndarray] = []
        labels: list[int] = []
        for sample, result in zip(self.samples, results, strict=True):
            if isinstance(result, ImageError):
                if not skip_bad:
                    raise result
                self.skipped.append((sample.relpath, str(result)))
                continue
            if images and result.shape != images[0].shape:
                raise ImageError(
                    f"{self.root / sample.relpath}: shape {result.shape} differs from "
                    f"{images[0].shape} of the first image; load_all stacks one size, "
                    "so pass size=(H, W)"
                )
            images.append(result)
            labels.append(sample.label)
        if not images:
            raise ImageError(f"{self.root}: no decodable image in split {self.split!r}")
        return np.stack(images), np.asarray(labels, np.int64)


def _decode_each(
    root: Path, relpaths: list[str], mode: ImageMode, size: tuple[int, int] | None
) -> Iterator[np.ndarray | ImageError]:
    """Decode lazily (so a serial load stops at the first bad image); errors are yielded."""
    for relpath in relpaths:
        try:
            image = read_image(root / relpath, mode=mode)
        except ImageError as exc:
            yield exc
            continue
        if size is not None and image.shape[:2] != size:
            image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        yield image


def _decode_list(
    root: Path, relpaths: list[str], mode: ImageMode, size: tuple[int, int] | None
) -> list[np.ndarray | ImageError]:
    """One worker process's chunk of :meth:`FERDataset.load_all`."""
    return list(_decode_each(root, relpaths, mode, size))


def _read_rows(path: Path, root: Path, layout_error) -> list[list[str]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.reader(handle))
    except FileNotFoundError:
        raise layout_error(root, f"no label file {path.relative_to(root)}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LayoutError(f"{path}: cannot read the label file ({exc})") from None


def _check_images_exist(root: Path, entries: Iterable[tuple[str, str]], label_file: Path) -> None:
    """``entries`` = (relpath, 'line N'); one missing image -> error naming line and path."""
    present: dict[Path, set[str]] = {}
    for relpath, where in entries:
        path = root / relpath
        folder = path.parent
        if folder not in present:
            present[folder] = set(os.listdir(folder)) if folder.is_dir() else set()
        if path.name not in present[folder]:
            raise LayoutError(f"{label_file} {where} names {relpath}, but {path} does not exist")


# --------------------------------------------------------------------------- FERPlus


FERPLUS_LAYOUT = """\
  ROOT/
    FER2013Train/label.csv      no header: name, "(x, y, w, h)", 10 vote counts
    FER2013Train/fer0000000.png ...
    FER2013Valid/label.csv + PNGs
    FER2013Test/label.csv + PNGs
  votes: neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF"""


@DATASETS.register("ferplus")
class FERPlus(FERDataset):
    """FER2013 images with the FER+ crowd labels (Barsoum et al. 2016); 48x48 grey PNGs.

    ``label_mode``:
    - ``"majority"``: the standard protocol. Votes of 1 or less are zeroed; an image is
      kept when its top class holds more than half of the remaining votes and is an
      emotion (not unknown/NF). 25,045 / 3,191 / 3,137 images.
    - ``"plurality"``: the class with the most raw votes, kept when it is unique and an
      emotion.
    - ``"distribution"``: every image whose top emotion has at least as many votes as
      unknown and as NF; label = the top emotion (first on ties); train on the votes.
    Every sample keeps its 8 emotion vote counts in ``votes``.
    """

    splits = ("train", "valid", "test")
    layout = FERPLUS_LAYOUT
    folders: ClassVar[dict[str, str]] = {
        "train": "FER2013Train",
        "valid": "FER2013Valid",
        "test": "FER2013Test",
    }
    CLASS_NAMES = FERPLUS_CLASSES

    def __init__(
        self,
        *,
        root: str | Path,
        split: str,
        label_mode: Literal["majority", "plurality", "distribution"] = "majority",
    ) -> None:
        super().__init__(root=root, split=split)
        if label_mode not in ("majority", "plurality", "distribution"):
            raise ValueError(
                f"FERPlus: unknown label_mode {label_mode!r}; "
                "expected 'majority', 'plurality' or 'distribution'"
            )
        self.label_mode = label_mode
        self.class_names = self.CLASS_NAMES
        self.image_mode = "L"
        names, votes = self._read_split(self.root, split)
        keep, labels = self.select(votes, label_mode)
        emotion_votes = votes[:, :8].astype(np.float32)
        folder = self.folders[split]
        self.samples = [
            Sample(f"{folder}/{names[i]}", int(labels[i]), emotion_votes[i])
            for i in np.flatnonzero(keep)
        ]

    @staticmethod
    def select(votes: np.ndarray, label_mode: str) -> tuple[np.ndarray, np.ndarray]:
        """``votes (N, 10)`` -> ``(keep (N,) bool, label (N,) int)`` for one label mode."""
        if label_mode == "majority":
            cleaned = np.where(votes <= 1, 0, votes)  # single votes are annotator noise
            top = cleaned.argmax(axis=1)
            keep = (cleaned.max(axis=1) > 0.5 * cleaned.sum(axis=1)) & (top < 8)
            return keep, top
        if label_mode == "plurality":
            top = votes.argmax(axis=1)
            unique = (votes == votes.max(axis=1, keepdims=True)).sum(axis=1) == 1
            return unique & (top < 8), top
        emotion = votes[:, :8]
        best = emotion.max(axis=1)
        keep = (best > 0) & (best >= votes[:, 8]) & (best >= votes[:, 9])
        return keep, emotion.argmax(axis=1)

    @classmethod
    def _read_split(cls, root: Path, split: str) -> tuple[list[str], np.ndarray]:
        """Image names and ``(N, 10)`` int votes of one split; validates rows and images."""
        root = Path(root)
        folder = cls.folders[split]
        if not (root / folder).is_dir():
            raise cls.layout_error(root, f"no folder {folder}/ ({_listing(root)})")
        label_file = root / folder / "label.csv"
        rows = _read_rows(label_file, root, cls.layout_error)
        lines = [i + 1 for i, row in enumerate(rows) if row]  # blank lines are allowed
        names: list[str] = []
        votes = np.zeros((len(lines), 10), np.int64)
        for i, line in enumerate(lines):
            row = rows[line - 1]
            if len(row) != 12:
                raise LayoutError(
                    f"{label_file} line {line}: {len(row)} columns; expected 12 (image name, "
                    "face box, 10 vote counts)"
                )
            try:
                votes[i] = [int(v) for v in row[2:]]
            except ValueError:
                raise LayoutError(
                    f"{label_file} line {line}: vote counts {row[2:]} are not integers"
                ) from None
            names.append(row[0])
        if (votes < 0).any():
            line = lines[int(np.flatnonzero((votes < 0).any(axis=1))[0])]
            raise LayoutError(f"{label_file} line {line}: negative vote count")
        _check_images_exist(
            root,
            ((f"{folder}/{n}", f"line {k}") for k, n in zip(lines, names, strict=True)),
            label_file,
        )
        return names, votes

    @classmethod
    def source_files(cls, root: str | Path) -> list[str]:
        root = Path(root)
        return sorted(
            f"{cls.folders[s]}/{n}" for s in cls.splits for n in cls._read_split(root, s)[0]
        )

    @classmethod
    def label_files(cls, root: str | Path) -> list[str]:
        return [f"{cls.folders[s]}/label.csv" for s in cls.splits]


# --------------------------------------------------------------------------- RAF-DB


_RAF_LABELS = ("1", "2", "3", "4", "5", "6", "7")

RAFDB_LAYOUT = """\
  ROOT/
    EmoLabel/list_patition_label.txt   lines "train_00001.jpg 5", "test_0001.jpg 1"
    Image/aligned/train_00001_aligned.jpg ...   (variant "aligned", the default)
    Image/original/train_00001.jpg ...          (variant "original")
  labels 1..7 = surprise, fear, disgust, happiness, sadness, anger, neutral"""


@DATASETS.register("rafdb")
class RAFDB(FERDataset):
    """RAF-DB basic emotions (Li et al. 2017): 12,271 train / 3,068 test, 7 classes."""

    splits = ("train", "test")
    layout = RAFDB_LAYOUT
    LABEL_FILE = "EmoLabel/list_patition_label.txt"
    CLASS_NAMES = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")

    def __init__(
        self,
        *,
        root: str | Path,
        split: str,
        variant: Literal["aligned", "original"] = "aligned",
    ) -> None:
        super().__init__(root=root, split=split)
        if variant not in ("aligned", "original"):
            raise ValueError(
                f"RAF-DB: unknown variant {variant!r}; expected 'aligned' or 'original'"
            )
        self.variant = variant
        self.class_names = self.CLASS_NAMES
        entries = self._read_labels(self.root, variant)
        self.samples = [Sample(rel, label) for rel, label, s in entries if s == split]

    @staticmethod
    def image_relpath(name: str, variant: str) -> str:
        if variant == "original":
            return f"Image/original/{name}"
        stem, dot, suffix = name.rpartition(".")
        return f"Image/aligned/{stem}_aligned{dot}{suffix}"

    @classmethod
    def _read_labels(cls, root: Path, variant: str) -> list[tuple[str, int, str]]:
        """``(relpath, label 0..6, split)`` for every line; validates lines and images."""
        root = Path(root)
        label_file = root / cls.LABEL_FILE
        if not label_file.is_file():
            raise cls.layout_error(root, f"no {cls.LABEL_FILE} ({_listing(root)})")
        if not (root / "Image" / variant).is_dir():
            raise cls.layout_error(
                root, f"no image folder Image/{variant}/ ({_listing(root / 'Image')})"
            )
        entries = []
        text = label_file.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split()
            split = parts[0].split("_", 1)[0] if parts else ""
            if len(parts) != 2 or split not in cls.splits or parts[1] not in _RAF_LABELS:
                raise LayoutError(
                    f"{label_file} line {number}: {line!r}; expected '<train|test>_NNNNN.jpg <1-7>'"
                )
            entries.append((cls.image_relpath(parts[0], variant), int(parts[1]) - 1, split))
        if not entries:
            raise cls.layout_error(root, f"{cls.LABEL_FILE} holds no labels")
        _check_images_exist(
            root, ((rel, f"line {i + 1}") for i, (rel, _, _) in enumerate(entries)), label_file
        )
        return entries

    @classmethod
    def source_files(cls, root: str | Path) -> list[str]:
        """Images of every split in each variant folder present (aligned and/or original)."""
        root = Path(root)
        variants = [v for v in ("aligned", "original") if (root / "Image" / v).is_dir()]
        if not variants:
            raise cls.layout_error(root, f"no Image/aligned/ or Image/original/ ({_listing(root)})")
        return sorted(rel for v in variants for rel, _, _ in cls._read_labels(root, v))

    @classmethod
    def label_files(cls, root: str | Path) -> list[str]:
        return [cls.LABEL_FILE]


# --------------------------------------------------------------------------- KDEF


KDEF_LAYOUT = """\
  ROOT/AF01/AF01ANS.JPG ...   (KDEF's own per-subject folders) or ROOT/AF01ANS.JPG ...
  name = session A|B, sex F|M, subject 01-35, expression AF AN DI HA NE SA SU,
         angle FL HL S HR FR (full/half left, straight, half/full right), .JPG"""

_KDEF_NAME = re.compile(
    r"(?P<session>[AB])(?P<sex>[FM])(?P<number>\d\d)"
    r"(?P<expression>AF|AN|DI|HA|NE|SA|SU)(?P<angle>FL|HL|S|HR|FR)",
    re.IGNORECASE,
)


def kdef_test_subjects(seed: int) -> frozenset[str]:
    """The 14 held-out subjects (7 women, 7 men) of the subject-disjoint KDEF split.

    A subject is sex + number (``"F07"``); both sessions of a subject stay on one side.
    Per sex, the 7 of 35 subjects with the smallest ``sha256(f"{seed}:{subject}")`` are
    held out: 14 subjects x 2 sessions x 7 expressions x 5 angles = 980 test images and
    56 x 70 = 3,920 train images on the full set, matching the paper's sizes (Sec. 4.2).
    The hash makes the split independent of file order, of numpy's RNG and of which
    images are present.
    """

    def rank(subject: str) -> str:
        return hashlib.sha256(f"{seed}:{subject}".encode()).hexdigest()

    chosen: list[str] = []
    for sex in "FM":
        subjects = [f"{sex}{n:02d}" for n in range(1, 36)]
        chosen += sorted(subjects, key=rank)[:7]
    return frozenset(chosen)


@DATASETS.register("kdef")
class KDEF(FERDataset):
    """Karolinska Directed Emotional Faces (Lundqvist et al. 1998): 70 people, 4,900 images."""

    splits = ("train", "test")
    layout = KDEF_LAYOUT
    EXPRESSIONS = ("AF", "AN", "DI", "HA", "NE", "SA", "SU")
    CLASS_NAMES = ("fear", "anger", "disgust", "happiness", "neutral", "sadness", "surprise")
    ANGLES = ("FL", "HL", "S", "HR", "FR")

    def __init__(
        self,
        *,
        root: str | Path,
        split: str,
        angles: tuple[str, ...] = ANGLES,
        seed: int = 0,
    ) -> None:
        super().__init__(root=root, split=split)
        wrong = [a for a in angles if a not in self.ANGLES]
        if wrong or not angles:
            raise ValueError(
                f"KDEF: angles {wrong or angles} not allowed; expected some of {self.ANGLES}"
            )
        self.angles = tuple(angles)
        self.seed = seed
        self.class_names = self.CLASS_NAMES
        test = kdef_test_subjects(seed)
        for relpath, match in self._scan(self.root):
            angle = match["angle"].upper()
            subject = match["sex"].upper() + match["number"]
            if angle in self.angles and (subject in test) == (split == "test"):
                label = self.EXPRESSIONS.index(match["expression"].upper())
                self.samples.append(Sample(relpath, label))
        if not self.samples:
            raise self.layout_error(self.root, f"no {split} image for angles {self.angles}")

    @classmethod
    def _scan(cls, root: Path) -> list[tuple[str, re.Match[str]]]:
        """Every KDEF image under ``root`` (sorted relpaths) with its parsed name."""
        root = Path(root)
        if not root.is_dir():
            raise cls.layout_error(root, "the folder does not exist")
        found: dict[str, str] = {}
        images: list[tuple[str, re.Match[str]]] = []
        misnamed: list[str] = []
        for path in sorted(root.rglob("*")):
            hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
            if path.suffix.lower() not in IMAGE_SUFFIXES or hidden:
                continue
            relpath = path.relative_to(root).as_posix()
            match = _KDEF_NAME.fullmatch(path.stem)
            if match is None:
                misnamed.append(relpath)
                continue
            key = path.stem.upper()
            if key in found:
                raise LayoutError(f"{root}: {relpath} and {found[key]} are the same KDEF image")
            found[key] = relpath
            images.append((relpath, match))
        if misnamed:
            shown = ", ".join(misnamed[:5]) + (" ..." if len(misnamed) > 5 else "")
            raise cls.layout_error(root, f"{len(misnamed)} image(s) not named like KDEF: {shown}")
        if not images:
            raise cls.layout_error(root, f"no KDEF image ({_listing(root)})")
        return images

    @classmethod
    def source_files(cls, root: str | Path) -> list[str]:
        return [relpath for relpath, _ in cls._scan(Path(root))]


# --------------------------------------------------------------------------- generic


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def _subfolders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


GENERIC_SPLITS = ("train", "val", "valid", "test", "all")

FOLDER_LAYOUT = """\
  ROOT/<split>/<class>/*.jpg   split folders named train, val, valid or test
  or ROOT/<class>/*.jpg        no split folders: the only split is "all"
  images: .png .jpg .jpeg .bmp .tif .tiff .webp (also in sub-folders of a class folder)"""


@DATASETS.register("folder")
class ImageFolder(FERDataset):
    """Class-per-folder images. Classes are the sorted folder names, or ``class_names``."""

    splits = GENERIC_SPLITS
    layout = FOLDER_LAYOUT

    def __init__(
        self,
        *,
        root: str | Path,
        split: str,
        class_names: tuple[str, ...] | None = None,
        mode: ImageMode = "RGB",
    ) -> None:
        super().__init__(root=root, split=split)
        self.image_mode = mode
        split_dirs = self._split_dirs(self.root)
        if split_dirs:
            if split not in split_dirs:
                raise self.layout_error(self.root, f"no split folder {split}/ (has {split_dirs})")
            base = self.root / split
            found = sorted({c for s in split_dirs for c in _subfolders(self.root / s)})
        else:
            if split != "all":
                raise self.layout_error(
                    self.root, f"no split folders, so the only split is 'all', not {split!r}"
                )
            base = self.root
            found = _subfolders(self.root)
        if class_names is None:
            class_names = tuple(found)
        else:
            extra = sorted(set(found) - set(class_names))
            if extra:
                raise self.layout_error(
                    self.root, f"class folders {extra} are not in class_names {class_names}"
                )
        self.class_names = tuple(class_names)
        for label, name in enumerate(self.class_names):
            if (base / name).is_dir():
                self.samples += [
                    Sample(p.relative_to(self.root).as_posix(), label)
                    for p in _image_files(base / name)
                ]
        if not self.samples:
            raise self.layout_error(self.root, f"no image in split {split!r} ({_listing(base)})")

    @staticmethod
    def _split_dirs(root: Path) -> list[str]:
        return [s for s in GENERIC_SPLITS[:-1] if (root / s).is_dir()]

    @classmethod
    def source_files(cls, root: str | Path) -> list[str]:
        root = Path(root)
        if not root.is_dir():
            raise cls.layout_error(root, "the folder does not exist")
        bases = [root / s for s in cls._split_dirs(root)] or [root]
        files = sorted(
            p.relative_to(root).as_posix()
            for base in bases
            for c in _subfolders(base)
            for p in _image_files(base / c)
        )
        if not files:
            raise cls.layout_error(root, f"no image in a class folder ({_listing(root)})")
        return files


CSV_LAYOUT = """\
  ROOT/labels.csv    header "path,label" or "path,label,split"; pass ROOT or the CSV file
  ROOT/<path> ...    paths relative to the CSV's folder
  label: a class name or an index 0..K-1; split: train, val, valid or test (else split "all")"""


@DATASETS.register("csv")
class CSVDataset(FERDataset):
    """Images listed in a CSV of ``path,label[,split]``, paths relative to the CSV's folder.

    ``root`` is the CSV file or the folder holding ``labels.csv``; ``self.root`` is then
    the CSV's folder. Classes are ``class_names`` if given (labels may be names or
    indices), else the sorted label names, or ``"0".."K-1"`` when all labels are integers.
    """

    splits = GENERIC_SPLITS
    layout = CSV_LAYOUT
    DEFAULT_NAME = "labels.csv"

    def __init__(
        self,
        *,
        root: str | Path,
        split: str,
        class_names: tuple[str, ...] | None = None,
        mode: ImageMode = "RGB",
    ) -> None:
        super().__init__(root=root, split=split)
        self.image_mode = mode
        csv_path = self._csv_path(self.root)
        self.root = csv_path.parent
        rows = self._read(csv_path)
        has_split = rows[0][2] is not None
        if has_split == (split == "all"):
            raise self.layout_error(
                csv_path,
                "a split column, so pick split train/val/valid/test"
                if has_split
                else f"no split column, so the only split is 'all', not {split!r}",
            )
        labels = [label for _, _, _, label in rows]
        if class_names is None:
            if all(label.isdigit() for label in labels):
                class_names = tuple(str(i) for i in range(max(int(x) for x in labels) + 1))
            else:
                class_names = tuple(sorted(set(labels)))
        self.class_names = tuple(class_names)
        index = {name: i for i, name in enumerate(self.class_names)}
        for number, relpath, row_split, label in rows:
            if has_split and row_split != split:
                continue
            if label in index:
                value = index[label]
            elif label.isdigit() and int(label) < len(self.class_names):
                value = int(label)
            else:
                raise LayoutError(
                    f"{csv_path} line {number}: label {label!r} is neither a class name nor "
                    f"an index below {len(self.class_names)} (classes {self.class_names})"
                )
            self.samples.append(Sample(relpath, value))
        if not self.samples:
            raise self.layout_error(csv_path, f"no row for split {split!r}")

    @classmethod
    def _csv_path(cls, root: Path) -> Path:
        path = root / cls.DEFAULT_NAME if root.is_dir() else root
        if not path.is_file():
            raise cls.layout_error(
                root, f"no CSV file ({_listing(root if root.is_dir() else root.parent)})"
            )
        return path

    @classmethod
    def _read(cls, csv_path: Path) -> list[tuple[int, str, str | None, str]]:
        """``(line, relpath, split or None, label)`` per row; validates header and images."""
        rows = _read_rows(csv_path, csv_path.parent, cls.layout_error)
        header = [h.strip().lower() for h in rows[0]] if rows else []
        if header[:2] != ["path", "label"] or header[2:] not in ([], ["split"]):
            raise cls.layout_error(csv_path, f"header {rows[0] if rows else '(empty file)'}")
        has_split = len(header) == 3
        out = []
        for number, row in enumerate(rows[1:], start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise LayoutError(f"{csv_path} line {number}: {row}; expected columns {header}")
            relpath = row[0].strip().replace("\\", "/")
            if Path(relpath).is_absolute() or ".." in Path(relpath).parts:
                raise LayoutError(
                    f"{csv_path} line {number}: path {relpath!r} must be relative to the "
                    "CSV's folder, without '..'"
                )
            split = row[2].strip() if has_split else None
            if has_split and split not in GENERIC_SPLITS[:-1]:
                raise LayoutError(
                    f"{csv_path} line {number}: split {split!r}; expected one of "
                    f"{GENERIC_SPLITS[:-1]}"
                )
            out.append((number, relpath, split, row[1].strip()))
        if not out:
            raise cls.layout_error(csv_path, "no rows")
        _check_images_exist(csv_path.parent, ((rel, f"line {n}") for n, rel, _, _ in out), csv_path)
        return out

    @classmethod
    def source_files(cls, root: str | Path) -> list[str]:
        return sorted({relpath for _, relpath, _, _ in cls._read(cls._csv_path(Path(root)))})

    @classmethod
    def label_files(cls, root: str | Path) -> list[str]:
        return [cls._csv_path(Path(root)).name]
