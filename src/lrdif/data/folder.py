"""The ``folder`` reader: class-per-folder images, with or without split folders."""

from __future__ import annotations

from pathlib import Path

from lrdif.data.base import (
    GENERIC_SPLITS,
    IMAGE_SUFFIXES,
    GenericDataset,
    Sample,
    _listing,
)
from lrdif.registry import DATASETS


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def _subfolders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


FOLDER_LAYOUT = """\
  ROOT/<split>/<class>/*.jpg   split folders named train, val, valid or test
  or ROOT/<class>/*.jpg        no split folders: the only split is "all"
  images: .png .jpg .jpeg .bmp .tif .tiff .webp (also in sub-folders of a class folder)"""


@DATASETS.register("folder")
class ImageFolder(GenericDataset):
    """Class-per-folder images. Classes are the sorted folder names, or ``class_names``."""

    layout = FOLDER_LAYOUT

    def _list_samples(self, split: str, class_names: tuple[str, ...] | None) -> None:
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
