"""The base of the FER data-set readers: :class:`FERDataset` (samples plus decoding),
:class:`Sample`, :class:`LayoutError` and the helpers the readers share.

The readers, one module each, register in ``lrdif.registry.DATASETS`` (importing
:mod:`lrdif.data` registers them all): ``ferplus`` (:mod:`lrdif.data.ferplus`), ``rafdb``
(:mod:`lrdif.data.rafdb`), ``kdef`` (:mod:`lrdif.data.kdef`), ``folder``
(:mod:`lrdif.data.folder`), ``csv`` (:mod:`lrdif.data.csvset`) and ``mixed`` (several
roots of one reader together, :mod:`lrdif.data.mixed`).

The paper (Sec. 4.1-4.2) trains and tests on RAF-DB, FERPlus and KDEF and on their UDC
versions; ``lrdif synthesize`` writes a UDC set in the same layout as its source, so
these readers serve both. Each reader lists ``samples`` (image path relative to ``root``
plus an integer label) and decodes with :func:`lrdif.data.images.read_image`.

    DATASETS.build("ferplus", root=Path, split="train", label_mode="majority")

Layouts, label modes and the KDEF split rule are documented in docs/datasets.md.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import chain, pairwise, repeat
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np

from lrdif.data.images import ImageError, ImageMode, read_image

GENERIC_SPLITS = ("train", "val", "valid", "test", "all")
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


class GenericDataset(FERDataset):
    """Base of the readers of generic layouts (``folder``, ``csv``): splits train, val,
    valid, test or all; classes given or found; grey or colour images. A subclass lists
    its samples (and sets ``class_names``) in ``_list_samples``."""

    splits = GENERIC_SPLITS

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
        self._list_samples(split, class_names)

    def _list_samples(self, split: str, class_names: tuple[str, ...] | None) -> None:
        raise NotImplementedError


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
