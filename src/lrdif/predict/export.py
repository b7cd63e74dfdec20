"""``lrdif export CKPT --onnx model.onnx``: the whole inference graph as ONNX.

The exported graph maps ``images`` float ``(batch, C_in, H, W)`` in ``[0, 1]`` to
``probabilities`` ``(batch, K)``. For LRDif stage 2 that is FPEN_S2, the T reverse
diffusion steps (paper Eq. 15-16, started from Z_T = 0, so deterministic and
unrolled into T copies of the denoiser by tracing), the UDCformer and the
softmax; the batch axis is dynamic. Class names, input size and the lrdif version
are stored as ONNX metadata. A stage-1 checkpoint is refused: its prior needs the
true label (Sec. 3.2), which an application does not have.

Needs the optional extra ``pip install lrdif[onnx]`` (onnx, onnxruntime); when
onnxruntime is installed the export is checked against PyTorch on a random batch.
"""

from __future__ import annotations

import argparse
import io
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lrdif.io import atomic_write_bytes
from lrdif.vocabulary import __version__

DEFAULT_OPSET = 17
TOLERANCE = 1e-4  # max |p_onnx - p_torch| accepted by the check after export


class ProbabilityModel(nn.Module):
    """One graph for a classifier: images ``(B, C_in, H, W)`` -> probabilities ``(B, K)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(images).logits, dim=1)


class ExportError(ValueError):
    """The checkpoint cannot be exported (stage 1, or a missing optional dependency)."""


def export_onnx(
    checkpoint: str | Path, output: str | Path, *, opset: int = DEFAULT_OPSET
) -> dict[str, Any]:
    """Export ``checkpoint``'s inference to ``output`` (written atomically); returns a summary.

    The summary holds ``class_names``, ``input_shape`` (C_in, H, W), ``bytes`` and,
    when onnxruntime is installed, ``max_abs_diff`` between onnxruntime and PyTorch
    probabilities on a random batch of 3 (an :class:`ExportError` above ``TOLERANCE``).
    """
    from lrdif.checkpoint import load_checkpoint, load_model

    try:
        import onnx
    except ImportError as exc:
        raise ExportError("ONNX export needs the onnx package: pip install 'lrdif[onnx]'") from exc
    model = load_model(checkpoint, device="cpu")
    if model.registry_name == "lrdif_s1":
        raise ExportError(
            f"{checkpoint}: a stage-1 LRDif checkpoint needs the true label to build its prior "
            "(paper Sec. 3.2), so its inference cannot be exported; export the stage-2 model "
            "trained from it"
        )
    landmarks = (load_checkpoint(checkpoint).meta.get("dataset") or {}).get("landmarks",
                                                                            "learned")
    if landmarks != "learned":
        raise ExportError(
            f"{checkpoint}: trained with {landmarks!r} landmarks, which are detected outside "
            "the network; only checkpoints trained with learned landmark maps export as one "
            "graph (train with data.landmarks=learned)"
        )
    model.eval()
    wrapped = ProbabilityModel(model).eval()
    size = model.config.image_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    shape = (model.config.in_channels, height, width)
    sample = torch.rand((2, *shape), generator=torch.Generator().manual_seed(0))
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter is the one that needs no extra package (the torch.export
        # one needs onnxscript); its deprecation notice is not for our users. Tracer
        # warnings flag the models' shape checks, which hold for every batch: _check runs
        # the graph at another batch size than the one traced.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            wrapped, (sample,), buffer, input_names=["images"], output_names=["probabilities"],
            dynamic_axes={"images": {0: "batch"}, "probabilities": {0: "batch"}},
            opset_version=opset, dynamo=False,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    metadata = {"class_names": ",".join(model.class_names), "input": "images float [0,1] "
                f"(batch, {', '.join(map(str, shape))})", "model": model.registry_name,
                "lrdif_version": __version__}
    onnx.helper.set_model_props(proto, metadata)
    data = proto.SerializeToString()
    summary: dict[str, Any] = {"class_names": list(model.class_names), "input_shape": shape,
                               "bytes": len(data), "max_abs_diff": None}
    summary["max_abs_diff"] = _check(data, wrapped, shape)
    atomic_write_bytes(output, data)
    return summary


def _check(data: bytes, wrapped: nn.Module, shape: tuple[int, ...]) -> float | None:
    """Max |onnxruntime - PyTorch| of the probabilities on a random batch of 3, if installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    batch = torch.rand((3, *shape), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = wrapped(batch).numpy()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (got,) = session.run(["probabilities"], {"images": batch.numpy()})
    diff = float(np.abs(got - expected).max())
    if not diff <= TOLERANCE:
        raise ExportError(
            f"the exported graph disagrees with PyTorch: max |dp| = {diff:.2e} > {TOLERANCE}"
        )
    return diff


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT", help="checkpoint made by `lrdif train`")
    parser.add_argument("--onnx", required=True, metavar="FILE", help="ONNX file to write")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset version (default {DEFAULT_OPSET})")


def main(args: argparse.Namespace) -> int:
    try:
        summary = export_onnx(args.checkpoint, args.onnx, opset=args.opset)
    except (OSError, ValueError, KeyError) as exc:
        print(f"lrdif export: error: {exc}", file=sys.stderr)
        return 2
    c, h, w = summary["input_shape"]
    check = ("not checked (onnxruntime not installed)" if summary["max_abs_diff"] is None
             else f"onnxruntime matches PyTorch (max |dp| = {summary['max_abs_diff']:.1e})")
    print(f"wrote {args.onnx} ({summary['bytes'] / 1e6:.1f} MB): images (batch, {c}, {h}, {w}) "
          f"float in [0, 1] -> probabilities (batch, {len(summary['class_names'])}) over "
          f"{', '.join(summary['class_names'])}; {check}")
    return 0
