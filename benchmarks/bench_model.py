"""Cost of the default stage-2 LRDif: parameters, forward FLOPs, CPU throughput.

Measures, for 48x48x1 (8 classes, FERPlus) and 112x112x3 (7 classes, RAF-DB):
- parameters (trainable; the frozen teacher, unused at inference, listed apart);
- forward FLOPs per image at inference (torch.utils.flop_counter.FlopCounterMode),
  and the FLOPs of the T-step diffusion loop alone;
- throughput (images/s, batch 64, CPU, channels_last, torch.inference_mode) of the full
  stage-2 forward with T = 4 next to the same model with the diffusion loop skipped
  (x_S2 fed to the UDCformer directly), timed alternately in one run, median of rounds.

Writes benchmarks/results/model.md. Run: ``.venv/bin/python benchmarks/bench_model.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from lrdif.diffusion import reverse_process
from lrdif.io import atomic_write
from lrdif.models import LRDifConfig, LRDifStage2

RAFDB = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
OUT = Path(__file__).parent / "results" / "model.md"


def _flops(fn: Callable[[], object]) -> int:
    # FlopCounterMode tracks modules through autograd hooks: count with autograd on.
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(size: int, channels: int, classes: tuple[str, ...] | None, batch: int,
            rounds: int) -> dict[str, float]:
    config = LRDifConfig(image_size=size, in_channels=channels)
    if classes is not None:
        config = dataclasses.replace(config, class_names=classes)
    torch.manual_seed(0)
    model = LRDifStage2(config=config).eval()
    one = torch.rand(1, channels, size, size)

    def skip_diffusion(images: torch.Tensor) -> torch.Tensor:
        x = model.normalize(images)
        return model.udcformer(x, model.fpen_s2(x), None)[0]

    x_s2 = model.fpen_s2(model.normalize(one)).detach()

    def diffusion_loop(cond: torch.Tensor) -> torch.Tensor:
        return reverse_process(model.denoiser, model.inference_schedule, x_s2=cond,
                               z_T=torch.zeros_like(cond),
                               parameterization=config.diffusion.parameterization)

    result = {
        "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "teacher_params": sum(p.numel() for p in model.teacher.parameters()),
        "denoiser_params": sum(p.numel() for p in model.denoiser.parameters()),
        "flops": _flops(lambda: model(one)),
        "flops_no_diffusion": _flops(lambda: skip_diffusion(one)),
        "flops_diffusion": _flops(lambda: diffusion_loop(x_s2)),
    }
    images = torch.rand(batch, channels, size, size).contiguous(
        memory_format=torch.channels_last)
    cond = x_s2.expand(batch, -1).contiguous()
    full, skipped, loop = [], [], []
    with torch.inference_mode():
        for _ in range(2):  # warm-up: oneDNN primitives, allocator
            model(images)
            skip_diffusion(images)
        for _ in range(rounds):  # alternate, so drifting machine load hits both alike
            full.append(_time(lambda: model(images)))
            skipped.append(_time(lambda: skip_diffusion(images)))
            loop.append(_time(lambda: diffusion_loop(cond)))
    result["ips_full"] = batch / statistics.median(full)
    result["ips_no_diffusion"] = batch / statistics.median(skipped)
    result["loop_seconds"] = statistics.median(loop)
    result["batch_seconds"] = statistics.median(full)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    cases = [("48x48x1, 8 classes", 48, 1, None), ("112x112x3, 7 classes", 112, 3, RAFDB)]
    rows = []
    for name, size, channels, classes in cases:
        r = measure(size, channels, classes, args.batch, args.rounds)
        print(name, r, flush=True)
        rows.append((name, r))
    load = os.getloadavg()
    lines = [
        "# Stage-2 LRDif: size, FLOPs and CPU throughput",
        "",
        f"- command: `.venv/bin/python benchmarks/bench_model.py --batch {args.batch} "
        f"--rounds {args.rounds}`",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"Python {sys.version.split()[0]}; load average at the end "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"
        + (" (a shared machine: absolute img/s are depressed by other jobs; the two "
           "variants were timed alternately, so their ratio is what this run compares)"
           if load[0] > (os.cpu_count() or 1) else ""),
        "- model: the default `LRDifConfig` (conv E_I, MiniLM E_L, C = 128, default "
        "UDCformer, T = 4, x0 parameterisation), untrained weights (cost does not depend "
        "on the values); inference without labels, so the teacher does not run",
        f"- throughput: batch {args.batch}, channels_last, `torch.inference_mode`, median "
        f"of {args.rounds} rounds; the two variants timed alternately in the same run",
        "",
        "| input | params (trainable) | teacher params | forward MFLOPs/image | diffusion "
        "loop MFLOPs/image | img/s, T = 4 | img/s, loop skipped | loop share of time |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in rows:
        share = r["loop_seconds"] / r["batch_seconds"]
        lines.append(
            f"| {name} | {r['params'] / 1e6:.2f} M | {r['teacher_params'] / 1e6:.2f} M | "
            f"{r['flops'] / 1e6:.1f} | {r['flops_diffusion'] / 1e6:.3f} | "
            f"{r['ips_full']:.0f} | {r['ips_no_diffusion']:.0f} | {100 * share:.2f}% |"
        )
    lines += [
        "",
        "The loop share is the median time of the T-step reverse chain alone on a "
        f"({args.batch}, C) batch divided by the median time of the full forward; the two "
        "throughput columns differ by that share plus timing noise. FLOPs count "
        "multiply-adds as 2 FLOPs.",
        "",
    ]
    with atomic_write(args.out, "w") as handle:
        handle.write("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
