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

Device-resident training (issue 14): the split's images, labels and landmarks live on the
training device, the epoch's order is moved there once, augmentation runs batched there
(:class:`lrdif.data.transforms.Augment` with a generator on that device), and the loss
and accuracy sums are accumulated in a float64 tensor there. With ``check_every_step``
off (the default off the CPU) nothing in a step waits for the device: the sums are read,
and checked for NaN, once an epoch and at each resume save. On CPU the step is the same
computation as before (same bytes); CUDA adds the fused Adam, and ``bf16``,
``channels_last`` and ``compile`` are options.

Selection uses the validation split only; the test split is never read here.

Where things are: :func:`prepare_run` (data, model, optimiser, DDP, logging), the epoch
(:func:`run_epoch`; batches by :func:`epoch_order` and :func:`_batch`, the loss in
:func:`train_step`), then :func:`validate` and :func:`save_epoch` (with the selection
rule :func:`is_best`). The splits come from :mod:`lrdif.data.splits`, the model and
optimiser from :mod:`lrdif.train.build`, the resume state from :mod:`lrdif.train.state`,
the validation metrics from :func:`lrdif.metrics.evaluate_split`, metrics.jsonl and
TensorBoard from :mod:`lrdif.train.logs`.
"""

from __future__ import annotations

import math
import time
import warnings
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from lrdif.checkpoint import save_checkpoint
from lrdif.config import ConfigError, from_dict
from lrdif.data import transforms
from lrdif.data.splits import (
    SplitData,
    read_label_distribution,
    read_split,
    split_landmarks,
    to_split_data,
)
from lrdif.losses import logit_adjustment_offset, smoothed_targets
from lrdif.metrics import evaluate_split
from lrdif.train import distributed
from lrdif.train.build import build_model_and_optimizer, model_class_names
from lrdif.train.config import TrainConfig
from lrdif.train.distill import clean_view_index, distilled_targets
from lrdif.train.logs import METRICS_FILE, log_epoch, open_tensorboard, write_metrics
from lrdif.train.provenance import run_meta
from lrdif.train.state import RESUME_FILE, Progress, check_run_folder, load_resume, save_resume

# Purposes mixed into derived seeds, so no two random streams coincide.
_PERMUTATION, _AUGMENT, _MODEL, _EVAL, _INIT = range(5)
# Running sums of an epoch: the loss terms (times images), correct and seen images.
_SUMS = ("total", "ce", "kl", "correct", "seen")


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


def peak_lr(config: TrainConfig) -> float:
    """``optim.lr`` for this run's batch size by ``optim.lr_scaling``: times
    B / base_batch_size ("linear", Goyal et al. 2017) or its square root ("sqrt", the
    square-root rule for Adam, Malladi et al. 2022); "none" keeps ``optim.lr``."""
    o = config.optim
    ratio = config.batch_size / o.base_batch_size
    return o.lr * {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[o.lr_scaling]


def lr_at(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate of optimiser step ``step`` (0-based): linear warm-up to
    :func:`peak_lr`, then the schedule."""
    o = config.optim
    lr = peak_lr(config)
    epoch = step / steps_per_epoch
    if o.warmup_epochs > 0 and epoch < o.warmup_epochs:
        return lr * (step + 1) / (o.warmup_epochs * steps_per_epoch)
    if o.schedule == "cosine":
        span = max(config.epochs - o.warmup_epochs, 1e-12)
        progress = min((epoch - o.warmup_epochs) / span, 1.0)
        return lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    if o.schedule == "step":
        return lr * o.step_gamma ** int(epoch // o.step_epochs)
    return lr


# --------------------------------------------------------------------------- the run


@dataclass
class TrainResult:
    out_dir: Path
    best_epoch: int
    best_val_accuracy: float
    history: list[dict[str, Any]]


@dataclass
class Run:
    """What one training run works with, built once by :func:`prepare_run`."""

    config: TrainConfig
    out: Path
    ctx: distributed.DistContext
    train: SplitData
    val: SplitData
    model: nn.Module  # the bare model: loss, checkpoints, validation
    net: nn.Module  # what a step calls: the model, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    params: list[nn.Parameter]  # the trained parameters (gradient clipping)
    progress: Progress
    augment: transforms.Augment
    autocast: AbstractContextManager
    check_every_step: bool  # read the loss after every step (see TrainConfig)
    meta: dict[str, Any]  # what every checkpoint of the run records
    writer: Any  # TensorBoard's SummaryWriter on rank 0 (tensorboard: true), else None
    logit_offset: Tensor | None  # (K,) tau log(prior) added to the logits in the loss

    @property
    def steps_per_epoch(self) -> int:
        # The last partial batch is dropped (batch-norm, even steps).
        return len(self.train) // self.config.batch_size


def train(config: TrainConfig, out_dir: str | Path, *, resume: bool = False) -> TrainResult:
    """Train ``config`` into ``out_dir`` (best.safetensors, last.safetensors, metrics.jsonl).

    Under torchrun each process calls this; rank 0 alone writes files.
    """
    ctx = distributed.setup(config.device)
    # Near-zero losses (stage 1 sees the label) fill gradients and Adam moments with
    # subnormal floats, which x86 CPUs process far slower than normal ones. The process
    # gets IEEE arithmetic back afterwards (torch's default): callers, e.g. property-based
    # tests, may need subnormals.
    torch.set_flush_denormal(True)
    try:
        return _train(config, Path(out_dir), resume, ctx)
    finally:
        torch.set_flush_denormal(False)
        distributed.teardown(ctx)


def _train(
    config: TrainConfig, out: Path, resume: bool, ctx: distributed.DistContext
) -> TrainResult:
    run = prepare_run(config, out, resume, ctx)
    progress = run.progress
    for epoch in range(progress.epoch, config.epochs):
        record = epoch_record(run, epoch, run_epoch(run, epoch))
        if ctx.is_main:  # validation and checkpoints; the test split is never looked at
            val_summary = validate(run, epoch, record)
            save_epoch(run, epoch, record, val_summary)
            log_epoch(run.writer, epoch, record, progress)
        progress.epoch, progress.step_in_epoch, progress.sums = epoch + 1, 0, {}
        if ctx.is_main:
            save_resume(out / RESUME_FILE, run.model, run.optimizer, progress, config)
        distributed.barrier(ctx)
    if run.writer is not None:
        run.writer.close()
    return TrainResult(out_dir=out, best_epoch=progress.best_epoch,
                       best_val_accuracy=progress.best_val_accuracy, history=progress.history)


def prepare_run(
    config: TrainConfig, out: Path, resume: bool, ctx: distributed.DistContext
) -> Run:
    """Load the data, build the model and optimiser (restored with ``resume``), wrap the
    model for DDP, and open the run's logs."""
    check_run_folder(out, resume)
    if config.batch_size % ctx.world_size:
        raise ConfigError(
            f"batch_size {config.batch_size} does not split over {ctx.world_size} processes"
        )
    train, val = load_splits(config, out, ctx)
    if len(train) // config.batch_size == 0:
        raise ConfigError(
            f"batch_size {config.batch_size} is larger than the {len(train)} training images"
        )
    # Same initial weights on every rank: seeded, then DDP broadcasts.
    torch.manual_seed(derive_seed(config.seed, _INIT))
    model, optimizer, params = build_model_and_optimizer(
        config, train.class_names, train.images, ctx.device
    )
    progress = load_resume(out / RESUME_FILE, model, optimizer, config) if resume else Progress()
    net: nn.Module = model
    if ctx.distributed:
        device = ctx.device
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.compile:
        net = torch.compile(net)  # type: ignore[assignment]
    check = config.check_every_step
    run = Run(
        config=config, out=out, ctx=ctx, train=train, val=val, model=model, net=net,
        optimizer=optimizer, params=params, progress=progress,
        augment=from_dict(transforms.Augment, config.data.augment, where="data.augment"),
        autocast=(torch.autocast(ctx.device.type, dtype=torch.bfloat16) if config.bf16
                  else nullcontext()),
        check_every_step=ctx.device.type == "cpu" if check is None else check,
        meta=run_meta(config, world_size=ctx.world_size, num_train=len(train),
                      num_val=len(val)),
        writer=open_tensorboard(config, out) if ctx.is_main else None,
        logit_offset=(logit_adjustment_offset(train.labels, len(train.class_names),
                                              config.logit_adjustment).to(ctx.device)
                      if config.logit_adjustment > 0 else None),
    )
    _warn_slow_bf16(config, ctx)
    return run


def _warn_slow_bf16(config: TrainConfig, ctx: distributed.DistContext) -> None:
    if config.bf16 and ctx.device.type == "cpu" and not cpu_has_fast_bf16() and ctx.is_main:
        warnings.warn(
            "bf16=true on a CPU without native bf16 arithmetic (oneDNN reports none): "
            "autocast falls back to kernels far slower than float32; set bf16=false here",
            stacklevel=2,
        )


def load_splits(
    config: TrainConfig, out: Path, ctx: distributed.DistContext
) -> tuple[SplitData, SplitData]:
    """The training and validation splits, decoded once and kept in memory as uint8 on the
    training device (FERPlus train is 58 MB), labels in the model's classes, landmarks
    cached under ``out``; with ``soft_targets`` the training split's label distributions,
    with ``distill.teacher`` those mixed with the teacher's (:mod:`lrdif.train.distill`)."""
    d = config.data
    train_np, train_y, data_classes = read_split(d, d.train_split, limit=config.limit_train)
    val_np, val_y, val_classes = read_split(d, d.val_split)
    model_classes, where = model_class_names(config, data_classes)
    train_targets = (read_label_distribution(d, d.train_split, limit=config.limit_train)
                     if config.soft_targets else None)

    def to_device(images: np.ndarray, labels: np.ndarray, classes: tuple[str, ...],
                  split: str, targets: np.ndarray | None = None) -> SplitData:
        landmarks = split_landmarks(
            d.landmarks, images, out / "landmarks" / f"{split}.npz", is_main=ctx.is_main,
            barrier=lambda: distributed.barrier(ctx),
        )
        return to_split_data(images, labels, classes, model_classes, landmarks=landmarks,
                             device=ctx.device, where=where, targets=targets)

    train = to_device(train_np, train_y, data_classes, d.train_split, train_targets)
    if config.distill.teacher:
        views = clean_view_index(d, d.train_split, limit=config.limit_train)
        train.targets = distilled_targets(config.distill, train, views,
                                          batch_size=config.eval_batch_size)
    return train, to_device(val_np, val_y, val_classes, d.val_split)


# --------------------------------------------------------------------------- one epoch


@dataclass
class EpochStats:
    """What this process trained in one epoch."""

    sums: dict[str, float]  # of _SUMS, over the whole epoch (resumed steps included)
    images: int  # images trained on since this call started (for the throughput)
    seconds: float


def epoch_order(config: TrainConfig, epoch: int, labels: Tensor) -> Tensor:
    """The order of the training images (labels ``(N,)``) in epoch ``epoch``, seeded by
    (seed, epoch), the same on every rank; batch ``s`` is ``order[s*B:(s+1)*B]``. A
    permutation; with ``class_balance`` q > 0, N draws with replacement, image i with
    probability proportional to n_(y_i)^-q (q = 1: every class equally often, q = 0.5:
    square-root sampling)."""
    generator = _generator(derive_seed(config.seed, _PERMUTATION, epoch))
    if not config.class_balance:
        return torch.randperm(len(labels), generator=generator)
    labels = labels.cpu()
    counts = torch.bincount(labels).to(torch.float64)
    weights = counts[labels] ** -config.class_balance
    return torch.multinomial(weights, len(labels), replacement=True, generator=generator)


def run_epoch(run: Run, epoch: int) -> EpochStats:
    """Train one epoch, from the saved step when the run resumes mid-epoch."""
    config, progress, device = run.config, run.progress, run.ctx.device
    run.net.train()
    order = epoch_order(config, epoch, run.train.labels).to(device)  # once, not per step
    bar = tqdm(
        total=run.steps_per_epoch, initial=progress.step_in_epoch, disable=not run.ctx.is_main,
        desc=f"epoch {epoch + 1}/{config.epochs}", unit="step", dynamic_ncols=True,
    )
    sums = sums_tensor(progress.sums, device)  # (len(_SUMS),) float64, on the device
    started, images = time.perf_counter(), 0
    for step in range(progress.step_in_epoch, run.steps_per_epoch):
        lr = lr_at(config, progress.global_step, run.steps_per_epoch)
        images += train_step(run, epoch, step, order, lr, sums)
        progress.step_in_epoch, progress.global_step = step + 1, progress.global_step + 1
        bar.update(1)
        if run.check_every_step:  # the host has read the loss anyway
            bar.set_postfix(loss=f"{float(sums[0] / sums[-1]):.4f}", lr=f"{lr:.2e}")
        every = config.save_every_steps
        if every and progress.global_step % every == 0 and step + 1 < run.steps_per_epoch:
            progress.sums = read_sums(run, sums, epoch, step)
            if run.ctx.is_main:
                save_resume(run.out / RESUME_FILE, run.model, run.optimizer, progress, config)
            distributed.barrier(run.ctx)
    progress.sums = read_sums(run, sums, epoch, run.steps_per_epoch - 1)
    seconds = time.perf_counter() - started  # read_sums waited for the device's last step
    bar.close()
    return EpochStats(sums=progress.sums, images=images, seconds=seconds)


def sums_tensor(sums: dict[str, float], device: torch.device) -> Tensor:
    """The running sums of :data:`_SUMS` as a float64 tensor on ``device`` (zeros if empty)."""
    return torch.tensor([sums.get(k, 0.0) for k in _SUMS], dtype=torch.float64, device=device)


def read_sums(run: Run, sums: Tensor, epoch: int, step: int) -> dict[str, float]:
    """The device's running sums on the host (one synchronisation); a NaN or infinite
    loss in any step so far makes the summed loss non-finite and stops the run."""
    values = dict(zip(_SUMS, sums.tolist(), strict=True))
    if not run.check_every_step:
        _check_finite(run, values["total"], epoch, step, deferred=True)
    return values


def train_step(
    run: Run, epoch: int, step: int, order: Tensor, lr: float, sums: Tensor
) -> int:
    """One optimiser step on batch ``step`` of ``order`` at learning rate ``lr``; adds the
    batch's losses (times its size), correct predictions and size to ``sums`` (on the
    device, :data:`_SUMS` order); returns the batch's size. With ``check_every_step`` off
    nothing here waits for the device."""
    x, y, landmarks, distributions = _batch(run, epoch, step, order)
    for group in run.optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
    torch.manual_seed(derive_seed(run.config.seed, _MODEL, epoch, step, run.ctx.rank))
    with run.autocast:
        output = run.net(x, landmarks=landmarks, labels=y)
    targets = smoothed_targets(y if distributions is None else distributions,
                               len(run.train.class_names), run.config.label_smoothing)
    adjusted = (output if run.logit_offset is None
                else output._replace(logits=output.logits + run.logit_offset))
    losses = run.model.loss(adjusted, targets)
    loss = losses["total"]
    if run.check_every_step:
        _check_finite(run, float(loss.detach()), epoch, step)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if run.config.optim.grad_clip is not None:
        nn.utils.clip_grad_norm_(run.params, run.config.optim.grad_clip)
    run.optimizer.step()
    m = len(y)
    zero = torch.zeros((), dtype=torch.float64, device=sums.device)
    terms = [losses[k].detach().double() * m if k in losses else zero
             for k in ("total", "ce", "kl")]
    correct = (output.logits.argmax(1) == y).sum().double()
    sums += torch.stack([*terms, correct, torch.full_like(zero, m)])
    return m


def _batch(
    run: Run, epoch: int, step: int, order: Tensor
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """This process's share of batch ``step``: augmented images (float, [0, 1]), labels,
    landmarks (or None) and label distributions (or None)."""
    ctx, batch = run.ctx, run.config.batch_size
    local = batch // ctx.world_size
    chosen = order[step * batch : (step + 1) * batch]
    index = chosen[ctx.rank * local : (ctx.rank + 1) * local]  # on the device already
    gen = _generator(derive_seed(run.config.seed, _AUGMENT, epoch, step, ctx.rank), ctx.device)
    landmarks = None if run.train.landmarks is None else run.train.landmarks[index]
    # the landmarks move with the face: the same flip and warp
    x, landmarks = run.augment.apply(run.train.images[index].float().div_(255), gen, landmarks)
    fmt = torch.channels_last if run.config.channels_last else torch.contiguous_format
    targets = None if run.train.targets is None else run.train.targets[index]
    return x.contiguous(memory_format=fmt), run.train.labels[index], landmarks, targets


def _check_finite(
    run: Run, value: float, epoch: int, step: int, *, deferred: bool = False
) -> None:
    if distributed.any_rank(run.ctx, not math.isfinite(value)):
        kept = run.out / "last.safetensors"
        where = f"by step {step + 1}, the summed" if deferred else f"step {step + 1}: the"
        raise TrainingDiverged(
            f"epoch {epoch + 1} {where} training loss is {value} "
            f"(NaN or inf); stopped. The last good checkpoint is kept"
            f"{f' ({kept})' if kept.exists() else ''}; lower optim.lr, set "
            "optim.grad_clip, or turn bf16 off"
        )


# --------------------------------------------------------------------------- after an epoch


def epoch_record(run: Run, epoch: int, stats: EpochStats) -> dict[str, Any]:
    """The epoch's row of metrics.jsonl, training figures summed over the ranks."""
    config, ctx, step = run.config, run.ctx, run.progress.global_step
    record: dict[str, Any] = {"epoch": epoch + 1, "step": step,
                              "lr": lr_at(config, step - 1, run.steps_per_epoch)}
    totals = torch.tensor([stats.sums[k] for k in _SUMS], dtype=torch.float64,
                          device=ctx.device)
    distributed.all_reduce_sum(ctx, totals)
    total, ce, kl, correct, seen = totals.tolist()
    record.update(train_loss=total / seen, train_ce=ce / seen, train_accuracy=correct / seen)
    if config.model.name == "lrdif_s2":
        record["train_kl"] = kl / seen
    if stats.seconds > 0 and stats.images:
        record["train_images_per_s"] = stats.images * ctx.world_size / stats.seconds
        record["epoch_time_s"] = stats.seconds
    return record


def validate(run: Run, epoch: int, record: dict[str, Any]) -> dict[str, Any]:
    """Validation metrics (rank 0), added to ``record`` as ``val_*``; the full summary."""
    config = run.config
    torch.manual_seed(derive_seed(config.seed, _EVAL, epoch))
    summary = evaluate_split(run.model, run.val, batch_size=config.eval_batch_size,
                             bf16=config.bf16, channels_last=config.channels_last)
    record.update({f"val_{k}": summary[k] for k in (
        "accuracy", "mean_class_accuracy", "macro_f1", "with_label_accuracy") if k in summary})
    return summary


def is_best(record: dict[str, Any], progress: Progress) -> bool:
    """The selection rule: a higher validation accuracy than every earlier epoch's."""
    return record["val_accuracy"] > progress.best_val_accuracy


def save_epoch(
    run: Run, epoch: int, record: dict[str, Any], val_summary: dict[str, Any]
) -> None:
    """last.safetensors, best.safetensors when :func:`is_best`, and metrics.jsonl (rank 0)."""
    progress, out = run.progress, run.out
    progress.history.append(record)
    meta = {**run.meta, "epoch": epoch + 1, "metrics": record}
    save_checkpoint(out / "last.safetensors", run.model, meta)
    if is_best(record, progress):
        progress.best_val_accuracy, progress.best_epoch = record["val_accuracy"], epoch + 1
        save_checkpoint(out / "best.safetensors", run.model, {**meta, "val_summary": val_summary})
    write_metrics(out / METRICS_FILE, progress.history)

