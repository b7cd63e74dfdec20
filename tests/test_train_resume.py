"""`lrdif train --resume` after SIGKILL ends with the same weights, bit for bit, as an
uninterrupted run (CPU, same seed). Stage 2 is used: it draws the inserted diffusion
noise from the global RNG every step, so the test also pins the per-step reseeding."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import torch
from test_train_fixtures import PYTHON, subprocess_env, write_config

from lrdif.checkpoint import load_checkpoint, load_state
from lrdif.config import from_dict
from lrdif.data.toy import make_ferplus, toy_train_config
from lrdif.train.config import TrainConfig
from lrdif.train.loop import train


def lrdif_train(config: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [PYTHON, "-m", "lrdif", "train", str(config), "--out", str(out), *extra],
        env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def test_resume_after_sigkill_gives_identical_weights(tmp_path: Path) -> None:
    data = make_ferplus(tmp_path / "fer")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(from_dict(TrainConfig, toy_train_config("lrdif_s1", data, epochs=1)), tmp_path / "s1")
    finally:
        torch.set_num_threads(before)
    cfg = toy_train_config("lrdif_s2", data, epochs=4, save_every_steps=2)
    cfg["model"].update(init_from=str(tmp_path / "s1" / "best.safetensors"),
                        stage2={"diffusion": {"insert_noise": True}, "loss": "total"})
    config = write_config(tmp_path / "s2.yaml", cfg)

    # The interrupted run starts first; the uninterrupted one runs while we wait for it.
    killed_run, full_run = tmp_path / "killed", tmp_path / "full"
    victim = lrdif_train(config, killed_run)
    reference = lrdif_train(config, full_run)
    state = killed_run / "resume.safetensors"
    deadline = time.monotonic() + 120
    while not state.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=30) == -signal.SIGKILL, victim.stdout.read()
    _, meta = load_state(state)
    steps_per_epoch = 48 // 8
    assert meta["progress"]["global_step"] < 4 * steps_per_epoch  # killed mid-run

    resumed = lrdif_train(config, killed_run, "--resume")
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out
    ref_out = reference.communicate(timeout=300)[0]
    assert reference.returncode == 0, ref_out

    for name in ("last.safetensors", "best.safetensors"):
        a = load_checkpoint(full_run / name)
        b = load_checkpoint(killed_run / name)
        assert a.meta["epoch"] == b.meta["epoch"]
        assert a.state_dict.keys() == b.state_dict.keys()
        for key, value in a.state_dict.items():
            assert torch.equal(value, b.state_dict[key]), f"{name}: {key} differs"

    def history(run: Path) -> list[dict]:
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if "time" not in k and "per_s" not in k}
                for r in rows]

    assert history(full_run) == history(killed_run)
    assert len(history(full_run)) == 4
