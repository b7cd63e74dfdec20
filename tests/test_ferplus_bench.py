"""benchmarks/ferplus.py: a committed E_I checkpoint stands in for its run only when it was
trained with the recipe's config."""

from __future__ import annotations

import sys
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
