"""benchmarks/paired_validation.py: McNemar's z and the per-set counts of two checkpoints."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
from test_train_fixtures import one_thread  # noqa: F401 (autouse: one torch thread)

from lrdif.config import from_dict
from lrdif.data.toy import make_ferplus, toy_train_config
from lrdif.train.config import TrainConfig
from lrdif.train.loop import train

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench():
    spec = importlib.util.spec_from_file_location(
        "paired_validation", BENCHMARKS / "paired_validation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mcnemar_z_is_signed_towards_the_better_model(bench) -> None:
    assert bench.mcnemar_z(0, 0) == 0.0
    assert bench.mcnemar_z(10, 30) == pytest.approx(20 / math.sqrt(40))
    assert bench.mcnemar_z(30, 10) == -bench.mcnemar_z(10, 30)


def test_counts_agree_with_each_model_and_with_themselves(bench, tmp_path, monkeypatch,
                                                          capsys) -> None:
    data = make_ferplus(tmp_path / "ferplus", {"train": 16, "valid": 12})
    ckpts = []
    for seed in (0, 1):
        train(from_dict(TrainConfig, toy_train_config("resnet18", data, epochs=1, seed=seed)),
              tmp_path / f"r{seed}")
        ckpts.append(str(tmp_path / f"r{seed}" / "best.safetensors"))
    capsys.readouterr()  # training's own output
    monkeypatch.setattr(sys, "argv", ["paired_validation.py", *ckpts, str(data), str(data),
                                      "--threads", "1"])
    bench.main()
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [str(data), str(data), "pooled"]
    faces, *rest = lines[-1].split(": ", 1)[1].split(", ")
    assert faces == "24 faces"  # two sets of 12 pooled
    fields = dict(part.rsplit(" ", 1) for part in rest)
    only_a, only_b = int(fields["only A"]), int(fields["only B"])
    # accuracy difference = (only B - only A) / faces: the counts are paired, not independent
    diff = float(fields["B"]) - float(fields["A"])
    assert diff == pytest.approx(100 * (only_b - only_a) / 24, abs=0.01)
    assert float(fields["McNemar z"]) == pytest.approx(bench.mcnemar_z(only_a, only_b), abs=0.01)
    assert only_a + only_b > 0  # two seeds: the test would not see a swapped count otherwise

    # a checkpoint against itself: no disagreement, and the ensemble is the model
    monkeypatch.setattr(sys, "argv", ["paired_validation.py", ckpts[0], ckpts[0], str(data)])
    bench.main()
    _, *rest = capsys.readouterr().out.strip().split(": ", 1)[1].split(", ")
    same = dict(part.rsplit(" ", 1) for part in rest)
    assert same["A"] == same["B"] == same["A+B"] == fields["A"]
    assert (same["only A"], same["only B"], same["McNemar z"]) == ("0", "0", "+0.00")
