"""`lrdif synthesize` end to end on small data sets the tests build in their native layouts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lrdif.cli import main as cli_main
from lrdif.data.base import LayoutError
from lrdif.data.images import ImageError, read_image
from lrdif.registry import DATASETS
from lrdif.udc import synthesize as synth
from lrdif.udc.degrade import UDCConfig, UDCSimulator
from lrdif.udc.optics import Optics
from lrdif.udc.synthesize import INFO_DIR, SynthesizeError, synthesize

SMALL = Optics(grid=1024, oversample=3)
CONFIG = UDCConfig(optics=SMALL)
FERPLUS_SPLITS = {"FER2013Train": 9, "FER2013Valid": 3, "FER2013Test": 3}


def face(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    coarse = rng.random((6, 6, *shape[2:]))
    up = np.kron(coarse, np.ones((shape[0] // 6 + 1, shape[1] // 6 + 1) + (1,) * (len(shape) - 2)))
    return (255 * up[: shape[0], : shape[1]]).astype(np.uint8)


def make_ferplus(root: Path, seed: int = 0) -> Path:
    """FERPlus layout: FER2013*/label.csv (name, box, 10 votes) + 48x48 grey PNGs."""
    rng = np.random.default_rng(seed)
    number = 0
    for folder, count in FERPLUS_SPLITS.items():
        (root / folder).mkdir(parents=True)
        rows = []
        for _ in range(count):
            name = f"fer{number:07d}.png"
            number += 1
            Image.fromarray(face(rng, (48, 48))).save(root / folder / name)
            votes = [0] * 10
            votes[int(rng.integers(0, 8))] = 10
            rows.append([name, "(0, 0, 48, 48)", *votes])
        with open(root / folder / "label.csv", "w", newline="") as handle:
            csv.writer(handle).writerows(rows)
    (root / "fer2013new.csv").write_text("Usage,Image name\n")
    return root


def make_folder(root: Path, seed: int = 1) -> Path:
    """Class-per-folder layout with RGB JPEGs (40x30) and a grey PNG, plus a notes file."""
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for label in ("happy", "sad"):
            (root / split / label).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(face(rng, (30, 40, 3))).save(
                    root / split / label / f"{i}.jpg", quality=80
                )
            Image.fromarray(face(rng, (30, 40))).save(root / split / label / "g.png")
    (root / "README.txt").write_text("my data set\n")
    return root


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def run(src: Path, dst: Path, dataset: str = "ferplus", **kwargs) -> synth.Synthesis:
    kwargs.setdefault("progress", False)
    return synthesize(dataset, src, dst, kwargs.pop("config", CONFIG), **kwargs)


def test_writes_the_same_layout_and_the_reader_reads_it(tmp_path: Path) -> None:
    src = make_ferplus(tmp_path / "ferplus")
    dst = tmp_path / "udc"
    result = run(src, dst)
    manifest = json.loads((dst / INFO_DIR / "manifest.json").read_text())
    assert manifest["complete"] and manifest == result.manifest
    assert manifest["counts"] == {
        "listed": 15,
        "udc_images": 15,
        "bad": 0,
        "copied_files": 4,
        "unlisted_images_not_copied": 0,
    }
    assert manifest["settings"]["simulator"]["severity"] == 0.5
    assert set(manifest["settings"]["psf_sha256"]) == {"R", "G", "B"}
    assert manifest["settings"]["versions"]["lrdif"]
    assert manifest["image_sizes"] == {"48x48": 15}
    for name in ("psf.png", "preview.png"):
        assert read_image(dst / INFO_DIR / name).shape[2] == 3
    for folder in FERPLUS_SPLITS:  # label files are copied byte for byte
        assert (dst / folder / "label.csv").read_bytes() == (
            src / folder / "label.csv"
        ).read_bytes()
    assert (dst / "fer2013new.csv").read_bytes() == (src / "fer2013new.csv").read_bytes()
    clean = DATASETS.build("ferplus", root=src, split="train")
    udc = DATASETS.build("ferplus", root=dst, split="train")
    assert [s.relpath for s in udc.samples] == [s.relpath for s in clean.samples]
    for i in range(len(clean)):
        a, b = clean.load(i), udc.load(i)
        assert a.shape == b.shape == (48, 48) and b.dtype == np.uint8
        assert np.abs(a.astype(int) - b.astype(int)).mean() > 2  # degraded, not copied
    # the written images are exactly what the simulator makes for these paths
    relpath = clean.samples[0].relpath
    expected = UDCSimulator(CONFIG).degrade(clean.load(0)[None], [relpath])[0]
    np.testing.assert_array_equal(read_image(dst / relpath), expected)


def test_formats_modes_and_other_files_are_kept(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "faces")
    dst = tmp_path / "udc"
    manifest = run(src, dst, dataset="folder").manifest
    assert manifest["counts"]["udc_images"] == 12 and manifest["counts"]["copied_files"] == 1
    assert (dst / "README.txt").read_text() == "my data set\n"
    for relpath in DATASETS.get("folder").source_files(src):
        with Image.open(src / relpath) as a, Image.open(dst / relpath) as b:
            assert (a.format, a.mode, a.size) == (b.format, b.mode, b.size)
            if a.format == "JPEG":
                assert a.quantization == b.quantization  # same compression as the source


def test_same_output_whatever_the_workers_and_batch_size(tmp_path: Path) -> None:
    src = make_ferplus(tmp_path / "ferplus")
    run(src, tmp_path / "one", workers=1, batch_size=256)
    run(src, tmp_path / "two", workers=2, batch_size=4)
    assert tree(tmp_path / "one") == tree(tmp_path / "two")


def test_an_interrupted_run_resumes_to_the_same_result(tmp_path: Path, monkeypatch) -> None:
    src = make_ferplus(tmp_path / "ferplus")
    run(src, tmp_path / "whole")
    calls = {"n": 0}
    degrade = UDCSimulator.degrade

    def interrupt_on_third_batch(self, images, keys):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return degrade(self, images, keys)

    monkeypatch.setattr(UDCSimulator, "degrade", interrupt_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        run(src, tmp_path / "resumed", batch_size=4)
    monkeypatch.setattr(UDCSimulator, "degrade", degrade)
    partial = tree(tmp_path / "resumed")
    assert not json.loads(partial[f"{INFO_DIR}/manifest.json"])["complete"]
    written = [k for k in partial if k.startswith("FER2013") and k.endswith(".png")]
    assert len(written) == 8  # two batches of 4 made it
    assert not any(".tmp" in k for k in partial)  # atomic writes left no debris
    # a damaged output (e.g. from a copy tool) is redone, not trusted
    (tmp_path / "resumed" / written[0]).write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = run(src, tmp_path / "resumed", batch_size=4)
    assert result.already_present == 7 and result.written == 8
    assert tree(tmp_path / "resumed") == tree(tmp_path / "whole")


def test_other_parameters_and_foreign_destinations_are_refused(tmp_path: Path) -> None:
    src = make_ferplus(tmp_path / "ferplus")
    dst = tmp_path / "udc"
    run(src, dst)
    before = tree(dst)
    with pytest.raises(SynthesizeError, match=r"other parameters .*severity"):
        run(src, dst, config=UDCConfig(optics=SMALL, severity=0.8))
    with pytest.raises(SynthesizeError, match=r"other parameters .*poled"):
        run(src, dst, config=UDCConfig(optics=SMALL, display="poled"))
    assert tree(dst) == before  # nothing was mixed in
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("x")
    with pytest.raises(SynthesizeError, match="not empty"):
        run(src, foreign)
    with pytest.raises(SynthesizeError, match="must not contain each other"):
        run(src, src / "udc")


def test_bad_images_stop_the_run_or_are_skipped_and_counted(tmp_path: Path) -> None:
    src = make_ferplus(tmp_path / "ferplus")
    truncated = src / "FER2013Train" / "fer0000001.png"
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.raises(ImageError, match=r"fer0000001\.png"):
        run(src, tmp_path / "stop")
    manifest = run(src, tmp_path / "skip", skip_bad=True).manifest
    assert manifest["counts"]["bad"] == 1 and manifest["counts"]["udc_images"] == 14
    assert manifest["bad_files"][0]["path"] == "FER2013Train/fer0000001.png"
    assert not (tmp_path / "skip" / "FER2013Train" / "fer0000001.png").exists()

    faces = make_folder(tmp_path / "faces")
    (faces / "train" / "sad" / "notes.jpg").write_text("not a picture")
    with pytest.raises(ImageError, match=r"notes\.jpg"):
        run(faces, tmp_path / "text", dataset="folder")


def test_missing_images_and_wrong_layouts_are_clear(tmp_path: Path) -> None:
    src = make_ferplus(tmp_path / "ferplus")
    (src / "FER2013Valid" / "fer0000010.png").unlink()
    with pytest.raises(LayoutError, match=r"label\.csv line 2 names .*fer0000010\.png"):
        run(src, tmp_path / "a")
    folder = make_folder(tmp_path / "faces")
    with pytest.raises(LayoutError, match="FER2013Train"):
        run(folder, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_command_line(tmp_path: Path, capsys) -> None:
    src = make_ferplus(tmp_path / "ferplus")
    dst = tmp_path / "udc"
    args = ["synthesize", "--dataset", "ferplus", "--src", str(src), "--dst", str(dst)]
    assert cli_main([*args, "--seed", "3", "--severity", "0.25", "--no-progress"]) == 0
    assert "15 UDC images (15 written now" in capsys.readouterr().out
    manifest = json.loads((dst / INFO_DIR / "manifest.json").read_text())
    assert manifest["settings"]["simulator"]["seed"] == 3
    assert manifest["settings"]["physics"]["snr_db_white"] == 36.0
    assert cli_main([*args, "--seed", "3", "--severity", "0.25", "--no-progress"]) == 0
    assert "0 written now, 15 already there" in capsys.readouterr().out
    assert cli_main([*args, "--severity", "0.9", "--no-progress"]) == 2
    assert "other parameters" in capsys.readouterr().err
    (src / "FER2013Test" / "label.csv").unlink()
    assert cli_main([*args[:-1], str(tmp_path / "new"), "--no-progress"]) == 2
    assert "label.csv" in capsys.readouterr().err
