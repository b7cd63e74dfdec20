"""The ``csv`` reader: images listed in a CSV of ``path,label[,split]``."""

from __future__ import annotations

from pathlib import Path

from lrdif.data.base import (
    GENERIC_SPLITS,
    GenericDataset,
    LayoutError,
    Sample,
    _check_images_exist,
    _listing,
    _read_rows,
)
from lrdif.registry import DATASETS

CSV_LAYOUT = """\
  ROOT/labels.csv    header "path,label" or "path,label,split"; pass ROOT or the CSV file
  ROOT/<path> ...    paths relative to the CSV's folder
  label: a class name or an index 0..K-1; split: train, val, valid or test (else split "all")"""


@DATASETS.register("csv")
class CSVDataset(GenericDataset):
    """Images listed in a CSV of ``path,label[,split]``, paths relative to the CSV's folder.

    ``root`` is the CSV file or the folder holding ``labels.csv``; ``self.root`` is then
    the CSV's folder. Classes are ``class_names`` if given (labels may be names or
    indices), else the sorted label names, or ``"0".."K-1"`` when all labels are integers.
    """

    layout = CSV_LAYOUT
    DEFAULT_NAME = "labels.csv"

    def _list_samples(self, split: str, class_names: tuple[str, ...] | None) -> None:
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
