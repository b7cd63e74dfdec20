"""Does test-time averaging over more views than the mirror help? Validation only.

    python benchmarks/tta_views.py CHECKPOINT ROOT [ROOT ...] [--threads 1]

For each FERPlus-layout ROOT (clean FERPlus or a ``lrdif synthesize`` output), the
checkpoint's flip-averaged logits on the validation split are computed for the face
and six altered views of it: shifted by 2 px along each axis (edges replicated), zoomed
in (the central 44x44 resized to 48x48) and zoomed out (the 52x52 edge-replicated face
resized to 48x48). Prints the accuracy of each view alone and of three averages:
the face with its four shifts, the face with its two zooms, all seven.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from lrdif.checkpoint import load_model
from lrdif.data.splits import DataSection, read_split, to_split_data
from lrdif.metrics import run_model

SHIFT, ZOOM_CROP = 2, 44


def views(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """x (N, C, 48, 48) float pixel values (0-255) -> the named views of the module
    docstring, each the same shape."""
    s, size = SHIFT, x.shape[-1]
    pad = F.pad(x, (s, s, s, s), mode="replicate")
    margin = (size - ZOOM_CROP) // 2
    return {
        "face": x,
        "right": pad[..., s:s + size, 2 * s:], "left": pad[..., s:s + size, :size],
        "down": pad[..., 2 * s:, s:s + size], "up": pad[..., :size, s:s + size],
        "zoom_in": F.interpolate(x[..., margin:size - margin, margin:size - margin],
                                 size=size, mode="bilinear", align_corners=False),
        "zoom_out": F.interpolate(pad, size=size, mode="bilinear", align_corners=False),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("roots", nargs="+")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, help="first faces of each split only (a smoke run)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint, device="cpu")
    groups = {"face + 4 shifts": ["face", "right", "left", "down", "up"],
              "face + 2 zooms": ["face", "zoom_in", "zoom_out"]}
    for root in args.roots:
        images, labels, classes = read_split(DataSection(root=root), "valid", limit=args.limit)
        split = to_split_data(images, labels, classes, tuple(model.class_names),
                              landmarks=None, device=torch.device("cpu"), where=root)
        # plain NCHW memory: views cut from the channels_last tensor misread (35% here)
        x = split.images.float().contiguous()  # run_model divides by 255
        with torch.inference_mode():
            logits = {k: run_model(model, v.contiguous())[0] for k, v in views(x).items()}
        y = split.labels
        sets = {k: [k] for k in logits} | groups | {"all seven": list(logits)}
        row = {k: 100 * (sum(logits[n] for n in names).argmax(1) == y).float().mean().item()
               for k, names in sets.items()}
        print(root, ", ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True)


if __name__ == "__main__":
    main()
