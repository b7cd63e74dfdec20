"""Evaluation: figures, the Fig. 6 steps study, and the Table 5 ablation runner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_train_fixtures import one_thread  # noqa: F401 (autouse: one torch thread)

from lrdif.checkpoint import load_model, save_checkpoint
from lrdif.cli import main as cli
from lrdif.config import apply_overrides, from_dict, to_dict
from lrdif.data.toy import make_ferplus, toy_train_config
from lrdif.evaluate import plots, studies
from lrdif.evaluate.studies import (
    EPR_PROBES,
    ablation_variants,
    cached_summary,
    epr_diagnostics,
    evaluate_checkpoint,
    run_ablation,
    steps_curve,
    subsample,
    table5_markdown,
)
from lrdif.train.config import TrainConfig
from lrdif.train.loop import train


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_ferplus(tmp_path_factory.mktemp("fer") / "ferplus")


@pytest.fixture(scope="module")
def stage1(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("s1")
    train(from_dict(TrainConfig, toy_train_config("lrdif_s1", data, epochs=1)), out)
    return out / "best.safetensors"


def test_table5_variants_set_the_paper_components() -> None:
    variants = ablation_variants()
    assert list(variants) == ["S2-V1", "S2-V2", "S2-V3", "S2-V4"]
    base = to_dict(from_dict(TrainConfig, {"model": {"name": "lrdif_s2", "init_from": "x"}}))
    s2 = {name: from_dict(TrainConfig, apply_overrides(base, v["overrides"])).model.stage2
          for name, v in variants.items()}
    # (diffusion, loss, inserted noise) of Table 5's rows
    expected = {"S2-V1": (False, "ce", None), "S2-V2": (True, "ce", False),
                "S2-V3": (True, "total", True), "S2-V4": (True, "total", False)}
    for name, (diffusion, loss, noise) in expected.items():
        assert s2[name]["diffusion"]["use_diffusion"] is diffusion
        assert s2[name]["loss"] == loss
        assert s2[name]["diffusion"].get("insert_noise") is noise


def test_ablation_runner_trains_each_variant_from_one_stage1(
    stage1: Path, data: Path, tmp_path: Path
) -> None:
    cfg = toy_train_config("lrdif_s2", data, epochs=1)
    cfg["model"]["init_from"] = str(stage1)
    rows = run_ablation(from_dict(TrainConfig, cfg), tmp_path / "ablation",
                        variants=["S2-V1", "S2-V3"])
    assert [r["method"] for r in rows] == ["LRDif_S1", "LRDif_S2-V1", "LRDif_S2-V3"]
    assert all(r["test"]["num_samples"] == 16 for r in rows)
    v1 = load_model(tmp_path / "ablation" / "S2-V1" / "best.safetensors")
    v3 = load_model(tmp_path / "ablation" / "S2-V3" / "best.safetensors")
    assert v1.denoiser is None and v1.config.loss == "ce"
    assert v3.denoiser is not None and v3.config.diffusion.insert_noise
    # both started from the same stage 1: identical frozen teachers
    for key, value in v1.teacher.state_dict().items():
        assert torch.equal(value, v3.teacher.state_dict()[key])
    table = table5_markdown(rows)
    assert table.count("\n") == 4 and "LRDif_S2-V3" in table


def test_cached_summary_is_keyed_by_the_checkpoint_bytes_and_the_data(
    stage1: Path, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    section = from_dict(TrainConfig, toy_train_config("lrdif_s1", data)).data
    first = cached_summary(stage1, section, "test", device="cpu", cache_dir=tmp_path)
    assert first == evaluate_checkpoint(stage1, section, "test", device="cpu",
                                        cache_dir=tmp_path).summary
    calls = []
    real = studies.evaluate_checkpoint
    monkeypatch.setattr(studies, "evaluate_checkpoint",
                        lambda *a, **k: calls.append(a) or real(*a, **k))
    assert cached_summary(stage1, section, "test", device="cpu", cache_dir=tmp_path) == first
    assert calls == []  # remembered
    cached_summary(stage1, section, "valid", device="cpu", cache_dir=tmp_path)
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(stage1.read_bytes())
    cached_summary(copy, section, "test", device="cpu", cache_dir=tmp_path)
    assert len(calls) == 1  # another split is measured; the same bytes elsewhere are not
    save_checkpoint(copy, load_model(stage1), {"note": "other bytes"})
    cached_summary(copy, section, "test", device="cpu", cache_dir=tmp_path)
    assert len(calls) == 2


def test_steps_curve_restores_the_trained_steps(stage1: Path, data: Path, tmp_path: Path) -> None:
    cfg = toy_train_config("lrdif_s2", data, epochs=1)
    cfg["model"]["init_from"] = str(stage1)
    train(from_dict(TrainConfig, cfg), tmp_path / "s2")
    from lrdif.data.splits import DataSection
    from lrdif.evaluate.studies import evaluate_checkpoint

    ev = evaluate_checkpoint(tmp_path / "s2" / "best.safetensors",
                             DataSection(root=str(data)), "test", cache_dir=tmp_path)
    schedule = ev.model.inference_schedule
    rows = steps_curve(ev.model, ev.split, [1, 4, 16])
    assert [r["steps"] for r in rows] == [1, 4, 16]
    assert ev.model.inference_schedule.timesteps == schedule.timesteps == 4
    # with T = 4 (the trained chain) the curve reproduces the plain evaluation
    assert rows[1]["accuracy"] == ev.summary["accuracy"]
    # the EPR diagnostics' "predicted" probe is the plain evaluation too
    probes = epr_diagnostics(ev.model, ev.split, batch_size=7)
    assert set(probes) == set(EPR_PROBES)
    assert probes["predicted"]["accuracy"] == ev.summary["accuracy"]
    assert all(0.0 <= p["accuracy"] <= 1.0 for p in probes.values())
    with pytest.raises(ValueError, match="stage-2"):
        epr_diagnostics(load_model(stage1), ev.split)


def test_steps_on_a_model_without_diffusion_is_a_clear_error(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    train(from_dict(TrainConfig, toy_train_config("resnet18", data, epochs=1)), tmp_path / "r18")
    code = cli(["evaluate", str(tmp_path / "r18" / "best.safetensors"), "--data", str(data),
                "--steps", "1,2", "--out", str(tmp_path / "e")])
    assert code == 1
    assert "needs a stage-2 LRDif checkpoint with diffusion" in capsys.readouterr().err


def test_figures_are_written(tmp_path: Path) -> None:
    cm = np.array([[3, 1], [0, 4]])
    assert plots.plot_confusion_matrix(cm, ("a", "b"), tmp_path / "cm.png").stat().st_size > 0
    emb = np.random.default_rng(0).normal(size=(20, 2))
    labels = np.arange(20) % 2
    assert plots.plot_tsne(emb, labels, ("a", "b"), tmp_path / "t.png").stat().st_size > 0
    assert plots.plot_steps_curve([1, 2, 4], [0.5, 0.6, 0.6], tmp_path / "s.png",
                                  trained_steps=4).stat().st_size > 0
    history = [{"epoch": 1, "train_loss": 2.0, "val_accuracy": 0.4},
               {"epoch": 2, "train_loss": 1.5, "val_accuracy": 0.5}]
    assert plots.plot_learning_curves({"run": history}, tmp_path / "l.png").stat().st_size > 0
    assert plots.tsne_embedding(np.random.default_rng(0).normal(size=(30, 8))).shape == (30, 2)


def test_subsample_is_bounded_sorted_and_seeded() -> None:
    labels = np.arange(100) % 3
    pick = subsample(labels, 10)
    assert len(pick) == 10 and np.all(np.diff(pick) > 0)
    assert np.array_equal(pick, subsample(labels, 10))
    assert np.array_equal(subsample(labels, 200), np.arange(100))


def test_logit_adjustment_recalls_the_rare_class_chosen_on_valid() -> None:
    from lrdif.data.splits import SplitData
    from lrdif.evaluate.studies import Evaluation, logit_adjustment

    def evaluation(n_common: int, n_rare: int, seed: int) -> Evaluation:
        g = torch.Generator().manual_seed(seed)
        labels = torch.cat([torch.zeros(n_common), torch.ones(n_rare)]).long()
        # a model biased towards the common class: the rare one scores 0.4 lower
        logits = torch.randn(len(labels), 2, generator=g) * 0.5
        logits[torch.arange(len(labels)), labels] += 1.0
        logits[:, 1] -= 1.4
        split = SplitData(images=torch.zeros(len(labels), 1, 1, 1, dtype=torch.uint8),
                          labels=labels, landmarks=None, class_names=("common", "rare"))
        return Evaluation(summary={}, logits=logits, features=logits, split=split, model=None)

    prior = np.array([0.9, 0.1])
    out = logit_adjustment(evaluation(900, 100, 0), evaluation(900, 100, 1), prior,
                           max_accuracy_drop=0.02)
    curve = {r["tau"]: r for r in out["valid_curve"]}
    assert out["tau"] > 0
    assert curve[out["tau"]]["mean_class_accuracy"] > curve[0.0]["mean_class_accuracy"]
    assert curve[out["tau"]]["accuracy"] >= curve[0.0]["accuracy"] - 0.02
    assert out["test"]["per_class"]["rare"]["recall"] > 0.3
    # no room for accuracy to drop: only tau values that keep it are chosen
    strict = logit_adjustment(evaluation(900, 100, 0), evaluation(900, 100, 1), prior,
                              max_accuracy_drop=-1.0)
    assert strict["tau"] == 0.0


def test_paired_bootstrap_brackets_the_difference() -> None:
    from lrdif.data.splits import SplitData
    from lrdif.evaluate.studies import Evaluation, paired_bootstrap

    labels = torch.arange(400) % 2
    split = SplitData(images=torch.zeros(400, 1, 1, 1, dtype=torch.uint8), labels=labels,
                      landmarks=None, class_names=("a", "b"))

    def evaluation(correct: torch.Tensor) -> Evaluation:
        logits = torch.nn.functional.one_hot(torch.where(correct, labels, 1 - labels), 2)
        return Evaluation(summary={}, logits=logits.float(), features=logits.float(),
                          split=split, model=None)

    better = evaluation(torch.arange(400) % 10 != 0)  # 90% right
    worse = evaluation(torch.arange(400) % 5 != 0)  # 80% right, wrong where better is
    out = paired_bootstrap(better, worse, samples=500)
    assert out["difference"] == pytest.approx(0.1)
    assert out["low"] < 0.1 < out["high"] and out["low"] > 0
    same = paired_bootstrap(better, better, samples=50)
    assert same["difference"] == same["low"] == same["high"] == 0.0


def test_epr_diagnostics_decode_as_the_model_does_with_e_i_token_and_head(
    data: Path, tmp_path: Path
) -> None:
    from lrdif.data.splits import DataSection
    from lrdif.evaluate.studies import evaluate_checkpoint

    s1 = toy_train_config("lrdif_s1", data, epochs=1)
    s1["model"]["options"] = {**s1["model"]["options"], "image_token": True,
                              "image_head": True}
    train(from_dict(TrainConfig, s1), tmp_path / "s1")
    s2 = toy_train_config("lrdif_s2", data, epochs=1)
    s2["model"]["init_from"] = str(tmp_path / "s1" / "best.safetensors")
    train(from_dict(TrainConfig, s2), tmp_path / "s2")
    ev = evaluate_checkpoint(tmp_path / "s2" / "best.safetensors",
                             DataSection(root=str(data)), "test", cache_dir=tmp_path)
    assert ev.model.config.image_token and ev.model.image_head is not None
    probes = epr_diagnostics(ev.model, ev.split, batch_size=7)
    assert probes["predicted"]["accuracy"] == ev.summary["accuracy"]
