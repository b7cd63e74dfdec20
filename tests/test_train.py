"""Training: tiny end-to-end runs of stage 1, stage 2 and the baseline; bad input."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch
from test_train_fixtures import (
    one_thread,  # noqa: F401 (autouse: one torch thread)
    write_config,
)

from lrdif.checkpoint import load_checkpoint, load_model, save_checkpoint
from lrdif.cli import main as cli
from lrdif.config import ConfigError, from_dict
from lrdif.data.toy import make_ferplus, toy_train_config
from lrdif.models.baselines import ResNet18, ResNet18Config
from lrdif.train import loop
from lrdif.train.config import TrainConfig, load_train_config
from lrdif.train.loop import TrainingDiverged, lr_at, train
from lrdif.udc.synthesize import INFO_DIR, MANIFEST

UDC_MANIFEST = {"settings": {"display": "toled", "seed": 0}, "psf_sha256": ["ab12"]}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_ferplus(tmp_path_factory.mktemp("fer") / "ferplus")
    # as `lrdif synthesize` leaves it in a UDC data set's root
    (root / INFO_DIR).mkdir()
    (root / INFO_DIR / MANIFEST).write_text(json.dumps(UDC_MANIFEST))
    return root


@pytest.fixture(scope="module")
def stage1(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("s1")
    train(from_dict(TrainConfig, toy_train_config("lrdif_s1", data, epochs=3)), out)
    return out


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_stage1_writes_checkpoints_metrics_and_selects_on_validation(stage1: Path) -> None:
    rows = read_metrics(stage1)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    best = load_checkpoint(stage1 / "best.safetensors")
    last = load_checkpoint(stage1 / "last.safetensors")
    assert best.model_name == last.model_name == "lrdif_s1"
    assert last.meta["epoch"] == 3
    # best = the first epoch with the highest validation accuracy
    top = max(r["val_accuracy"] for r in rows)
    assert best.meta["epoch"] == next(r["epoch"] for r in rows if r["val_accuracy"] == top)
    meta = best.meta
    assert meta["train_config"]["model"]["name"] == "lrdif_s1"
    assert meta["dataset"]["num_train"] == 48 and meta["dataset"]["val_split"] == "valid"
    assert "FER2013Test" not in json.dumps(meta)  # the test split is never read
    assert set(meta) >= {"git_commit", "metrics", "val_summary"}
    assert meta["udc_manifest"] == UDC_MANIFEST
    assert best.class_names[:4] == ("neutral", "happiness", "surprise", "sadness")


def test_stage2_from_stage1_then_evaluate(stage1: Path, data: Path, tmp_path: Path) -> None:
    cfg = toy_train_config("lrdif_s2", data, epochs=2)
    cfg["model"].update(init_from=str(stage1 / "best.safetensors"),
                        stage2={"diffusion": {"timesteps": 4}, "loss": "total",
                                "kl_temperature": 0.15})
    config_path = write_config(tmp_path / "s2.yaml", cfg)
    run = tmp_path / "s2"
    assert cli(["train", str(config_path), "epochs=2", "--out", str(run)]) == 0
    rows = read_metrics(run)
    assert len(rows) == 2 and all(r["train_kl"] >= 0 for r in rows)
    model = load_model(run / "best.safetensors")
    assert model.registry_name == "lrdif_s2" and model.config.kl_temperature == 0.15
    # the teacher is stage 1's FPEN_S1, frozen: identical weights after training
    s1 = load_model(stage1 / "best.safetensors")
    for name, value in s1.fpen_s1.state_dict().items():
        assert torch.equal(model.teacher.state_dict()[name], value), name

    report_path = tmp_path / "eval.json"
    code = cli(["evaluate", str(run / "best.safetensors"), "--dataset", "ferplus", "--data",
                str(data), "--split", "test", "--json", str(report_path), "--steps", "1,2,4",
                "--tsne", "--out", str(tmp_path / "eval")])
    assert code == 0
    report = json.loads(report_path.read_text())
    assert report["num_samples"] == 16 and 0.0 <= report["accuracy"] <= 1.0
    assert [r["steps"] for r in report["steps"]] == [1, 2, 4]
    for figure in ("confusion_matrix", "tsne", "steps"):
        assert Path(report["figures"][figure]).stat().st_size > 1000
    assert sum(map(sum, report["confusion_matrix"])) == 16


def test_loss_goes_down_for_the_baseline(data: Path, tmp_path: Path) -> None:
    config = from_dict(TrainConfig, toy_train_config("resnet18", data, epochs=10,
                                                optim={"lr": 1e-2}))
    result = train(config, tmp_path / "r18")
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < 0.7 * losses[0], losses
    assert result.best_val_accuracy >= 0.5, result.history  # 4 balanced classes: chance 0.25


def test_bf16_on_a_cpu_without_native_bf16_warns(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loop, "cpu_has_fast_bf16", lambda: False)
    config = from_dict(TrainConfig, toy_train_config("resnet18", data, epochs=1, bf16=True))
    with pytest.warns(UserWarning, match="bf16=true on a CPU without native bf16"):
        train(config, tmp_path / "bf16")
    monkeypatch.setattr(loop, "cpu_has_fast_bf16", lambda: True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(config, tmp_path / "fast")
    assert not [w for w in caught if "native bf16" in str(w.message)]


def test_lr_schedules() -> None:
    cfg = from_dict(TrainConfig, {"epochs": 10, "optim": {"lr": 1.0, "warmup_epochs": 1}})
    assert lr_at(cfg, 0, 10) == pytest.approx(0.1)  # warm-up: (step + 1) / 10
    assert lr_at(cfg, 9, 10) == pytest.approx(1.0)
    assert lr_at(cfg, 55, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 4.5 / 9)))
    step = from_dict(TrainConfig, {"optim": {"lr": 1.0, "schedule": "step", "step_epochs": 2,
                                             "step_gamma": 0.5}})
    assert [lr_at(step, s, 10) for s in (0, 19, 20, 45)] == [1.0, 1.0, 0.5, 0.25]


def test_class_balance_draws_classes_by_count_to_the_minus_q() -> None:
    """epoch_order: a permutation by default; class_balance q draws N images with
    replacement, class c with total probability proportional to n_c^(1-q); seeded by
    (seed, epoch)."""
    labels = torch.tensor([0] * 9000 + [1] * 900 + [2] * 100)
    plain = from_dict(TrainConfig, {})
    assert torch.equal(loop.epoch_order(plain, 0, labels).sort().values, torch.arange(10000))
    for q in (1.0, 0.5):
        config = from_dict(TrainConfig, {"class_balance": q})
        order = loop.epoch_order(config, 3, labels)
        assert torch.equal(order, loop.epoch_order(config, 3, labels))
        assert not torch.equal(order, loop.epoch_order(config, 4, labels))
        share = torch.bincount(labels[order], minlength=3).double() / len(order)
        expected = torch.tensor([9000.0, 900.0, 100.0], dtype=torch.float64) ** (1 - q)
        assert torch.allclose(share, expected / expected.sum(), atol=0.02)
    with pytest.raises(ConfigError, match="class_balance"):
        from_dict(TrainConfig, {"class_balance": 1.5})


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data: Path, tmp_path: Path) -> None:
    # epoch 1 at a sane rate; from epoch 2 the rate is 1e30, which blows the weights up
    cfg = toy_train_config("resnet18", data, epochs=3,
                      optim={"schedule": "step", "step_epochs": 1, "step_gamma": 1e30})
    run = tmp_path / "nan"
    with pytest.raises(TrainingDiverged, match=r"NaN or inf.*last good checkpoint"):
        train(from_dict(TrainConfig, cfg), run)
    assert load_checkpoint(run / "last.safetensors").meta["epoch"] == 1
    assert len(read_metrics(run)) == 1


def test_packaged_configs_load() -> None:
    from lrdif.config import packaged_config_names

    names = packaged_config_names()
    assert {"paper_s1", "paper_s2", "cpu_s1", "cpu_s2", "cpu_resnet18"} <= set(names)
    for name in names:
        config = load_train_config(name)
        assert config.batch_size == 64 and config.seed == 0
        # Adam with L2 decay 1e-4 (paper Sec. 4.2), or the pretrained-encoder recipe's AdamW.
        decay = ((0.05, True) if name.startswith(("pretrained", "ship", "light96"))
                 else (1e-4, False))
        assert (config.optim.weight_decay, config.optim.decoupled_weight_decay) == decay
        if name.startswith("paper"):
            assert config.epochs == 100 and config.optim.lr == 3.5e-4


def test_unknown_config_key_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_config(tmp_path / "bad.yaml", {"model": {"name": "resnet18", "optionz": {}}})
    with pytest.raises(ConfigError, match="optionz"):
        load_train_config(path)
    assert cli(["train", str(path), "--out", str(tmp_path / "run")]) == 1
    assert "unknown key(s) ['optionz']" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="init_from"):
        from_dict(TrainConfig, {"model": {"name": "lrdif_s2"}})


def test_stage2_refuses_a_checkpoint_of_another_architecture(data: Path, tmp_path: Path) -> None:
    resnet = ResNet18(config=ResNet18Config(in_channels=1, image_size=24, **{
        k: tuple(v) for k, v in toy_train_config("resnet18", data)["model"]["options"].items()}))
    save_checkpoint(tmp_path / "r18.safetensors", resnet)
    cfg = toy_train_config("lrdif_s2", data)
    cfg["model"]["init_from"] = str(tmp_path / "r18.safetensors")
    with pytest.raises(ValueError, match="'resnet18' checkpoint; stage 2 starts from a stage-1"):
        train(from_dict(TrainConfig, cfg), tmp_path / "s2")


def test_init_from_starts_a_run_from_a_checkpoint_of_the_same_model(
    stage1: Path, data: Path, tmp_path: Path
) -> None:
    from lrdif.train.build import build_model

    first = tmp_path / "first"
    train(from_dict(TrainConfig, toy_train_config("resnet18", data, epochs=1)), first)
    cfg = toy_train_config("resnet18", data, epochs=1)
    cfg["model"]["init_from"] = str(first / "best.safetensors")
    config = from_dict(TrainConfig, cfg)
    saved = load_checkpoint(first / "best.safetensors")
    model = build_model(config, class_names=saved.class_names, in_channels=1, image_size=24)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved.state_dict[name]), name
    # a fresh build (no init_from) differs: the weights did come from the file
    cfg["model"]["init_from"] = None
    fresh = build_model(from_dict(TrainConfig, cfg), class_names=saved.class_names,
                        in_channels=1, image_size=24)
    assert not torch.equal(fresh.head.weight, saved.state_dict["head.weight"])
    cfg["model"]["init_from"] = str(stage1 / "best.safetensors")
    with pytest.raises(ConfigError, match="a 'lrdif_s1' checkpoint; this run trains 'resnet18'"):
        train(from_dict(TrainConfig, cfg), tmp_path / "wrong")
    cfg["model"]["init_from"] = str(first / "best.safetensors")
    cfg["model"]["options"] = {**cfg["model"]["options"],
                               "class_names": list(saved.class_names[:-1])}
    with pytest.raises(ConfigError, match="classes"):
        build_model(from_dict(TrainConfig, cfg), class_names=saved.class_names[:-1],
                    in_channels=1, image_size=24)


def test_a_class_the_checkpoint_does_not_know_is_an_error(
    stage1: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from test_train_fixtures import make_folder_dataset

    folder = make_folder_dataset(tmp_path / "other", ("happiness", "sleepy"))
    code = cli(["evaluate", str(stage1 / "best.safetensors"), "--dataset", "folder",
                "--data", str(folder), "--split", "test", "--out", str(tmp_path / "e")])
    assert code == 1
    err = capsys.readouterr().err
    assert "['sleepy']" in err and "does not know" in err


def test_resume_refuses_another_config_and_a_fresh_run_refuses_an_old_folder(
    data: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    train(from_dict(TrainConfig, toy_train_config("resnet18", data, epochs=1)), run)
    with pytest.raises(FileExistsError, match="--resume"):
        train(from_dict(TrainConfig, toy_train_config("resnet18", data, epochs=1)), run)
    with pytest.raises(ConfigError, match=r"differs from the run's at \['optim.lr'\]"):
        train(from_dict(TrainConfig, toy_train_config("resnet18", data, epochs=1,
                                                 optim={"lr": 1e-3})), run, resume=True)


def test_parameter_groups_scale_the_learning_rate_by_name() -> None:
    from lrdif.train.build import parameter_groups

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    model[1].bias.requires_grad_(False)
    groups = parameter_groups(model, {"1": 0.1})
    scales = {g["lr_scale"]: [id(p) for p in g["params"]] for g in groups}
    assert scales == {1.0: [id(model[0].weight), id(model[0].bias)], 0.1: [id(model[1].weight)]}
    assert parameter_groups(model, {})[0]["params"] == [p for p in model.parameters()
                                                       if p.requires_grad]
    with pytest.raises(ConfigError, match="no trainable parameter under"):
        parameter_groups(model, {"2": 0.5})


def test_soft_targets_are_the_vote_distributions_and_logit_adjustment_trains(
    data: Path, tmp_path: Path
) -> None:
    """soft_targets: the training split carries the normalised crowd votes (in the model's
    class order); logit_adjustment changes what is learned, not what is measured."""
    import shutil

    from lrdif.train import distributed

    root = tmp_path / "votes"
    shutil.copytree(data, root)
    csv = root / "FER2013Train" / "label.csv"
    rows = [r.split(",") for r in csv.read_text().splitlines()]
    for r in rows[::2]:  # every other image: 6 votes for its class, 4 for neutral
        votes = [int(v) for v in r[-10:]]
        top = votes.index(max(votes))
        r[-10:] = [str(v) for v in [4 if top else 10] + [0] * 9]
        if top:
            r[-10 + top] = "6"
    csv.write_text("\n".join(",".join(r) for r in rows) + "\n")
    config = from_dict(TrainConfig, toy_train_config("resnet18", root, epochs=1,
                                                soft_targets=True))
    ctx = distributed.setup("cpu")
    train_split, val_split = loop.load_splits(config, tmp_path / "run", ctx)
    assert val_split.targets is None
    t = train_split.targets
    assert t.shape == (len(train_split), len(train_split.class_names))
    assert torch.allclose(t.sum(1), torch.ones(len(t)))
    assert torch.equal(t.argmax(1), train_split.labels)
    assert ((t > 0).sum(1) == 2).any() and ((t > 0).sum(1) == 1).any()
    plain = train(from_dict(TrainConfig, toy_train_config("resnet18", root, epochs=1)),
                  tmp_path / "plain")
    adjusted = train(from_dict(TrainConfig, toy_train_config(
        "resnet18", root, epochs=1, soft_targets=True, logit_adjustment=1.0)),
        tmp_path / "adjusted")
    assert plain.history[0]["train_loss"] != adjusted.history[0]["train_loss"]
    with pytest.raises(ConfigError, match="logit_adjustment"):
        from_dict(TrainConfig, toy_train_config("resnet18", root, logit_adjustment=-1.0))
