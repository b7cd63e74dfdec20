"""``lrdif demo``: one forward pass of an *untrained* stage-2 LRDif on a face-sized input.

It shows that the package installs and runs end to end (config -> model -> inference
without labels, as at test time) and what the model looks like: shapes, parameter
count, FLOPs. The weights are random, so the printed class probabilities mean nothing;
the output says so.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.flop_counter import FlopCounterMode

from lrdif.models import LRDifConfig, LRDifStage2

SAMPLE = Path(__file__).parent / "assets" / "astronaut.jpg"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", type=Path, default=SAMPLE,
                        help="a face image (default: the packaged astronaut portrait)")
    parser.add_argument("--size", type=int, default=48, help="input side in pixels (48)")
    parser.add_argument("--rgb", action="store_true", help="RGB input (default: greyscale)")


def _load(path: Path, size: int, rgb: bool) -> torch.Tensor:
    """The image as a (1, C, size, size) float tensor in [0, 1], centre-cropped square."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB" if rgb else "L")
    except (OSError, UnidentifiedImageError) as exc:
        raise SystemExit(f"{path}: cannot read as an image ({exc})") from exc
    side = min(im.size)
    left, top = (im.width - side) // 2, (im.height - side) // 2
    im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
    array = np.asarray(im, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array)
    tensor = tensor.permute(2, 0, 1) if rgb else tensor[None]
    return tensor[None].contiguous(memory_format=torch.channels_last)


def main(args: argparse.Namespace) -> int:
    channels = 3 if args.rgb else 1
    config = LRDifConfig(image_size=args.size, in_channels=channels)
    print(f"building an untrained lrdif_s2 ({args.size}x{args.size}x{channels}, "
          f"{len(config.class_names)} classes, EPR C={config.epr_dim}, "
          f"E_I={config.image_encoder}, E_L={config.label_encoder}, "
          f"T={config.diffusion.timesteps}) ...")
    torch.manual_seed(0)
    model = LRDifStage2(config=config).eval()
    images = _load(args.image, args.size, args.rgb)
    with torch.inference_mode():
        model(images)  # warm-up: the first call pays one-off allocation costs
        start = time.perf_counter()
        out = model(images)
        seconds = time.perf_counter() - start
    # FlopCounterMode tracks modules through autograd hooks: count with autograd on.
    with FlopCounterMode(display=False) as counter:
        model(images)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    teacher = sum(p.numel() for p in model.teacher.parameters())
    print(f"input      {args.image.name} -> {tuple(images.shape)} in [0, 1]")
    print(f"EPR Z'_0   {tuple(out.epr.shape)}  (reverse diffusion from Z_T = 0, no label)")
    print(f"features   {tuple(out.features.shape)}")
    print(f"logits     {tuple(out.logits.shape)}")
    print(f"parameters {trainable:,} trainable + {teacher:,} in the frozen stage-1 teacher "
          "(not used at inference)")
    print(f"forward    {counter.get_total_flops() / 1e6:.1f} MFLOPs, {1e3 * seconds:.1f} ms")
    probs = out.logits.softmax(dim=1)[0]
    ranked = sorted(zip(model.class_names, probs.tolist(), strict=True), key=lambda p: -p[1])
    print("class probabilities (meaningless: the weights are untrained, random):")
    for name, p in ranked:
        print(f"  {name:<10} {p:.3f}")
    print("train a model with `lrdif train` to get real predictions.")
    return 0
