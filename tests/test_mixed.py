"""The ``mixed`` data set: several roots of one reader, concatenated split by split, and a
training run that trains and validates on the mix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_train_fixtures import make_folder_dataset, one_thread  # noqa: F401 (autouse)

import lrdif.data  # noqa: F401  (registers the readers)
from lrdif.config import from_dict
from lrdif.data.splits import DataSection, read_split
from lrdif.data.toy import make_ferplus, toy_train_config
from lrdif.registry import DATASETS
from lrdif.train.config import TrainConfig
from lrdif.train.loop import train
from lrdif.udc.synthesize import INFO_DIR, MANIFEST


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    base = tmp_path_factory.mktemp("mixed")
    clean = make_ferplus(base / "clean", {"train": 16, "valid": 8, "test": 8}, seed=0)
    toled = make_ferplus(base / "toled", {"train": 12, "valid": 4, "test": 4}, seed=1)
    (toled / INFO_DIR).mkdir()
    (toled / INFO_DIR / MANIFEST).write_text(json.dumps({"settings": {"display": "toled"}}))
    return [clean, toled]


def _section(roots: list[Path], **options) -> DataSection:
    return DataSection(dataset="mixed", root=str(roots[0]),
                       options={"roots": [str(r) for r in roots[1:]], **options})


def test_each_split_is_the_concatenation_of_the_roots(roots: list[Path]) -> None:
    for split in ("train", "valid", "test"):
        parts = [read_split(DataSection(root=str(r)), split) for r in roots]
        images, labels, classes = read_split(_section(roots, label_mode="majority"), split)
        assert classes == parts[0][2]
        np.testing.assert_array_equal(images, np.concatenate([p[0] for p in parts]))
        np.testing.assert_array_equal(labels, np.concatenate([p[1] for p in parts]))
    mixed = DATASETS.build("mixed", root=roots[0], split="valid", roots=[roots[1]])
    assert mixed.counts() == {str(roots[0]): 8, str(roots[1]): 4}
    assert mixed.label_distribution().shape == (12, 8)  # FERPlus votes, carried along


def test_mixed_errors_name_the_problem(roots: list[Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="non-empty list"):
        DATASETS.build("mixed", root=roots[0], split="train", roots=[])
    with pytest.raises(ValueError, match="named twice"):
        DATASETS.build("mixed", root=roots[0], split="train", roots=[roots[0]])
    with pytest.raises(ValueError, match="do not fit reader 'ferplus'"):
        DATASETS.build("mixed", root=roots[0], split="train", roots=[roots[1]], colour=True)
    with pytest.raises(KeyError, match="unknown data set 'nope'"):
        DATASETS.build("mixed", root=roots[0], split="train", roots=[roots[1]], reader="nope")
    with pytest.raises(ValueError, match=r"unknown split 'val'"):
        DATASETS.build("mixed", root=roots[0], split="val", roots=[roots[1]])
    a = make_folder_dataset(tmp_path / "a", ("happy", "sad"))
    b = make_folder_dataset(tmp_path / "b", ("angry", "happy"))
    with pytest.raises(ValueError, match=f"{b}.*share one class list"):
        DATASETS.build("mixed", root=a, split="test", roots=[b], reader="folder")
    with pytest.raises(ValueError, match=f"{tmp_path / 'absent'}: no folder FER2013Train"):
        DATASETS.build("mixed", root=roots[0], split="train", roots=[tmp_path / "absent"])


def test_training_runs_and_selects_on_the_mix(roots: list[Path], tmp_path: Path) -> None:
    config = toy_train_config("resnet18", roots[0], epochs=1)
    config["data"] = {"dataset": "mixed", "root": str(roots[0]),
                      "options": {"reader": "ferplus", "roots": [str(roots[1])],
                                  "label_mode": "majority"}}
    result = train(from_dict(TrainConfig, config), tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert meta["epoch"] == 1
    from lrdif.checkpoint import load_checkpoint

    ckpt_meta = load_checkpoint(tmp_path / "run" / "best.safetensors").meta
    assert ckpt_meta["dataset"]["num_train"] == 28 and ckpt_meta["dataset"]["num_val"] == 12
    assert ckpt_meta["udc_manifests"] == {
        str(roots[0]): None, str(roots[1]): {"settings": {"display": "toled"}}}
    assert result.history
