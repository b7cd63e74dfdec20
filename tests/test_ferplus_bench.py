"""benchmarks/ferplus.py: a committed E_I checkpoint stands in for its run only when it was
trained with the recipe's config; committed results stand in for run folders that are gone."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from test_train_fixtures import one_thread  # noqa: F401 (autouse: one torch thread)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import ferplus

from lrdif.checkpoint import load_checkpoint
from lrdif.config import from_dict
from lrdif.data.toy import make_ferplus, toy_train_config
from lrdif.train.config import TrainConfig
from lrdif.train.loop import train


def test_adopt_run_takes_a_checkpoint_of_the_same_config_only(tmp_path: Path) -> None:
    data = make_ferplus(tmp_path / "ferplus", {"train": 16, "valid": 8, "test": 8}, size=24)
    settings = toy_train_config("resnet18", data, epochs=1)
    train(from_dict(TrainConfig, settings), tmp_path / "run")
    committed = tmp_path / "committed" / "encoder.safetensors"
    committed.parent.mkdir()
    committed.write_bytes((tmp_path / "run" / "best.safetensors").read_bytes())
    (committed.parent / "encoder.metrics.jsonl").write_text(
        (tmp_path / "run" / "metrics.jsonl").read_text())
    # another data root is the same recipe: the benchmark's data may live elsewhere
    moved = {**settings, "data": {**settings["data"], "root": str(tmp_path / "elsewhere")}}
    best = ferplus.adopt_run(committed, from_dict(TrainConfig, moved), tmp_path / "b" / "enc")
    assert best.read_bytes() == committed.read_bytes()
    assert (best.parent / "metrics.jsonl").read_text() == (tmp_path / "run" / "metrics.jsonl"
                                                           ).read_text()
    assert load_checkpoint(best).model_name == "resnet18"
    other = {**settings, "optim": {**settings["optim"], "lr": 1e-4}}
    with pytest.raises(SystemExit, match=r"optim\.lr"):
        ferplus.adopt_run(committed, from_dict(TrainConfig, other), tmp_path / "c" / "enc")
    assert not (tmp_path / "c").exists()


def test_landmark_row_needs_the_detector_caches_and_copies_them_to_each_run(
        tmp_path: Path) -> None:
    runs = [tmp_path / "udc_toled" / ferplus.DETECTED / stage for stage in ("lrdif_s1", "")]
    source = tmp_path / "landmarks" / "udc_toled"
    source.mkdir(parents=True)
    (source / "train.npz").write_bytes(b"train")
    with pytest.raises(SystemExit, match=r"landmarks/udc_toled: no landmark cache.*valid, test"):
        ferplus.seed_landmark_caches(tmp_path, "udc_toled", runs)
    for split in ("valid", "test"):
        (source / f"{split}.npz").write_bytes(split.encode())
    ferplus.seed_landmark_caches(tmp_path, "udc_toled", runs)
    for run in runs:
        assert [(run / "landmarks" / f"{s}.npz").read_bytes() for s in ("train", "valid", "test")
                ] == [b"train", b"valid", b"test"]


def _row(accuracy: float) -> dict:
    return {"accuracy": accuracy, "mean_class_accuracy": accuracy - 0.2, "macro_f1": 0.5}


def test_the_report_keeps_committed_rows_whose_run_folders_are_gone(tmp_path: Path) -> None:
    """A fresh machine has none of the earlier run folders: the summary committed in
    ferplus_detail.json is what a set continues from and what the report shows."""
    results, work = tmp_path / "results", tmp_path / "work"
    results.mkdir()
    committed = {"clean": {"methods": {"backbone": _row(0.8648), "lrdif_s2": _row(0.8671)},
                           "wall_s": 3600.0, "data_sha256": "abc",
                           "histories": {"backbone": [{"epoch": 1, "train_loss": 1.0,
                                                       "val_accuracy": 0.85}]},
                           "efficiency": {"lrdif_s1": {  # reported before curves were kept
                               "train_gflop_per_image": 0.44, "bf16": False,
                               "commit": "abc", "images_per_s": 100.0}}}}
    (results / "ferplus_detail.json").write_text(json.dumps(committed))
    summary = ferplus.load_summary(work, results, "clean")
    assert summary["methods"]["lrdif_s2"]["accuracy"] == 0.8671
    assert 3590 < time.time() - summary["started"] < 3700  # wall_s carries on
    assert ferplus.load_summary(work, results, "udc_toled") == {}

    ferplus.report(work, results, smoke=False)
    assert (results / "ferplus.json").read_text().count("86.71") == 1
    table = (results / "ferplus.md").read_text()
    assert "| backbone | 86.48 |" in table and "| clean/backbone | 1 | 85.00 |" in table
    assert "| clean/lrdif_s1 | - | - | 100.0 | 0.44 |" in table
    assert (results / "learning_curves.png").is_file()
    # a set with a summary in the work folder (runs in progress) is read from there
    (work / "clean").mkdir(parents=True)
    (work / "clean" / "summary.json").write_text('{"methods": {}}')
    assert ferplus.load_summary(work, results, "clean") == {"methods": {}}
