"""SHA-256 of every tensor a tiny seeded CPU training run writes: a refactoring check.

Trains, on a tiny FERPlus-layout tree of 24x24 PNGs (48 train, 16 valid), a tiny LRDif
stage 1 (2 epochs), stage 2 from it (1 epoch, inserted diffusion noise, a mid-epoch resume
state) and a tiny ResNet-18 baseline (2 epochs), with one torch thread, then prints one
SHA-256 per checkpoint file over its tensors (names, dtypes, shapes and bytes, in name
order), and one of metrics.jsonl without its timings. Run it at two commits on the same
machine: a change that must not alter training gives the same lines. The hashes depend
on the CPU and the torch build, so they are compared between runs, not against a
recorded value.

Run: ``PYTHONPATH=src .venv/bin/python benchmarks/check_train_bytes.py``. Its record
for the structure refactor of issue 11 is ``benchmarks/results/refactor_bytes.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
from safetensors.torch import load_file

from lrdif.config import from_dict
from lrdif.data.toy import make_ferplus, toy_train_config
from lrdif.train.config import TrainConfig
from lrdif.train.loop import train


def tensors_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    for name, value in sorted(load_file(str(path)).items()):
        value = value.contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def metrics_sha256(path: Path) -> str:
    """metrics.jsonl without its timings (which differ between any two runs)."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        row.pop("train_images_per_s", None)
        row.pop("epoch_time_s", None)
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def runs(data: Path, out: Path) -> dict[str, dict]:
    s2 = toy_train_config("lrdif_s2", data, epochs=1, save_every_steps=2)
    s2["model"].update(init_from=str(out / "s1" / "best.safetensors"),
                       stage2={"diffusion": {"timesteps": 4, "insert_noise": True},
                               "loss": "total"})
    return {
        "s1": toy_train_config("lrdif_s1", data, epochs=2),
        "s2": s2,
        "r18": toy_train_config("resnet18", data, epochs=2, optim={"lr": 1e-2}),
    }


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = make_ferplus(root / "fer")
        for name, config in runs(data, root).items():
            result = train(from_dict(TrainConfig, config), root / name)
            print(f"{name}: best_epoch={result.best_epoch} "
                  f"best_val_accuracy={result.best_val_accuracy!r}")
            for path in sorted((root / name).glob("*.safetensors")):
                print(f"  {name}/{path.name} {tensors_sha256(path)}")
            print(f"  {name}/metrics.jsonl {metrics_sha256(root / name / 'metrics.jsonl')}")


if __name__ == "__main__":
    main()
