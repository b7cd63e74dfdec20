"""The paper's studies: checkpoint evaluation, Table 5 (ablation) and Fig. 6 (iterations).

- :func:`evaluate_checkpoint`: a checkpoint on a data-set split -> metrics, logits,
  features (what ``lrdif evaluate`` prints and plots); :func:`cached_summary` its
  metrics, remembered by the checkpoint's SHA-256.
- :func:`steps_curve` (Fig. 6): accuracy of a stage-2 model when its reverse diffusion
  runs ``n`` iterations, for each ``n``.
- :func:`epr_diagnostics`: does the stage-2 prior carry the signal? Accuracy with the
  predicted EPR, the teacher's label-derived Z, a zero EPR and another face's x_S2.
- :func:`logit_adjustment`: post-hoc logit adjustment (Menon et al., ICLR 2021) for the
  class imbalance, its strength chosen on the validation split
  (:func:`choose_logit_adjustment`).
- :func:`paired_bootstrap`: the accuracy difference of two models on the same split,
  with a 95% paired-bootstrap interval (is the diffusion's contribution real?).
- :func:`run_ablation` (Table 5): from one stage-1 checkpoint, trains each stage-2
  variant of ``configs/studies/table5.yaml`` (S2-V1 no diffusion; S2-V2 diffusion +
  L_ce; S2-V3 diffusion + L_total + inserted noise; S2-V4 diffusion + L_total without),
  selects each on validation, and measures every row (and S1 with the ground-truth
  label) on the test split.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from lrdif.checkpoint import load_checkpoint, load_model
from lrdif.config import PACKAGED_CONFIGS, ConfigError, apply_overrides, from_dict, to_dict
from lrdif.data.splits import DataSection, SplitData, read_split, split_landmarks, to_split_data
from lrdif.io import atomic_write_json, file_sha256
from lrdif.metrics import LABEL_CONDITIONED, confusion_matrix, run_model, summarize
from lrdif.train import distributed
from lrdif.train.config import TrainConfig
from lrdif.train.loop import derive_seed, train
from lrdif.train.provenance import udc_manifest

ABLATION_FILE = PACKAGED_CONFIGS / "studies" / "table5.yaml"
_EVAL_SEED = 3


@dataclass
class Evaluation:
    """A checkpoint measured on a split: metrics plus the raw outputs behind them."""

    summary: dict[str, Any]
    logits: torch.Tensor  # (N, K) float32
    features: torch.Tensor  # (N, D) float32
    split: SplitData
    model: nn.Module


def load_eval_split(
    data: DataSection, split: str, model: nn.Module, *, device: torch.device, cache_dir: Path
) -> SplitData:
    """A split in ``model``'s class indices, with landmarks from ``data.landmarks``."""
    images, labels, classes = read_split(data, split)
    landmarks = split_landmarks(data.landmarks, images, cache_dir / f"{split}.npz")
    return to_split_data(
        images, labels, classes, tuple(model.class_names), landmarks=landmarks, device=device,
        where=f"{data.root} (split {split})",
    )


def evaluate_model(
    model: nn.Module, split: SplitData, *, batch_size: int = 256, label_free: bool = False
) -> Evaluation:
    """Metrics of ``model`` on ``split``; stage 1 gets the true label (Table 5, S1 row)
    unless ``label_free`` (a stage 1 trained with label dropout: its image path)."""
    torch.manual_seed(derive_seed(_EVAL_SEED))
    conditioned = model.registry_name in LABEL_CONDITIONED and not label_free
    logits, features = run_model(
        model, split.images, landmarks=split.landmarks,
        labels=split.labels if conditioned else None,
        batch_size=batch_size,
    )
    cm = confusion_matrix(split.labels.cpu().numpy(), logits.argmax(1).numpy(),
                          len(split.class_names))
    return Evaluation(summary=summarize(cm, split.class_names), logits=logits, features=features,
                      split=split, model=model)


def checkpoint_data_section(checkpoint: str | Path, dataset: str, root: str | Path) -> DataSection:
    """The data section to evaluate ``checkpoint`` on ``dataset`` at ``root``: the
    training run's reader options and landmark source when the data set is the same."""
    meta = load_checkpoint(checkpoint).meta
    trained = meta.get("train_config", {}).get("data", {})
    same = trained.get("dataset") == dataset
    return DataSection(
        dataset=dataset, root=str(root),
        options=dict(trained.get("options", {})) if same else {},
        landmarks=trained.get("landmarks", "learned"),
    )


def evaluate_checkpoint(
    checkpoint: str | Path, data: DataSection, split: str, *, device: str = "auto",
    batch_size: int = 256, cache_dir: Path, label_free: bool = False,
) -> Evaluation:
    """Load ``checkpoint`` and measure it on ``split`` of ``data`` (``label_free``: a
    stage 1 without its label, as in :func:`evaluate_model`)."""
    dev = distributed.resolve_device(device)
    model = load_model(checkpoint, device=dev)
    return evaluate_model(
        model, load_eval_split(data, split, model, device=dev, cache_dir=cache_dir),
        batch_size=batch_size, label_free=label_free,
    )


def cached_summary(
    checkpoint: str | Path, data: DataSection, split: str, *, device: str = "auto",
    cache_dir: Path, label_free: bool = False,
) -> dict[str, Any]:
    """``evaluate_checkpoint(...).summary``, remembered in ``cache_dir/summaries``.

    The key is the checkpoint's SHA-256, the split, the data section and the data set's
    UDC manifest (so a re-synthesised set with other settings is measured afresh), and
    ``label_free`` when set; reruns of a study that reuse finished runs skip their
    evaluations.
    """
    parts = [file_sha256(checkpoint), split, to_dict(data), udc_manifest(data.root)]
    key = json.dumps(parts + ["label_free"] * label_free, sort_keys=True, default=str)
    path = cache_dir / "summaries" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"
    if path.is_file():
        return json.loads(path.read_text())
    summary = evaluate_checkpoint(checkpoint, data, split, device=device,
                                  cache_dir=cache_dir, label_free=label_free).summary
    atomic_write_json(path, summary)
    return summary


TAUS = tuple(round(0.1 * i, 1) for i in range(21))  # logit adjustment strengths tried


def training_prior(data: DataSection) -> np.ndarray:
    """The training split's class frequencies (K,), the prior that logit adjustment
    divides out."""
    _, labels, classes = read_split(data, data.train_split)
    return np.bincount(labels, minlength=len(classes)) / len(labels)


def log_prior(prior: np.ndarray) -> torch.Tensor:
    """log(prior) (K,) as logit adjustment subtracts it, tau times: the offset chosen on
    validation here is the one a shipped model's ``config.logit_offset`` carries."""
    return torch.as_tensor(np.log(np.maximum(prior, 1e-12)), dtype=torch.float32)


def choose_logit_adjustment(
    val: Evaluation, prior: np.ndarray, *, max_accuracy_drop: float = 0.005
) -> tuple[float, list[dict[str, float]]]:
    """tau of post-hoc logit adjustment, argmax(logits - tau log prior), chosen on the
    validation evaluation ``val``: the highest mean class accuracy among the taus in
    :data:`TAUS` whose accuracy stays within ``max_accuracy_drop`` of tau = 0 (rare
    classes recalled without giving up overall accuracy). ``prior`` (K,) is the training
    split's class frequency. Returns tau and the validation curve."""
    log_p, k = log_prior(prior), len(val.split.class_names)
    labels = val.split.labels.cpu().numpy()

    def scores(tau: float) -> dict[str, float]:
        cm = confusion_matrix(labels, (val.logits - tau * log_p).argmax(1).numpy(), k)
        summary = summarize(cm, val.split.class_names)
        return {"tau": tau, **{m: summary[m] for m in ("accuracy", "mean_class_accuracy")}}

    curve = [scores(tau) for tau in TAUS]
    floor = curve[0]["accuracy"] - max_accuracy_drop
    best = max((r for r in curve if r["tau"] == 0 or r["accuracy"] >= floor),
               key=lambda r: (r["mean_class_accuracy"], -r["tau"]))
    return best["tau"], curve


def logit_adjustment(
    val: Evaluation, test: Evaluation, prior: np.ndarray, *, max_accuracy_drop: float = 0.005
) -> dict[str, Any]:
    """Post-hoc logit adjustment with tau from :func:`choose_logit_adjustment` on ``val``:
    tau, the validation curve and the test summary at that tau."""
    tau, curve = choose_logit_adjustment(val, prior, max_accuracy_drop=max_accuracy_drop)
    pred = (test.logits - tau * log_prior(prior)).argmax(1).numpy()
    cm = confusion_matrix(test.split.labels.cpu().numpy(), pred, len(test.split.class_names))
    return {"tau": tau, "valid_curve": curve, "test": summarize(cm, test.split.class_names)}


def paired_bootstrap(
    a: Evaluation, b: Evaluation, *, samples: int = 2000, seed: int = 0
) -> dict[str, float]:
    """Accuracy of ``a`` minus that of ``b`` on the same images, with the 2.5% and 97.5%
    quantiles of the difference over ``samples`` resamplings of the images (paired: both
    models are judged on each resampled image)."""
    truth = a.split.labels.cpu()
    if not torch.equal(truth, b.split.labels.cpu()):
        raise ValueError("paired_bootstrap needs two evaluations of the same split")
    diff = ((a.logits.argmax(1) == truth).double() - (b.logits.argmax(1) == truth).double())
    g = torch.Generator().manual_seed(seed)
    means = torch.stack([diff[torch.randint(len(diff), (len(diff),), generator=g)].mean()
                         for _ in range(samples)])
    low, high = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64))
    return {"difference": float(diff.mean()), "low": float(low), "high": float(high),
            "samples": samples}


EPR_PROBES = ("predicted", "teacher", "zero", "other_face_x_s2")


@torch.no_grad()
def epr_diagnostics(
    model: nn.Module, split: SplitData, *, batch_size: int = 256
) -> dict[str, dict[str, float]]:
    """Accuracy of a stage-2 model's UDCformer given each EPR of :data:`EPR_PROBES` (with
    the E_I token and head where the model has them; one pass, no flip averaging).

    ``predicted``: Z'_0 from the face (what inference uses); ``teacher``: the frozen
    stage-1 Z from the true label and the face; ``zero``: a zero EPR; ``other_face_x_s2``:
    Z'_0 from the next face's condition x_S2 (the batch rolled by one). A prior that
    carries signal scores far above ``zero`` and ``other_face_x_s2`` with ``predicted``.
    """
    if model.registry_name != "lrdif_s2":
        raise ValueError(f"EPR diagnostics need a stage-2 LRDif model, not {model.registry_name!r}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    preds: dict[str, list[torch.Tensor]] = {p: [] for p in EPR_PROBES}
    try:
        for start in range(0, len(split), batch_size):
            part = slice(start, start + batch_size)
            x = model.normalize(split.images[part].to(device).float().div_(255))
            labels = split.labels[part].to(device)
            landmarks = None if split.landmarks is None else split.landmarks[part].to(device)
            e_i = model.fpen_s2.image_encoder(x)
            x_s2 = model.fpen_s2(x, e_i)
            eprs = {
                "predicted": model.estimate_epr(x_s2, None),
                "teacher": model.teacher(x, labels, e_i if model.shares_image_encoder else None),
                "zero": torch.zeros_like(x_s2),
                "other_face_x_s2": model.estimate_epr(x_s2.roll(1, 0), None),
            }
            for probe, epr in eprs.items():
                preds[probe].append(model.decode(x, epr, landmarks, e_i)[0].argmax(1).cpu())
    finally:
        model.train(was_training)
    truth = split.labels.cpu().numpy()
    out = {}
    for probe, chunks in preds.items():
        cm = confusion_matrix(truth, torch.cat(chunks).numpy(), len(split.class_names))
        s = summarize(cm, split.class_names)
        out[probe] = {"accuracy": s["accuracy"], "mean_class_accuracy": s["mean_class_accuracy"]}
    return out


def steps_curve(
    model: nn.Module, split: SplitData, steps: list[int], *, batch_size: int = 256
) -> list[dict[str, float]]:
    """Fig. 6: accuracy with the reverse diffusion run for each number of iterations.

    The chain is re-spaced over the trained noise range (``set_inference_steps``); the
    model's own number of steps is restored afterwards.
    """
    if model.registry_name != "lrdif_s2" or getattr(model, "denoiser", None) is None:
        raise ValueError(
            f"--steps needs a stage-2 LRDif checkpoint with diffusion; this is a "
            f"{model.registry_name!r} model"
            + (" without diffusion (use_diffusion=False)" if model.registry_name == "lrdif_s2"
               else "")
        )
    trained = model.config.diffusion.timesteps
    rows = []
    try:
        for n in steps:
            model.set_inference_steps(n)
            s = evaluate_model(model, split, batch_size=batch_size).summary
            rows.append({"steps": n, "accuracy": s["accuracy"],
                         "mean_class_accuracy": s["mean_class_accuracy"]})
    finally:
        model.set_inference_steps(trained)
    return rows


def ablation_variants(path: Path = ABLATION_FILE) -> dict[str, dict[str, Any]]:
    """Table 5's stage-2 variants: name -> {"description", "overrides": [key=value ...]}."""
    try:
        variants = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the ablation variants ({exc})") from exc
    for name, v in variants.items():
        if set(v) != {"description", "overrides"}:
            raise ConfigError(f"{path}: variant {name} needs exactly description and overrides")
    return variants


def run_ablation(
    stage2_config: TrainConfig, out_dir: str | Path, *, test_split: str = "test",
    variants: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Table 5 from one stage-1 checkpoint (``stage2_config.model.init_from``).

    Each variant is ``stage2_config`` with its overrides, trained into ``out_dir/<name>``
    (an existing finished run there is reused), selected on validation, and measured on
    ``test_split``. Returns one row per method: S1 with ground truth first.
    """
    out = Path(out_dir)
    table = ablation_variants()
    names = variants or list(table)
    unknown = sorted(set(names) - set(table))
    if unknown:
        raise ConfigError(f"unknown ablation variant(s) {unknown}; known: {list(table)}")
    data = stage2_config.data
    stage1 = stage2_config.model.init_from
    s1 = cached_summary(stage1, data, test_split, device=stage2_config.device,
                      cache_dir=out / "landmarks")
    rows = [{"method": "LRDif_S1", "description": "stage 1 with the ground-truth label",
             "test": s1, "best_epoch": None}]
    for name in names:
        config = from_dict(
            TrainConfig, apply_overrides(to_dict(stage2_config), table[name]["overrides"]),
            where=f"{ABLATION_FILE} {name}",
        )
        run = out / name
        if not (run / "best.safetensors").is_file() or _unfinished(run, config):
            result = train(config, run, resume=(run / "resume.safetensors").is_file())
            best_epoch = result.best_epoch
        else:
            best_epoch = load_checkpoint(run / "best.safetensors").meta.get("epoch")
        summary = cached_summary(run / "best.safetensors", data, test_split,
                               device=config.device, cache_dir=out / "landmarks")
        rows.append({"method": f"LRDif_{name}", "description": table[name]["description"],
                     "test": summary, "best_epoch": best_epoch})
    return rows


def _unfinished(run: Path, config: TrainConfig) -> bool:
    last = run / "last.safetensors"
    return not last.is_file() or load_checkpoint(last).meta.get("epoch", 0) < config.epochs


def table5_markdown(rows: list[dict[str, Any]]) -> str:
    """Rows of :func:`run_ablation` as the paper's Table 5 (accuracy in %)."""
    lines = ["| method | variant | test acc. (%) | mean class acc. (%) | macro-F1 |",
             "| --- | --- | --- | --- | --- |"]
    for r in rows:
        t = r["test"]
        lines.append(f"| {r['method']} | {r['description']} | {100 * t['accuracy']:.2f} | "
                     f"{100 * t['mean_class_accuracy']:.2f} | {t['macro_f1']:.3f} |")
    return "\n".join(lines)


def subsample(labels: np.ndarray, limit: int, *, seed: int = 0) -> np.ndarray:
    """Indices of at most ``limit`` samples, drawn uniformly without replacement (t-SNE)."""
    if len(labels) <= limit:
        return np.arange(len(labels))
    return np.sort(np.random.default_rng(seed).choice(len(labels), limit, replace=False))


__all__ = [
    "Evaluation",
    "ablation_variants",
    "cached_summary",
    "checkpoint_data_section",
    "evaluate_checkpoint",
    "evaluate_model",
    "run_ablation",
    "steps_curve",
    "subsample",
    "table5_markdown",
]
