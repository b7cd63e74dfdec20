"""`torchrun --nproc_per_node 2 -m lrdif train ...` on CPU (gloo): DDP trains, rank 0 writes
the checkpoint, and the checkpoint loads in a single process."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import torch
from test_train_fixtures import PYTHON, subprocess_env, write_config

from lrdif.checkpoint import load_checkpoint, load_model
from lrdif.data.toy import make_ferplus, toy_train_config
from lrdif.train.distributed import DistContext, any_rank, setup


def test_two_process_gloo_training(tmp_path: Path) -> None:
    data = make_ferplus(tmp_path / "fer")
    config = write_config(tmp_path / "r18.yaml",
                          toy_train_config("resnet18", data, epochs=3, optim={"lr": 1e-2}))
    out = tmp_path / "run"
    done = subprocess.run(
        [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "lrdif", "train", str(config), "--out", str(out)],
        env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]  # written once (rank 0), not twice
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    # 48 images, global batch 8 over 2 ranks: 6 steps per epoch, as in one process
    assert rows[-1]["step"] == 18
    ckpt = load_checkpoint(out / "best.safetensors")
    assert ckpt.meta["world_size"] == 2
    model = load_model(out / "best.safetensors")  # here: one process, no process group
    logits = model(torch.rand(2, 1, 24, 24)).logits
    assert logits.shape == (2, 8) and torch.isfinite(logits).all()


def test_single_process_context_without_torchrun(monkeypatch) -> None:
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    ctx = setup("cpu")
    assert ctx == DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    assert ctx.is_main and not ctx.distributed
    assert any_rank(ctx, True) and not any_rank(ctx, False)
