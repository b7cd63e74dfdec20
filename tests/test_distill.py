"""Distillation from a clean-view teacher (lrdif.train.distill): each face of a mixed
clean + UDC set is taught by what the teacher sees on its clean view."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from test_train_fixtures import one_thread  # noqa: F401 (autouse)

from lrdif.checkpoint import load_checkpoint
from lrdif.config import ConfigError, from_dict
from lrdif.data.ferplus import FERPlus
from lrdif.data.splits import DataSection, read_split, to_split_data
from lrdif.data.toy import make_ferplus, toy_train_config
from lrdif.io import file_sha256
from lrdif.train import distributed
from lrdif.train.config import DistillSection, TrainConfig, load_train_config
from lrdif.train.distill import clean_view_index, distilled_targets
from lrdif.train.loop import load_splits, train


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A clean toy FERPlus and a 'UDC' version of it: the same files, grey levels inverted
    (so a teacher reads the two views differently)."""
    base = tmp_path_factory.mktemp("distill")
    clean = make_ferplus(base / "clean", {"train": 16, "valid": 8, "test": 8}, seed=0)
    udc = base / "udc"
    shutil.copytree(clean, udc)
    for png in (udc / FERPlus.folders["train"]).glob("*.png"):
        cv2.imwrite(str(png), 255 - cv2.imread(str(png), cv2.IMREAD_GRAYSCALE))
    return clean, udc


@pytest.fixture(scope="module")
def teacher(roots: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher")
    train(from_dict(TrainConfig, toy_train_config("resnet18", roots[0], epochs=1)), out)
    return out / "best.safetensors"


def _mixed(roots: tuple[Path, Path]) -> DataSection:
    return DataSection(dataset="mixed", root=str(roots[0]),
                       options={"roots": [str(roots[1])], "label_mode": "majority"})


def test_the_clean_view_of_a_udc_face_is_the_first_roots_image_of_its_path(
    roots: tuple[Path, Path], tmp_path: Path,
) -> None:
    n = len(read_split(DataSection(root=str(roots[0])), "train")[1])
    views = clean_view_index(_mixed(roots), "train")
    np.testing.assert_array_equal(views, np.concatenate([np.arange(n), np.arange(n)]))
    np.testing.assert_array_equal(clean_view_index(_mixed(roots), "train", limit=5),
                                  np.arange(5))
    np.testing.assert_array_equal(clean_view_index(DataSection(root=str(roots[1])), "train"),
                                  np.arange(n))
    stranger = make_ferplus(tmp_path / "stranger", {"train": n + 2, "valid": 8, "test": 8})
    with pytest.raises(ValueError, match=rf"fer{n:07d}\.png has no image of the same path"):
        clean_view_index(DataSection(dataset="mixed", root=str(roots[0]),
                                     options={"roots": [str(stranger)]}), "train")


def test_targets_mix_the_label_with_the_teachers_reading_of_the_clean_view(
    roots: tuple[Path, Path], teacher: Path, tmp_path: Path,
) -> None:
    w = 0.7
    config = from_dict(TrainConfig, toy_train_config(
        "resnet18", roots[0], data=vars(_mixed(roots)),
        distill={"teacher": str(teacher), "weight": w}))
    ctx = distributed.DistContext(rank=0, world_size=1, local_rank=0,
                                  device=torch.device("cpu"))
    train_split, _ = load_splits(config, tmp_path, ctx)
    targets, n = train_split.targets, len(train_split) // 2
    assert targets is not None and targets.shape == (2 * n, 8)
    torch.testing.assert_close(targets.sum(1), torch.ones(2 * n))
    # every face is taught by its clean view: the inverted copies get the clean rows' targets
    torch.testing.assert_close(targets[n:], targets[:n])
    teacher_part = (targets - (1 - w) * torch.nn.functional.one_hot(train_split.labels, 8)) / w
    assert (teacher_part >= -1e-6).all() and (teacher_part.max(1).values < 1 - 1e-4).all()
    # reading the inverted images themselves would teach something else
    same = replace(train_split, targets=None)
    plain = distilled_targets(DistillSection(str(teacher), w), same, np.arange(2 * n),
                              batch_size=8)
    assert not torch.allclose(plain[n:], targets[n:])


def test_an_ensemble_teacher_teaches_the_mean_of_its_members(
    roots: tuple[Path, Path], teacher: Path, tmp_path: Path,
) -> None:
    other = tmp_path / "other"
    train(from_dict(TrainConfig, toy_train_config("resnet18", roots[0], epochs=1, seed=1)),
          other)
    images, labels, classes = read_split(DataSection(root=str(roots[0])), "train")
    split = to_split_data(images, labels, classes, classes, landmarks=None,
                          device=torch.device("cpu"), where="toy")
    views, w = np.arange(len(split)), 0.8
    members = [str(teacher), str(other / "best.safetensors")]
    one, two = (distilled_targets(DistillSection(m, w), split, views, batch_size=8)
                for m in members)
    assert not torch.allclose(one, two)
    both = distilled_targets(DistillSection(members, w), split, views, batch_size=8)
    torch.testing.assert_close(both, (one + two) / 2)
    # a list in a config or an override reads as the ensemble, recorded member by member
    config = from_dict(TrainConfig, toy_train_config(
        "resnet18", roots[0], epochs=1, distill={"teacher": members, "weight": w}))
    assert config.distill.teacher_paths() == members
    train(config, tmp_path / "run")
    meta = load_checkpoint(tmp_path / "run" / "best.safetensors").meta
    assert meta["distill_teacher_sha256"] == [file_sha256(m) for m in members]


def test_a_teacher_of_other_classes_or_a_stage_1_is_refused(
    roots: tuple[Path, Path], teacher: Path, tmp_path: Path,
) -> None:
    images, labels, classes = read_split(DataSection(root=str(roots[0])), "train")
    split = to_split_data(images, labels, classes, tuple(reversed(classes)), landmarks=None,
                          device=torch.device("cpu"), where="toy")
    with pytest.raises(ConfigError, match=r"teacher = .* classifies"):
        distilled_targets(DistillSection(str(teacher)), split, np.arange(len(split)),
                          batch_size=8)
    out = tmp_path / "s1"
    train(from_dict(TrainConfig, toy_train_config("lrdif_s1", roots[0], epochs=1)), out)
    split = replace(split, class_names=classes)
    with pytest.raises(ConfigError, match="needs the label"):
        distilled_targets(DistillSection(str(out / "best.safetensors")), split,
                          np.arange(len(split)), batch_size=8)
    with pytest.raises(ConfigError, match=r"distill.weight must be in \(0, 1\]"):
        from_dict(TrainConfig, toy_train_config("resnet18", roots[0],
                                                distill={"teacher": "x", "weight": 0}))


def test_a_distilled_run_trains_and_records_its_teacher(
    roots: tuple[Path, Path], teacher: Path, tmp_path: Path,
) -> None:
    config = from_dict(TrainConfig, toy_train_config(
        "resnet18", roots[0], epochs=1, data=vars(_mixed(roots)),
        distill={"teacher": str(teacher), "weight": 0.5}))
    train(config, tmp_path / "run")
    meta = load_checkpoint(tmp_path / "run" / "best.safetensors").meta
    assert meta["train_config"]["distill"] == {"teacher": str(teacher), "weight": 0.5}
    assert meta["distill_teacher_sha256"] == file_sha256(teacher)


def test_the_shipped_recipe_names_a_committed_image_only_teacher() -> None:
    repo = Path(__file__).resolve().parents[1]
    teacher = load_train_config("ship_backbone").distill.teacher
    assert teacher is not None
    ckpt = load_checkpoint(repo / teacher)
    assert ckpt.model_name == "backbone" and len(ckpt.class_names) == 8
    for stage in ("ship_s1", "ship_s2", "ship_fast"):
        assert load_train_config(stage).distill.teacher == teacher
