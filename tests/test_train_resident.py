"""Device-resident training (issue 14 part 1): deferred host reads, fused Adam, LR rules.

On CPU the deferred path (``check_every_step: false``, the default off the CPU) must train
the same bytes as reading the loss after every step, and still stop at a NaN; the CUDA
test checks that no step synchronises with the host (skipped without a GPU).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train_fixtures import one_thread  # noqa: F401 (autouse: one torch thread)

from lrdif.checkpoint import load_checkpoint
from lrdif.config import from_dict
from lrdif.data.toy import make_ferplus, toy_train_config
from lrdif.train import distributed
from lrdif.train.build import build_model_and_optimizer
from lrdif.train.config import TrainConfig
from lrdif.train.loop import TrainingDiverged, lr_at, peak_lr, prepare_run, run_epoch, train


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_ferplus(tmp_path_factory.mktemp("fer") / "ferplus")


def _metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("train_images_per_s", None)
        row.pop("epoch_time_s", None)
    return rows


def test_deferred_host_reads_train_the_same_bytes(data: Path, tmp_path: Path) -> None:
    runs = {}
    for check in (True, False):
        config = toy_train_config("resnet18", data, epochs=2, save_every_steps=3,
                                  check_every_step=check)
        train(from_dict(TrainConfig, config), tmp_path / str(check))
        runs[check] = tmp_path / str(check)
    for name in ("best.safetensors", "last.safetensors", "resume.safetensors"):
        a, b = (load_file(str(runs[c] / name)) for c in (True, False))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert _metrics(runs[True]) == _metrics(runs[False])
    assert _metrics(runs[False])[0]["train_loss"] > 0


def test_deferred_check_stops_a_nan_run_and_keeps_the_last_good_checkpoint(
    data: Path, tmp_path: Path
) -> None:
    cfg = toy_train_config("resnet18", data, epochs=3, check_every_step=False,
                           optim={"schedule": "step", "step_epochs": 1, "step_gamma": 1e30})
    with pytest.raises(TrainingDiverged, match=r"by step 6, the summed.*NaN or inf.*last good"):
        train(from_dict(TrainConfig, cfg), tmp_path / "nan")
    assert load_checkpoint(tmp_path / "nan" / "last.safetensors").meta["epoch"] == 1


def test_lr_scaling_rules_for_a_larger_batch() -> None:
    def config(rule: str, batch: int) -> TrainConfig:
        return from_dict(TrainConfig, {"batch_size": batch, "epochs": 4, "optim": {
            "lr": 1e-3, "lr_scaling": rule, "base_batch_size": 64, "warmup_epochs": 1}})

    assert peak_lr(config("none", 256)) == 1e-3
    assert peak_lr(config("linear", 256)) == pytest.approx(4e-3)
    assert peak_lr(config("sqrt", 256)) == pytest.approx(2e-3)
    assert peak_lr(config("sqrt", 64)) == pytest.approx(1e-3)
    # the warm-up climbs to the scaled peak at the end of its epoch
    assert lr_at(config("sqrt", 256), 9, 10) == pytest.approx(2e-3)
    assert lr_at(config("sqrt", 256), 0, 10) == pytest.approx(2e-4)
    assert lr_at(config("sqrt", 256), 39, 10) == pytest.approx(
        2e-3 * 0.5 * (1 + math.cos(math.pi * 2.9 / 3)), abs=1e-12)


def test_fused_adam_on_request_and_the_default_update_on_cpu(data: Path) -> None:
    images = torch.zeros(2, 1, 24, 24, dtype=torch.uint8)
    classes = ("neutral", "happiness", "surprise", "sadness")
    for fused, expected in ((None, None), (True, True)):
        config = from_dict(TrainConfig, toy_train_config("resnet18", data,
                                                         optim={"fused": fused}))
        _, optimizer, _ = build_model_and_optimizer(config, classes, images,
                                                    torch.device("cpu"))
        assert optimizer.defaults["fused"] == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cuda_epoch_never_waits_for_the_device(data: Path, tmp_path: Path) -> None:
    config = from_dict(TrainConfig, toy_train_config("resnet18", data, epochs=1,
                                                     device="cuda", bf16=True))
    ctx = distributed.setup(config.device)
    run = prepare_run(config, tmp_path / "cuda", False, ctx)
    assert not run.check_every_step and run.optimizer.defaults["fused"]
    order_steps = run.steps_per_epoch
    torch.cuda.set_sync_debug_mode("error")
    try:  # everything but the one read of the sums at the epoch's end
        from lrdif.train import loop

        steps = []
        original = loop.read_sums
        loop.read_sums = lambda *a: (torch.cuda.set_sync_debug_mode(0), steps.append(1),
                                     original(*a))[-1]
        stats = run_epoch(run, 0)
    finally:
        torch.cuda.set_sync_debug_mode(0)
        loop.read_sums = original
    assert steps == [1] and stats.sums["seen"] == order_steps * config.batch_size
