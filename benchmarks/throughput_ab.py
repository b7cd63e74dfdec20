"""CPU training images/s of two source trees side by side, in one run (issue 14 part 1).

    python benchmarks/throughput_ab.py --tree before=/tmp/before/src --tree after=src

Each measurement is a child process (``PYTHONPATH`` = the tree) that trains the
``cpu_resnet18`` config for ``--steps`` steps of batch 64 on 48x48 toy FERPlus images with
``--threads`` torch threads, and reports the epoch's ``train_images_per_s`` (validation
excluded). The trees take turns (A B A B ...), so load on the machine falls on both
alike; the report gives each tree's median and the ratio of medians to the first tree.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, sys, torch
from pathlib import Path
from lrdif.config import load_config
from lrdif.train.config import TrainConfig
from lrdif.train.loop import train
data, out, steps, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
config = load_config(TrainConfig, "cpu_resnet18", [f"data.root={data}", "epochs=1",
    f"limit_train={steps * 64}", "save_every_steps=0", "device=cpu"])
result = train(config, Path(out))
print(json.dumps({"images_per_s": result.history[-1]["train_images_per_s"]}))
"""


def measure(tree: Path, data: Path, out: Path, steps: int, threads: int) -> float:
    """One child run's training images/s with ``tree`` on ``PYTHONPATH``."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(data), str(out), str(steps),
                           str(threads)], env=env, check=True, capture_output=True, text=True)
    return float(json.loads(done.stdout.strip().splitlines()[-1])["images_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, metavar="NAME=SRC")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    trees = dict(t.split("=", 1) for t in args.tree)
    sys.path.insert(0, next(iter(trees.values())))
    from lrdif.data.toy import make_ferplus

    rates: dict[str, list[float]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        data = make_ferplus(Path(tmp) / "fer", {"train": args.steps * 64, "valid": 64,
                                                "test": 8}, size=48)
        for r in range(args.repeats):
            for name, src in trees.items():
                out = Path(tmp) / f"{name}-{r}"
                rates[name].append(measure(Path(src).resolve(), data, out, args.steps,
                                           args.threads))
                print(f"{name} run {r + 1}: {rates[name][-1]:.1f} images/s", flush=True)
    first = statistics.median(next(iter(rates.values())))
    print("| tree | runs (images/s) | median | ratio to first |")
    print("| --- | --- | --- | --- |")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"| {name} | {', '.join(f'{v:.1f}' for v in values)} | {median:.1f} | "
              f"{median / first:.3f} |")


if __name__ == "__main__":
    main()
