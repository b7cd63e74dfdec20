"""The training loop of ``lrdif train`` (paper Sec. 4.2), for LRDif stage 1, stage 2 and baselines.

Stage 1 (Sec. 3.1-3.2, Fig. 2a) trains FPEN_S1 + UDCformer with the label and L_ce
(Eq. 13); stage 2 (Sec. 3.3, Fig. 2b) trains FPEN_S2 + denoiser + UDCformer, built from
the stage-1 checkpoint with FPEN_S1 frozen as the teacher, with L_total (Eq. 18). The
loop itself is the same for every model in ``MODELS``: it calls ``model(images,
landmarks=, labels=)`` and ``model.loss(output, labels)``.

Reproducibility: the whole training split is decoded once into a uint8 tensor; the
order of epoch ``e`` is a permutation seeded by (seed, e); the augmentation of step
``s`` and the model's own randomness (dropout, inserted diffusion noise) are seeded by
(seed, e, s, rank). So the state needed to resume is only the weights, the optimiser
moments and the step counters: a run resumed from any saved step (even after SIGKILL)
ends with the same weights, bit for bit on CPU, as an uninterrupted one.

Selection uses the validation split only; the test split is never read here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

import lrdif
import lrdif.data  # registers the data sets
import lrdif.models  # registers the models
from lrdif.checkpoint import (
    load_checkpoint,
    load_model,
    load_state,
    new_model,
    save_checkpoint,
    save_state,
)
from lrdif.config import ConfigError, from_dict, to_dict
from lrdif.data import transforms
from lrdif.evaluate.metrics import confusion_matrix, run_model, summarize
from lrdif.io import atomic_write
from lrdif.registry import DATASETS, LANDMARKS, MODELS
from lrdif.train import distributed
from lrdif.train.config import DataSection, TrainConfig

RESUME_FILE = "resume.safetensors"
METRICS_FILE = "metrics.jsonl"
# Models whose forward needs the true label even at evaluation (stage 1, Fig. 2a).
LABEL_CONDITIONED = frozenset({"lrdif_s1"})

_PARALLEL_DECODE = 4096  # images from which load_all decodes in worker processes
# Purposes mixed into derived seeds, so no two random streams coincide.
_PERMUTATION, _AUGMENT, _MODEL, _EVAL, _INIT = range(5)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left untouched."""


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU does bf16 matmuls natively (AVX512-BF16 or AMX, as oneDNN sees it)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check()) if check is not None else False


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (seed, purpose, epoch, step, rank), by NumPy's SeedSequence."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0]
               >> np.uint64(1))


def _generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


# --------------------------------------------------------------------------- data


@dataclass
class SplitData:
    """One split in memory: uint8 images (N, C, H, W), labels (N,) in the model's class
    indices, and landmarks (N, P, 2) or None ("learned"), all on the training device."""

    images: Tensor
    labels: Tensor
    landmarks: Tensor | None
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


def read_split(
    data: DataSection, split: str, *, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Decode a split once: (uint8 (N, H, W[, 3]), int64 (N,), class names)."""
    ds = DATASETS.build(data.dataset, root=data.root, split=split, **data.options)
    if limit is not None:
        ds.samples = ds.samples[:limit]
    # Decoding processes pay off on full data sets; tiny ones decode faster than a spawn.
    workers = min(os.cpu_count() or 1, 4) if len(ds.samples) >= _PARALLEL_DECODE else 0
    images, labels = ds.load_all(workers=workers)
    return images, labels, tuple(ds.class_names)


def label_map(data_classes: tuple[str, ...], model_classes: tuple[str, ...], where: str) -> Tensor:
    """Index table taking a data set's class indices to the model's; unknown classes are errors."""
    unknown = [c for c in data_classes if c not in model_classes]
    if unknown:
        raise ValueError(
            f"{where}: the data set has class(es) {unknown} that the model does not know; "
            f"its classes are {list(model_classes)}"
        )
    return torch.tensor([model_classes.index(c) for c in data_classes], dtype=torch.int64)


def uint8_nchw(images: np.ndarray) -> Tensor:
    """uint8 (N, H, W) or (N, H, W, C) -> uint8 (N, C, H, W) with channels_last memory (no copy)."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    return (x.unsqueeze(-1) if x.ndim == 3 else x).permute(0, 3, 1, 2)


def to_split_data(
    images: np.ndarray,
    labels: np.ndarray,
    data_classes: tuple[str, ...],
    model_classes: tuple[str, ...],
    *,
    landmarks: np.ndarray | None,
    device: torch.device,
    where: str,
) -> SplitData:
    """Put a decoded split on ``device`` as uint8 NCHW, labels mapped to the model's classes."""
    mapping = label_map(data_classes, model_classes, where)
    return SplitData(
        images=uint8_nchw(images).to(device),
        labels=mapping[torch.from_numpy(labels)].to(device),
        landmarks=None if landmarks is None else torch.from_numpy(landmarks).to(device),
        class_names=model_classes,
    )


def split_landmarks(
    source: str, images: np.ndarray, cache: Path, ctx: distributed.DistContext
) -> np.ndarray | None:
    """Landmarks of a split from a LANDMARKS detector, computed once (rank 0) and cached.

    ``"learned"`` computes nothing: the model's learned landmark maps serve every image.
    """
    if source == "learned":
        return None
    from lrdif.models.landmarks import cache_landmarks

    detector = LANDMARKS.build(source)
    if ctx.is_main:
        cache_landmarks(images, detector, cache)
    distributed.barrier(ctx)
    return cache_landmarks(images, detector, cache)


# --------------------------------------------------------------------------- model


def _model_class_names(config: TrainConfig, data_classes: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(config.model.options.get("class_names", data_classes))


def build_model(
    config: TrainConfig, *, class_names: tuple[str, ...], in_channels: int, image_size: int
) -> nn.Module:
    """The model of ``config.model``: a fresh MODELS entry, or stage 2 from its stage-1 file.

    Architecture fields the data fixes (in_channels, image_size, class_names) are filled
    in from the data when the config leaves them out, and checked when it sets them.
    """
    section = config.model
    if section.name == "lrdif_s2":
        return _stage2_from_checkpoint(config, class_names)
    cls = MODELS.get(section.name)
    options = dict(section.options)
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    from_data = {"in_channels": in_channels, "image_size": image_size, "class_names": class_names}
    for key, value in from_data.items():
        if key not in fields:
            continue
        given = options.setdefault(key, value)
        if key != "class_names" and given != value:
            raise ConfigError(
                f"model.options.{key} = {given!r}, but the data set's images give {value!r}"
            )
    model_config = from_dict(cls.config_class, options, where="model.options")
    return new_model(cls, model_config)


def _stage2_from_checkpoint(config: TrainConfig, data_classes: tuple[str, ...]) -> nn.Module:
    from lrdif.models.lrdif import DiffusionConfig, LRDifStage2

    section = config.model
    path = Path(section.init_from or "")
    if section.options:
        raise ConfigError(
            "model.options: stage 2 takes its architecture from the stage-1 checkpoint "
            f"({path}); set stage-2 settings in model.stage2 (diffusion, loss, kl_temperature)"
        )
    ckpt = load_checkpoint(path)
    if ckpt.model_name != "lrdif_s1":
        raise ValueError(
            f"model.init_from = {path}: a {ckpt.model_name!r} checkpoint; stage 2 starts from "
            "a stage-1 LRDif checkpoint ('lrdif_s1')"
        )
    label_map(data_classes, tuple(ckpt.class_names), f"model.init_from = {path}")
    stage1 = load_model(path)
    options = dict(section.stage2)
    known = ("diffusion", "loss", "kl_temperature")
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"model.stage2: unknown key(s) {unknown}; known: {list(known)}")
    diffusion = None
    if "diffusion" in options:
        merged = {**to_dict(stage1.config.diffusion), **options["diffusion"]}
        diffusion = from_dict(DiffusionConfig, merged, where="model.stage2.diffusion")
    kl_temperature = options.get("kl_temperature")
    return LRDifStage2.from_stage1(
        stage1, diffusion=diffusion, loss=options.get("loss"),
        kl_temperature=None if kl_temperature is None else float(kl_temperature),
    )


def _check_input(model: nn.Module, images: Tensor, where: str) -> None:
    c = model.config
    _, channels, h, w = images.shape
    expected = (getattr(c, "in_channels", channels), getattr(c, "image_size", h))
    if (channels, h) != expected or h != w:
        raise ValueError(
            f"{where}: images are {channels}x{h}x{w}, the model expects "
            f"{expected[0]}x{expected[1]}x{expected[1]}"
        )


# --------------------------------------------------------------------------- schedule


def lr_at(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate of optimiser step ``step`` (0-based): linear warm-up, then the schedule."""
    o = config.optim
    epoch = step / steps_per_epoch
    if o.warmup_epochs > 0 and epoch < o.warmup_epochs:
        return o.lr * (step + 1) / (o.warmup_epochs * steps_per_epoch)
    if o.schedule == "cosine":
        span = max(config.epochs - o.warmup_epochs, 1e-12)
        progress = min((epoch - o.warmup_epochs) / span, 1.0)
        return o.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    if o.schedule == "step":
        return o.lr * o.step_gamma ** int(epoch // o.step_epochs)
    return o.lr


# --------------------------------------------------------------------------- state


@dataclass
class Progress:
    """Where a run stands; saved with the resume state (JSON)."""

    epoch: int = 0  # the epoch in progress, 0-based
    step_in_epoch: int = 0  # optimiser steps done in that epoch
    global_step: int = 0
    best_val_accuracy: float = -1.0
    best_epoch: int = 0
    # Running sums of the epoch in progress: loss terms x images, correct, images.
    sums: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], list]:
    state = optimizer.state_dict()
    tensors = {
        f"optim.{index}.{key}": value
        for index, entry in state["state"].items()
        for key, value in entry.items()
    }
    return tensors, state["param_groups"]


def save_resume(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, progress: Progress,
    config: TrainConfig,
) -> None:
    """Weights, Adam moments, counters and the resolved config: one atomic safetensors file."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    optim_tensors, groups = _optimizer_tensors(optimizer)
    tensors.update(optim_tensors)
    meta = {"progress": dataclasses.asdict(progress), "param_groups": groups,
            "config": to_dict(config)}
    save_state(path, tensors, meta)


def load_resume(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig
) -> Progress:
    """Restore what :func:`save_resume` wrote; the config must be the run's own."""
    tensors, meta = load_state(path)
    saved, now = meta["config"], to_dict(config)
    if saved != now:
        differ = sorted(_diff_keys(saved, now))
        raise ConfigError(
            f"{path}: --resume with a config that differs from the run's at {differ}; "
            "resume with the same config, or start a new run in another --out folder"
        )
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return Progress(**meta["progress"])


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def git_commit() -> str | None:
    """The source tree's commit (``-dirty`` with uncommitted changes), or None outside git."""
    here = Path(lrdif.__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
            timeout=10, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def udc_manifest(root: str | Path) -> dict[str, Any] | None:
    """The manifest ``lrdif synthesize`` left in a data set's root (its UDC parameters,
    seed, PSF checksums), or None for data it did not make."""
    from lrdif.udc.synthesize import INFO_DIR, MANIFEST

    path = Path(root) / INFO_DIR / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable UDC manifest ({exc})") from exc


def _write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    # Rewritten whole from the saved history, so a killed-and-resumed run has no duplicates.
    with atomic_write(path, "w") as handle:
        for record in history:
            handle.write(json.dumps(record, sort_keys=True) + "\n")


def _tensorboard(config: TrainConfig, out_dir: Path) -> Any:
    if not config.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ConfigError(
            "tensorboard: true needs the tensorboard package (pip install tensorboard)"
        ) from exc
    return SummaryWriter(log_dir=str(out_dir / "tensorboard"))


# --------------------------------------------------------------------------- the loop


@dataclass
class TrainResult:
    out_dir: Path
    best_epoch: int
    best_val_accuracy: float
    history: list[dict[str, Any]]


def train(config: TrainConfig, out_dir: str | Path, *, resume: bool = False) -> TrainResult:
    """Train ``config`` into ``out_dir`` (best.safetensors, last.safetensors, metrics.jsonl).

    Under torchrun each process calls this; rank 0 alone writes files.
    """
    ctx = distributed.setup(config.device)
    # Near-zero losses (stage 1 sees the label) fill gradients and Adam moments with
    # subnormal floats, which x86 CPUs process ~100x slower: epochs took 2x longer here.
    torch.set_flush_denormal(True)
    try:
        return _train(config, Path(out_dir), resume, ctx)
    finally:
        distributed.teardown(ctx)


def _train(
    config: TrainConfig, out: Path, resume: bool, ctx: distributed.DistContext
) -> TrainResult:
    resume_path = out / RESUME_FILE
    if resume and not resume_path.is_file():
        raise FileNotFoundError(f"--resume: {resume_path} does not exist (nothing to resume)")
    if not resume and (resume_path.exists() or (out / "last.safetensors").exists()):
        raise FileExistsError(
            f"{out} already holds a run; pass --resume to continue it, or choose another --out"
        )
    if config.batch_size % ctx.world_size:
        raise ConfigError(
            f"batch_size {config.batch_size} does not split over {ctx.world_size} processes"
        )
    device = ctx.device

    # Data: decoded once, kept in memory as uint8 (FERPlus train is 58 MB).
    d = config.data
    train_np, train_y, data_classes = read_split(d, d.train_split, limit=config.limit_train)
    val_np, val_y, val_classes = read_split(d, d.val_split)
    model_classes = _model_class_names(config, data_classes)
    where = str(d.root)
    if config.model.name == "lrdif_s2":
        model_classes = tuple(load_checkpoint(config.model.init_from).class_names)
        where = f"{d.root} with model.init_from = {config.model.init_from}"
    lm_dir = out / "landmarks"
    train = to_split_data(
        train_np, train_y, data_classes, model_classes, device=device, where=where,
        landmarks=split_landmarks(d.landmarks, train_np, lm_dir / f"{d.train_split}.npz", ctx),
    )
    val = to_split_data(
        val_np, val_y, val_classes, model_classes, device=device, where=where,
        landmarks=split_landmarks(d.landmarks, val_np, lm_dir / f"{d.val_split}.npz", ctx),
    )
    n, batch = len(train), config.batch_size
    steps_per_epoch = n // batch  # the last partial batch is dropped (batch-norm, even steps)
    if steps_per_epoch == 0:
        raise ConfigError(f"batch_size {batch} is larger than the {n} training images")

    # Model and optimiser (same initial weights on every rank: seeded, then DDP broadcasts).
    torch.manual_seed(derive_seed(config.seed, _INIT))
    model = build_model(
        config, class_names=model_classes, in_channels=train.images.shape[1],
        image_size=train.images.shape[2],
    ).to(device)
    _check_input(model, train.images, str(d.root))
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(
        params, lr=config.optim.lr, betas=config.optim.betas,
        weight_decay=config.optim.weight_decay,
    )
    progress = load_resume(resume_path, model, optimizer, config) if resume else Progress()
    net: nn.Module = model
    if ctx.distributed:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    meta_base = {
        "train_config": to_dict(config),
        "dataset": {"name": d.dataset, "root": str(d.root), "options": d.options,
                    "train_split": d.train_split, "val_split": d.val_split,
                    "num_train": n, "num_val": len(val), "landmarks": d.landmarks},
        "udc_manifest": udc_manifest(d.root),
        "git_commit": git_commit(),
        "world_size": ctx.world_size,
    }
    augment = from_dict(transforms.Augment, d.augment, where="data.augment")
    writer = _tensorboard(config, out) if ctx.is_main else None
    if config.bf16 and device.type == "cpu" and not cpu_has_fast_bf16() and ctx.is_main:
        warnings.warn(
            "bf16=true on a CPU without native bf16 arithmetic (oneDNN reports none): "
            "autocast falls back to slow kernels (a resnet18 step took 14x longer than "
            "float32 on an AVX2-only EPYC); set bf16=false here",
            stacklevel=2,
        )
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if config.bf16 else nullcontext()
    )
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    local_batch = batch // ctx.world_size

    for epoch in range(progress.epoch, config.epochs):
        net.train()
        perm_seed = derive_seed(config.seed, _PERMUTATION, epoch)
        order = torch.randperm(n, generator=_generator(perm_seed))
        bar = tqdm(
            total=steps_per_epoch, initial=progress.step_in_epoch, disable=not ctx.is_main,
            desc=f"epoch {epoch + 1}/{config.epochs}", unit="step", dynamic_ncols=True,
        )
        sums = progress.sums or {"total": 0.0, "ce": 0.0, "kl": 0.0, "correct": 0.0, "seen": 0.0}
        started, images_done = time.perf_counter(), 0
        for step in range(progress.step_in_epoch, steps_per_epoch):
            chosen = order[step * batch : (step + 1) * batch]
            index = chosen[ctx.rank * local_batch : (ctx.rank + 1) * local_batch].to(device)
            gen = _generator(derive_seed(config.seed, _AUGMENT, epoch, step, ctx.rank), device)
            x = augment(train.images[index].float().div_(255), gen)
            x = x.contiguous(memory_format=memory_format)
            y = train.labels[index]
            lm = None if train.landmarks is None else train.landmarks[index]
            lr = lr_at(config, progress.global_step, steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            torch.manual_seed(derive_seed(config.seed, _MODEL, epoch, step, ctx.rank))
            with autocast:
                output = net(x, landmarks=lm, labels=y)
            losses = model.loss(output, y)
            loss = losses["total"]
            value = float(loss.detach())
            if distributed.any_rank(ctx, not math.isfinite(value)):
                kept = out / "last.safetensors"
                raise TrainingDiverged(
                    f"epoch {epoch + 1} step {step + 1}: the training loss is {value} "
                    f"(NaN or inf); stopped. The last good checkpoint is kept"
                    f"{f' ({kept})' if kept.exists() else ''}; lower optim.lr, set "
                    "optim.grad_clip, or turn bf16 off"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.optim.grad_clip is not None:
                nn.utils.clip_grad_norm_(params, config.optim.grad_clip)
            optimizer.step()

            m = len(y)
            for key in ("total", "ce", "kl"):
                if key in losses:
                    sums[key] += float(losses[key].detach()) * m
            sums["correct"] += float((output.logits.argmax(1) == y).sum())
            sums["seen"] += m
            images_done += m
            progress.step_in_epoch, progress.global_step = step + 1, progress.global_step + 1
            progress.sums = sums
            bar.update(1)
            bar.set_postfix(loss=f"{sums['total'] / sums['seen']:.4f}", lr=f"{lr:.2e}")
            every = config.save_every_steps
            if every and progress.global_step % every == 0 and step + 1 < steps_per_epoch:
                if ctx.is_main:
                    save_resume(resume_path, model, optimizer, progress, config)
                distributed.barrier(ctx)
        bar.close()
        elapsed = time.perf_counter() - started

        # Validation (rank 0) and checkpoints; the test split is never looked at.
        record: dict[str, Any] = {"epoch": epoch + 1, "step": progress.global_step,
                                  "lr": lr_at(config, progress.global_step - 1, steps_per_epoch)}
        train_totals = torch.tensor([sums[k] for k in ("total", "ce", "kl", "correct", "seen")],
                                    dtype=torch.float64, device=device)
        distributed.all_reduce_sum(ctx, train_totals)
        total, ce, kl, correct, seen = train_totals.tolist()
        record.update(train_loss=total / seen, train_ce=ce / seen, train_accuracy=correct / seen)
        if config.model.name == "lrdif_s2":
            record["train_kl"] = kl / seen
        if elapsed > 0 and images_done:
            record["train_images_per_s"] = images_done * ctx.world_size / elapsed
            record["epoch_time_s"] = elapsed
        if ctx.is_main:
            torch.manual_seed(derive_seed(config.seed, _EVAL, epoch))
            val_summary = evaluate_split(model, val, config)
            record.update({f"val_{k}": val_summary[k]
                           for k in ("accuracy", "mean_class_accuracy", "macro_f1")})
            progress.history.append(record)
            meta = {**meta_base, "epoch": epoch + 1, "metrics": record}
            save_checkpoint(out / "last.safetensors", model, meta)
            if record["val_accuracy"] > progress.best_val_accuracy:
                progress.best_val_accuracy, progress.best_epoch = record["val_accuracy"], epoch + 1
                save_checkpoint(out / "best.safetensors", model,
                                {**meta, "val_summary": val_summary})
            _write_metrics(out / METRICS_FILE, progress.history)
            if writer is not None:
                for key, v in record.items():
                    if key not in ("epoch", "step"):
                        writer.add_scalar(key, v, epoch + 1)
                writer.flush()
            tqdm.write(
                f"epoch {epoch + 1}: train loss {record['train_loss']:.4f} "
                f"acc {record['train_accuracy']:.4f} | val acc {record['val_accuracy']:.4f} "
                f"(best {progress.best_val_accuracy:.4f} @ {progress.best_epoch})"
            )
        progress.epoch, progress.step_in_epoch, progress.sums = epoch + 1, 0, {}
        if ctx.is_main:
            save_resume(resume_path, model, optimizer, progress, config)
        distributed.barrier(ctx)
    if writer is not None:
        writer.close()
    return TrainResult(out_dir=out, best_epoch=progress.best_epoch,
                       best_val_accuracy=progress.best_val_accuracy, history=progress.history)


def evaluate_split(model: nn.Module, split: SplitData, config: TrainConfig) -> dict[str, Any]:
    """Validation metrics of ``model`` on ``split`` (eval mode, batched, no gradients)."""
    logits, _ = run_model(
        model, split.images, landmarks=split.landmarks,
        labels=split.labels if model.registry_name in LABEL_CONDITIONED else None,
        batch_size=config.eval_batch_size, bf16=config.bf16,
        channels_last=config.channels_last,
    )
    pred = logits.argmax(1).cpu().numpy()
    cm = confusion_matrix(split.labels.cpu().numpy(), pred, len(split.class_names))
    return summarize(cm, split.class_names)
