"""Data-set readers on fixture trees built here, and on the real FERPlus when present."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from ferplus_source import FERPLUS, MISSING
from PIL import Image

import lrdif.data  # noqa: F401  (registers the readers)
from lrdif.data.base import LayoutError
from lrdif.data.ferplus import FERPlus
from lrdif.data.images import ImageError
from lrdif.data.kdef import KDEF, kdef_test_subjects
from lrdif.registry import DATASETS


def write_image(path: Path, value: int, size=(6, 8), fmt: str | None = None, grey=False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = size if grey else (*size, 3)
    Image.fromarray(np.full(shape, value, np.uint8)).save(path, fmt)


def jpeg_bytes(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_registry_holds_every_reader():
    assert {"ferplus", "rafdb", "kdef", "folder", "csv"} <= set(DATASETS.names())


# --------------------------------------------------------------------------- FERPlus


def make_ferplus(root: Path, rows: dict[str, list[tuple[str, list[int]]]]) -> None:
    for split, folder in FERPlus.folders.items():
        lines = []
        for i, (name, votes) in enumerate(rows.get(split, [])):
            write_image(root / folder / name, 10 * i, size=(48, 48), grey=True)
            lines.append(f'{name},"(0, 0, 48, 48)",' + ",".join(map(str, votes)))
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "label.csv").write_text("\n".join(lines) + "\n")


VOTE_ROWS = [
    ("a.png", [6, 1, 1, 1, 1, 0, 0, 0, 0, 0]),  # majority: 6 of 6 after outliers -> neutral
    ("b.png", [4, 4, 0, 0, 0, 0, 0, 0, 2, 0]),  # tie: dropped by majority and plurality
    ("c.png", [0, 0, 0, 0, 0, 0, 0, 0, 7, 3]),  # unknown wins: dropped everywhere
    ("d.png", [0, 3, 0, 0, 0, 0, 0, 0, 3, 4]),  # NF has the plurality; distribution drops it
    ("e.png", [0, 0, 5, 0, 0, 0, 0, 0, 5, 0]),  # surprise ties unknown: distribution keeps
    ("f.png", [0, 0, 0, 4, 3, 0, 3, 0, 0, 0]),  # sadness 4 of 10: plurality, not majority
    ("g.png", [0, 0, 0, 0, 0, 0, 0, 2, 1, 0]),  # contempt 2 of 2 after outliers -> majority
]


@pytest.mark.parametrize(
    ("mode", "kept"),
    [
        ("majority", {"a.png": 0, "g.png": 7}),
        ("plurality", {"a.png": 0, "f.png": 3, "g.png": 7}),
        ("distribution", {"a.png": 0, "b.png": 0, "e.png": 2, "f.png": 3, "g.png": 7}),
    ],
)
def test_ferplus_label_modes(tmp_path, mode, kept):
    make_ferplus(tmp_path, {"train": VOTE_ROWS, "valid": VOTE_ROWS[:1], "test": VOTE_ROWS[:1]})
    ds = DATASETS.build("ferplus", root=tmp_path, split="train", label_mode=mode)
    assert {s.relpath.split("/")[1]: s.label for s in ds.samples} == kept
    assert ds.class_names[7] == "contempt" and len(ds.class_names) == 8
    dist = ds.label_distribution()
    assert dist.shape == (len(kept), 8)
    np.testing.assert_allclose(dist.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(dist[0], [6 / 10, 1 / 10, 1 / 10, 1 / 10, 1 / 10, 0, 0, 0])
    images, labels = ds.load_all()
    assert images.shape == (len(kept), 48, 48) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, list(kept.values()))
    np.testing.assert_array_equal(images[0], ds.load(0))


def test_ferplus_missing_image_names_line_and_path(tmp_path):
    make_ferplus(tmp_path, {"train": VOTE_ROWS, "valid": VOTE_ROWS[:1], "test": VOTE_ROWS[:1]})
    (tmp_path / "FER2013Train" / "c.png").unlink()
    with pytest.raises(
        LayoutError, match=r"FER2013Train/label\.csv line 3 names FER2013Train/c\.png"
    ):
        FERPlus(root=tmp_path, split="train")
    with pytest.raises(LayoutError, match="line 3"):
        FERPlus.source_files(tmp_path)


def test_ferplus_wrong_layout_shows_tree(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(LayoutError) as info:
        FERPlus(root=tmp_path, split="valid")
    message = str(info.value)
    assert "no folder FER2013Valid/" in message and "images/" in message
    assert "Expected layout" in message and "FER2013Train/label.csv" in message
    make_ferplus(tmp_path, {"train": VOTE_ROWS})
    (tmp_path / "FER2013Train" / "label.csv").write_text('a.png,"(0, 0, 48, 48)",1,2\n')
    with pytest.raises(LayoutError, match="line 1: 4 columns; expected 12"):
        FERPlus(root=tmp_path, split="train")
    with pytest.raises(ValueError, match="label_mode"):
        FERPlus(root=tmp_path, split="train", label_mode="soft")  # type: ignore[arg-type]


def test_ferplus_source_and_label_files(tmp_path):
    make_ferplus(tmp_path, {"train": VOTE_ROWS, "valid": VOTE_ROWS[:2], "test": VOTE_ROWS[:1]})
    files = FERPlus.source_files(tmp_path)
    assert len(files) == 7 + 2 + 1 and files == sorted(files)  # every row, kept or not
    assert FERPlus.label_files(tmp_path) == [
        "FER2013Train/label.csv",
        "FER2013Valid/label.csv",
        "FER2013Test/label.csv",
    ]


@pytest.mark.skipif(not FERPLUS.exists(), reason=MISSING)
def test_real_ferplus_majority_counts():
    counts = {s: len(FERPlus(root=FERPLUS, split=s)) for s in FERPlus.splits}
    assert counts == {"train": 25_045, "valid": 3_191, "test": 3_137}
    train = FERPlus(root=FERPLUS, split="train")
    per_class = dict(zip(train.class_names, np.bincount(train.labels(), minlength=8), strict=True))
    assert per_class == {
        "neutral": 8_733,
        "happiness": 7_284,
        "surprise": 3_136,
        "sadness": 3_022,
        "anger": 2_098,
        "disgust": 116,
        "fear": 536,
        "contempt": 120,
    }
    assert len(FERPlus.source_files(FERPLUS)) == 28_558 + 3_579 + 3_573
    images, labels = FERPlus(root=FERPLUS, split="valid").load_all()
    assert images.shape == (3_191, 48, 48) and labels.shape == (3_191,)


# --------------------------------------------------------------------------- RAF-DB


def make_rafdb(root: Path) -> None:
    lines = ["train_00001.jpg 5", "train_00002.jpg 1", "train_00003.jpg 7", "test_0001.jpg 4"]
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    for i, line in enumerate(lines):
        stem = line.split(".")[0]
        write_image(root / "Image" / "aligned" / f"{stem}_aligned.jpg", 40 * i, size=(10, 10))
        write_image(root / "Image" / "original" / f"{stem}.jpg", 40 * i, size=(20, 16 + i))


def test_rafdb_reads_both_variants(tmp_path):
    make_rafdb(tmp_path)
    train = DATASETS.build("rafdb", root=tmp_path, split="train")
    assert [s.relpath for s in train.samples] == [
        "Image/aligned/train_00001_aligned.jpg",
        "Image/aligned/train_00002_aligned.jpg",
        "Image/aligned/train_00003_aligned.jpg",
    ]
    # labels 1..7 = surprise, fear, disgust, happiness, sadness, anger, neutral
    assert [train.class_names[s.label] for s in train.samples] == ["sadness", "surprise", "neutral"]
    images, labels = train.load_all()
    assert images.shape == (3, 10, 10, 3)
    np.testing.assert_array_equal(labels, [4, 0, 6])
    test = DATASETS.build("rafdb", root=tmp_path, split="test", variant="original")
    assert [s.relpath for s in test.samples] == ["Image/original/test_0001.jpg"]
    assert test.load(0).shape == (20, 19, 3)
    files = type(train).source_files(tmp_path)
    assert len(files) == 8 and files == sorted(files)
    assert type(train).label_files(tmp_path) == ["EmoLabel/list_patition_label.txt"]
    np.testing.assert_array_equal(train.label_distribution(), np.eye(7)[[4, 0, 6]])


def test_rafdb_original_images_need_a_size_to_stack(tmp_path):
    make_rafdb(tmp_path)
    ds = DATASETS.build("rafdb", root=tmp_path, split="train", variant="original")
    with pytest.raises(ImageError, match=r"train_00002\.jpg: shape .* pass size="):
        ds.load_all()
    images, _ = ds.load_all(size=12)
    assert images.shape == (3, 12, 12, 3)
    assert abs(int(images[1].mean()) - 40) <= 2  # area resizing keeps the flat value


def test_rafdb_errors(tmp_path):
    with pytest.raises(LayoutError, match=r"(?s)no EmoLabel.*is empty.*Expected layout"):
        DATASETS.build("rafdb", root=tmp_path, split="train")
    make_rafdb(tmp_path)
    (tmp_path / "Image" / "aligned" / "train_00002_aligned.jpg").unlink()
    with pytest.raises(
        LayoutError,
        match=r"list_patition_label\.txt line 2 names Image/aligned/train_00002_aligned\.jpg",
    ):
        DATASETS.build("rafdb", root=tmp_path, split="test")
    label_file = tmp_path / "EmoLabel" / "list_patition_label.txt"
    label_file.write_text("train_00001.jpg 8\n")
    with pytest.raises(LayoutError, match=r"line 1: 'train_00001\.jpg 8'"):
        DATASETS.build("rafdb", root=tmp_path, split="train", variant="original")


# --------------------------------------------------------------------------- KDEF


def make_kdef(root: Path, *, subjects=None, folders=True) -> list[str]:
    blob = jpeg_bytes(128)
    names = []
    for session in "AB":
        for sex in "FM":
            for number in subjects or range(1, 36):
                person = f"{session}{sex}{number:02d}"
                for expression in KDEF.EXPRESSIONS:
                    for angle in KDEF.ANGLES:
                        name = f"{person}{expression}{angle}.JPG"
                        path = root / person / name if folders else root / name
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_bytes(blob)
                        names.append(name)
    return names


def test_kdef_subject_disjoint_split_sizes(tmp_path):
    assert len(make_kdef(tmp_path)) == 4_900
    train = DATASETS.build("kdef", root=tmp_path, split="train")
    test = DATASETS.build("kdef", root=tmp_path, split="test")
    assert (len(train), len(test)) == (3_920, 980)

    def people(ds):
        return {s.relpath.split("/")[1][1:4] for s in ds.samples}  # sex + number

    assert people(train).isdisjoint(people(test)) and len(people(test)) == 14
    assert sorted(p[0] for p in people(test)) == ["F"] * 7 + ["M"] * 7
    assert people(test) == kdef_test_subjects(0)
    # Both sessions of a held-out person are held out.
    assert {s.relpath.split("/")[1][0] for s in test.samples} == {"A", "B"}
    assert np.bincount(test.labels()).tolist() == [140] * 7
    # The documented seed-0 split is a contract: results stay comparable across versions.
    assert sorted(kdef_test_subjects(0)) == [
        "F02", "F03", "F09", "F10", "F11", "F21", "F34",
        "M06", "M11", "M13", "M21", "M24", "M26", "M29",
    ]  # fmt: skip
    assert kdef_test_subjects(1) != kdef_test_subjects(0)
    assert kdef_test_subjects(0) == kdef_test_subjects(0)
    straight = DATASETS.build("kdef", root=tmp_path, split="train", angles=("S",))
    assert len(straight) == 3_920 // 5
    assert all(s.relpath.endswith("S.JPG") for s in straight.samples)
    assert len(KDEF.source_files(tmp_path)) == 4_900


def test_kdef_flat_layout_and_labels(tmp_path):
    make_kdef(tmp_path, subjects=[1, 2], folders=False)
    held_out = kdef_test_subjects(0)
    kept = {"F01", "F02", "M01", "M02"} - held_out
    ds = KDEF(root=tmp_path, split="train", angles=("HL", "HR"))
    assert len(ds) == len(kept) * 2 * 7 * 2  # people x sessions x expressions x angles
    for sample in ds.samples:
        code = sample.relpath[4:6]
        assert (
            ds.class_names[sample.label]
            == dict(zip(KDEF.EXPRESSIONS, KDEF.CLASS_NAMES, strict=True))[code]
        )
        assert sample.relpath[1:4] not in held_out
    assert ds.load(0).shape == (4, 4, 3)


def test_kdef_errors(tmp_path):
    make_kdef(tmp_path, subjects=[1])
    write_image(tmp_path / "AF01" / "AF01XXS.JPG", 0)
    with pytest.raises(LayoutError, match=r"(?s)not named like KDEF: AF01/AF01XXS\.JPG.*Expected"):
        KDEF(root=tmp_path, split="train")
    (tmp_path / "AF01" / "AF01XXS.JPG").unlink()
    with pytest.raises(ValueError, match="angles"):
        KDEF(root=tmp_path, split="train", angles=("UP",))
    (tmp_path / "AF01ANS.JPG").write_bytes(jpeg_bytes(0))
    with pytest.raises(LayoutError, match="same KDEF image"):
        KDEF(root=tmp_path, split="train")


# --------------------------------------------------------------------------- folder, csv


def test_folder_with_splits(tmp_path):
    for split, n in (("train", 3), ("test", 1)):
        for c, name in enumerate(["sad", "happy"]):
            for i in range(n):
                write_image(tmp_path / split / name / f"{i}.png", 50 * c + i)
    (tmp_path / "train" / "happy" / "notes.txt").write_text("ignored")
    train = DATASETS.build("folder", root=tmp_path, split="train")
    assert train.class_names == ("happy", "sad")
    assert len(train) == 6 and train.samples[0].relpath == "train/happy/0.png"
    images, labels = train.load_all()
    assert images.shape == (6, 6, 8, 3)
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1])
    assert int(images[3, 0, 0, 0]) == 0 and int(images[0, 0, 0, 0]) == 50
    given = DATASETS.build("folder", root=tmp_path, split="test", class_names=("sad", "happy", "x"))
    assert [s.label for s in given.samples] == [0, 1]  # sad first, as given
    grey = DATASETS.build("folder", root=tmp_path, split="test", mode="L")
    assert grey.load(0).shape == (6, 8)
    assert len(type(train).source_files(tmp_path)) == 8
    with pytest.raises(LayoutError, match="no split folder val/"):
        DATASETS.build("folder", root=tmp_path, split="val")
    with pytest.raises(LayoutError, match=r"\['sad'\] are not in class_names"):
        DATASETS.build("folder", root=tmp_path, split="train", class_names=("happy",))


def test_folder_without_splits(tmp_path):
    write_image(tmp_path / "b" / "x.jpg", 10)
    write_image(tmp_path / "a" / "deep" / "y.jpg", 20)
    ds = DATASETS.build("folder", root=tmp_path, split="all")
    assert [(s.relpath, s.label) for s in ds.samples] == [("a/deep/y.jpg", 0), ("b/x.jpg", 1)]
    with pytest.raises(LayoutError, match=r"(?s)only split is 'all'.*Expected layout"):
        DATASETS.build("folder", root=tmp_path, split="train")


def test_csv_reader(tmp_path):
    write_image(tmp_path / "img" / "a.png", 1)
    write_image(tmp_path / "img" / "b.png", 2)
    write_image(tmp_path / "c.jpg", 3)
    (tmp_path / "labels.csv").write_text(
        "path,label,split\nimg/a.png,happy,train\nimg/b.png,sad,test\nc.jpg,happy,train\n"
    )
    train = DATASETS.build("csv", root=tmp_path, split="train")
    assert train.class_names == ("happy", "sad")
    assert [(s.relpath, s.label) for s in train.samples] == [("img/a.png", 0), ("c.jpg", 0)]
    assert train.load_all()[0].shape == (2, 6, 8, 3)
    assert type(train).source_files(tmp_path) == ["c.jpg", "img/a.png", "img/b.png"]
    other = tmp_path / "ints.csv"
    other.write_text("path,label\nimg/a.png,2\nimg/b.png,0\n")
    ds = DATASETS.build("csv", root=other, split="all")
    assert ds.root == tmp_path and ds.class_names == ("0", "1", "2")
    assert [s.label for s in ds.samples] == [2, 0]
    assert type(ds).label_files(other) == ["ints.csv"]
    named = DATASETS.build("csv", root=other, split="all", class_names=("x", "y", "z"))
    assert [s.label for s in named.samples] == [2, 0]


def test_csv_errors(tmp_path):
    write_image(tmp_path / "a.png", 1)
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("file,class\na.png,0\n")
    with pytest.raises(LayoutError, match=r"(?s)header.*Expected layout"):
        DATASETS.build("csv", root=tmp_path, split="all")
    csv_file.write_text("path,label\na.png,0\nmissing.png,1\n")
    with pytest.raises(LayoutError, match=r"labels\.csv line 3 names missing\.png"):
        DATASETS.build("csv", root=tmp_path, split="all")
    csv_file.write_text("path,label\n../a.png,0\n")
    with pytest.raises(LayoutError, match="must be relative"):
        DATASETS.build("csv", root=tmp_path, split="all")
    csv_file.write_text("path,label\na.png,5\n")
    with pytest.raises(LayoutError, match="label '5'"):
        DATASETS.build("csv", root=tmp_path, split="all", class_names=("x", "y"))
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        DATASETS.build("csv", root=tmp_path, split="dev")


# --------------------------------------------------------------------------- bad images


def test_bad_images_stop_or_are_skipped(tmp_path):
    for i in range(4):
        write_image(tmp_path / "happy" / f"{i}.png", 10 * i)
    good = (tmp_path / "happy" / "1.png").read_bytes()
    (tmp_path / "happy" / "1.png").write_bytes(good[: len(good) // 2])  # truncated PNG
    (tmp_path / "happy" / "2.jpg").write_text("not a picture")  # text named .jpg
    ds = DATASETS.build("folder", root=tmp_path, split="all")
    assert len(ds) == 5
    with pytest.raises(ImageError, match=r"happy/1\.png"):
        ds.load(1)
    with pytest.raises(ImageError, match=r"happy/1\.png"):
        ds.load_all()
    images, labels = ds.load_all(skip_bad=True)
    assert len(images) == len(labels) == 3
    assert [relpath for relpath, _ in ds.skipped] == ["happy/1.png", "happy/2.jpg"]
    assert "not a recognised image" in ds.skipped[1][1]
    parallel, _ = ds.load_all(skip_bad=True, workers=2)
    np.testing.assert_array_equal(parallel, images)
    assert len(ds.skipped) == 2
