"""Checkpoints: one ``.safetensors`` file with JSON metadata; loading never unpickles.

A model checkpoint's header metadata holds key ``"lrdif"`` = a JSON document
``{"format": 1, "model": <MODELS key>, "config": {...}, "class_names": [...],
"version": "...", "meta": {...}}``, plus ``"left_out": [...]`` for a file saved for inference
only (:func:`save_checkpoint` ``leave_out``). Training state (optimizer moments, counters) uses
the same container with key ``"lrdif_state"`` = ``{"format": 1, "version", "meta"}``.

A model class in MODELS provides ``registry_name``, ``config_class`` (its config
dataclass) and is built as ``cls(config=...)``; a class that would otherwise load or
compute something the checkpoint overwrites (pretrained weights, text embeddings)
provides ``cls.build_for_checkpoint(config)``, which ``load_model`` prefers. A fresh
model whose config names pretrained weights by file (E_I ``resnet18``) is built by
:func:`new_model`, which reads them: the models themselves never read files.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn

import lrdif.models  # noqa: F401  (registers every model in MODELS)
from lrdif.config import from_dict, to_dict
from lrdif.io import atomic_write_bytes
from lrdif.registry import MODELS
from lrdif.vocabulary import CheckpointError, __version__

FORMAT = 1
MODEL_KEY = "lrdif"
STATE_KEY = "lrdif_state"
_PICKLE_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle"}
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


@dataclass(frozen=True)
class Checkpoint:
    """The contents of a model checkpoint."""

    model_name: str
    config: dict[str, Any]
    class_names: tuple[str, ...]
    version: str
    meta: dict[str, Any]
    state_dict: dict[str, Tensor]
    left_out: tuple[str, ...] = ()  # submodules whose own weights the file does not hold


def _pickle_message(path: Path) -> str:
    return (
        f"{path} is not a safetensors file; it looks like a PyTorch pickle checkpoint "
        "(torch.save). lrdif never loads pickles: unpickling runs code stored in the file, "
        "so a crafted checkpoint can execute anything on your machine. If you trust the "
        "file, convert it once: build the model, "
        "model.load_state_dict(torch.load(path, weights_only=True)), then "
        "lrdif.checkpoint.save_checkpoint('model.safetensors', model)."
    )


def _read_document(path: str | Path, key: str) -> tuple[Path, dict[str, Any]]:
    """Check the container and return our JSON document under metadata ``key``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise CheckpointError(_pickle_message(path))
    with path.open("rb") as handle:
        head = handle.read(9)
    # safetensors: u64 little-endian header length, then a JSON object ('{').
    size = path.stat().st_size
    n = struct.unpack("<Q", head[:8])[0] if len(head) >= 8 else 0
    if len(head) < 9 or head[8:9] != b"{" or not 0 < n <= min(size - 8, _MAX_HEADER):
        if head[:2] == b"PK" or head[:1] == b"\x80":  # torch zip archive / raw pickle
            raise CheckpointError(_pickle_message(path))
        raise CheckpointError(f"{path} is not a safetensors checkpoint (unrecognised header)")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: damaged safetensors file ({exc})") from exc
    if key not in metadata:
        found = ", ".join(sorted(metadata)) or "none"
        other = {MODEL_KEY: "a model checkpoint", STATE_KEY: "a training-state file"}
        hint = next((f"; it is {v}" for k, v in other.items() if k in metadata), "")
        raise CheckpointError(
            f"{path} is a safetensors file without lrdif metadata {key!r} "
            f"(metadata keys: {found}){hint}"
        )
    try:
        document = json.loads(metadata[key])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: metadata {key!r} is not valid JSON ({exc})") from exc
    if document.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {document.get('format')!r}, this lrdif reads {FORMAT}"
        )
    return path, document


def _read_tensors(path: Path) -> dict[str, Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118


def _write(path: str | Path, tensors: dict[str, Tensor], key: str, document: dict) -> None:
    # safetensors stores dense, unshared tensors: copy each one out (channels_last
    # weights and tied parameters are otherwise refused).
    plain = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
    data = safetensors_bytes(plain, metadata={key: json.dumps(document, sort_keys=True)})
    atomic_write_bytes(path, data)


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    meta: dict[str, Any] | None = None,
    *,
    leave_out: tuple[str, ...] = (),
) -> None:
    """Write ``model`` (state dict, registry name, config, class names) atomically.

    ``meta``: anything JSON-serialisable (metrics, data-set manifest, commit, ...).
    ``leave_out``: names of submodules that inference never calls (``("teacher",)``: the
    frozen FPEN_S1 of LRDif stage 2) whose weights are not written; a tensor they share
    with a kept module (a shared frozen E_I) is kept under the kept module's name.
    :func:`load_model` leaves them at their initial values and makes calling them an
    error, so such a file serves inference only (``lrdif predict``, export), not training.
    """
    for name in leave_out:
        _submodule(model, name, f"leave_out {name!r}")
    document: dict[str, Any] = {
        "format": FORMAT,
        "model": model.registry_name,
        "config": to_dict(model.config),
        "class_names": list(model.class_names),
        "version": __version__,
        "meta": meta or {},
    }
    kept = {k: v for k, v in model.state_dict().items() if not _under(k, leave_out)}
    tensors, shared = _unshared(kept)
    if shared:
        document["shared"] = shared
    if leave_out:
        document["left_out"] = sorted(leave_out)
    _write(path, tensors, MODEL_KEY, document)


def _under(key: str, prefixes: tuple[str, ...] | list[str]) -> bool:
    """Whether state-dict ``key`` belongs to one of the submodules named in ``prefixes``."""
    return any(key.startswith(p + ".") for p in prefixes)


def _submodule(model: nn.Module, name: str, where: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise CheckpointError(f"{where}: {type(model).__name__} has no submodule {name!r}"
                              ) from None


def _unshared(state_dict: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Each tensor once: a module reached by two paths (a shared frozen encoder) appears
    twice in ``state_dict``; the file keeps the first name and maps the others to it."""
    first: dict[tuple, str] = {}
    tensors: dict[str, Tensor] = {}
    shared: dict[str, str] = {}
    for name, t in state_dict.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.shape, t.stride(), t.dtype)
        if t.numel() and key in first:
            shared[name] = first[key]
        else:
            first.setdefault(key, name)
            tensors[name] = t
    return tensors, shared


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a model checkpoint without building the model."""
    path, doc = _read_document(path, MODEL_KEY)
    missing = [k for k in ("model", "config", "class_names") if k not in doc]
    if missing:
        raise CheckpointError(f"{path}: lrdif metadata lacks {missing}")
    state_dict = _read_tensors(path)
    for alias, name in doc.get("shared", {}).items():
        if name not in state_dict:
            raise CheckpointError(f"{path}: shared tensor {alias!r} refers to missing {name!r}")
        state_dict[alias] = state_dict[name]
    left_out = doc.get("left_out", [])
    if not isinstance(left_out, list) or not all(isinstance(n, str) and n for n in left_out):
        raise CheckpointError(f"{path}: metadata 'left_out' must be a list of module names, "
                              f"got {left_out!r}")
    return Checkpoint(
        model_name=doc["model"],
        config=doc["config"],
        class_names=tuple(doc["class_names"]),
        version=doc.get("version", "unknown"),
        meta=doc.get("meta", {}),
        state_dict=state_dict,
        left_out=tuple(left_out),
    )


def read_meta(path: str | Path) -> dict[str, Any]:
    """The ``meta`` of a model checkpoint, read from its header alone (no tensors)."""
    return _read_document(path, MODEL_KEY)[1].get("meta", {})


def _list(names: list[str], limit: int = 8) -> str:
    """All names when few; else a count per top-level module and the first few names."""
    if len(names) <= limit:
        return ", ".join(names)
    groups: dict[str, int] = {}
    for name in names:
        top = name.split(".", 1)[0]
        groups[top] = groups.get(top, 0) + 1
    summary = ", ".join(f"{top}.* ({n})" for top, n in groups.items())
    return f"{len(names)} keys in {summary}; first: {', '.join(names[:3])}"


def load_weights(
    model: nn.Module, state_dict: dict[str, Tensor], *, source: str,
    left_out: tuple[str, ...] = (),
) -> None:
    """Strictly load ``state_dict`` into ``model``; a mismatch names the offending keys.

    Keys of the submodules named in ``left_out`` may be absent (an inference-only file):
    those weights stay as the model was built."""
    expected = model.state_dict()
    missing = sorted(k for k in set(expected) - set(state_dict) if not _under(k, left_out))
    unexpected = sorted(set(state_dict) - set(expected))
    misshaped = sorted(
        f"{k} (file {tuple(state_dict[k].shape)}, model {tuple(expected[k].shape)})"
        for k in set(expected) & set(state_dict)
        if state_dict[k].shape != expected[k].shape
    )
    if missing or unexpected or misshaped:
        parts = [
            f"{label}: {_list(keys)}"
            for label, keys in (
                ("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)
            )
            if keys
        ]
        raise CheckpointError(
            f"{source} does not fit this {type(model).__name__} (a checkpoint of another "
            f"architecture or configuration): " + "; ".join(parts)
        )
    model.load_state_dict(state_dict, strict=not left_out)


def load_model(
    path: str | Path, device: str | torch.device = "cpu", *, expect: str | None = None
) -> nn.Module:
    """Rebuild the model stored in ``path`` (MODELS entry + config), load it, eval mode.

    ``expect``: the MODELS key the caller needs (e.g. ``"lrdif_s1"`` to start stage 2);
    another model in the file is an error that names both.
    """
    ckpt = load_checkpoint(path)
    if expect is not None and ckpt.model_name != expect:
        raise CheckpointError(
            f"{path} holds a {ckpt.model_name!r} model, but a {expect!r} model is needed"
        )
    try:
        cls = MODELS.get(ckpt.model_name)
    except KeyError as exc:
        raise CheckpointError(f"{path}: {exc.args[0]}") from None
    config = from_dict(cls.config_class, ckpt.config, where=f"{path} config")
    build = getattr(cls, "build_for_checkpoint", None)
    model = build(config) if build is not None else cls(config=config)
    load_weights(model, ckpt.state_dict, source=str(path), left_out=ckpt.left_out)
    for name in ckpt.left_out:
        _submodule(model, name, f"{path}: left_out").register_forward_pre_hook(
            _refuse_left_out(path, name))
    return model.to(device).eval()


def _refuse_left_out(path: str | Path, name: str) -> Any:
    """A forward pre-hook: a module saved without its weights must never run."""

    def refuse(module: nn.Module, args: Any) -> None:
        raise CheckpointError(
            f"{path} was saved for inference only, without the weights of {name!r}, which "
            "this call needs (training or a diagnostic); use the full training checkpoint"
        )

    return refuse


# E_I name -> (the MODELS entry whose checkpoint it starts from, the config that trains it).
ENCODER_SOURCES = {
    "resnet18": ("resnet18", "cpu_resnet18"),
    "backbone": ("backbone", "pretrained_backbone"),
}


def encoder_source_weights(encoder: str, path: str | Path) -> dict[str, Tensor]:
    """The state dict of the checkpoint at ``path`` that image encoder ``encoder`` starts
    from (``image_encoder_kwargs.checkpoint``): a ``resnet18`` for E_I ``resnet18`` (its
    stem and stages), a ``backbone`` classifier for E_I ``backbone``."""
    model, config = ENCODER_SOURCES[encoder]
    if not Path(path).is_file():
        raise CheckpointError(
            f"{path}: no such {model} checkpoint for the image encoder E_I; train it "
            f"first (lrdif train {config} data.root=...) or point "
            "model.options.image_encoder_kwargs.checkpoint at one"
        )
    ckpt = load_checkpoint(path)
    if ckpt.model_name != model:
        raise CheckpointError(f"{path} holds a {ckpt.model_name!r} model; the {encoder} "
                              f"image encoder needs a {model!r} checkpoint")
    return ckpt.state_dict


def new_model(cls: type[nn.Module], config: Any) -> nn.Module:
    """A fresh ``cls(config=config)`` (a MODELS class) to train; the weights of an image
    encoder that ``config`` starts from a file (``image_encoder: resnet18`` or ``backbone``
    with ``image_encoder_kwargs.checkpoint``) are read here and handed to the model."""
    encoder = getattr(config, "image_encoder", None)
    path = getattr(config, "image_encoder_kwargs", {}).get("checkpoint")
    if encoder in ENCODER_SOURCES and path is not None:
        return cls(config=config, image_encoder_weights=encoder_source_weights(encoder, path))
    return cls(config=config)


def save_state(path: str | Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Write named tensors plus JSON ``meta`` (e.g. optimizer state, epoch) atomically."""
    _write(path, tensors, STATE_KEY, {"format": FORMAT, "version": __version__, "meta": meta})


def load_state(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a file written by :func:`save_state`: (tensors, meta)."""
    path, doc = _read_document(path, STATE_KEY)
    return _read_tensors(path), doc.get("meta", {})
