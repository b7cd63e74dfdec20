"""Ship a trained stage-2 checkpoint as lrdif's default model, with its model card.

    python benchmarks/ship_weights.py [--checkpoint CKPT] [--clean DIR] [--udc NAME=DIR ...]
        [--calibration-data NAME=DIR] [--test-flip] [--logit-adjustment] [--target FILE]
        [--card FILE]

(A ``backbone`` classifier checkpoint ships the same way as the ``fast`` model:
``--target src/lrdif/weights/fast_mobilenetv2_48.safetensors --card
src/lrdif/weights/FAST_MODEL_CARD.md``.)

Copies ``CKPT`` (default: the UDC-FERPlus LRDif stage 2 of ``benchmarks/ferplus.py``)
to ``src/lrdif/weights/lrdif_s2_udc_ferplus.safetensors`` for inference only (without
the frozen stage-1 teacher, which inference never calls: ``save_checkpoint(leave_out=
("teacher",))``), with its local paths made relative and a temperature fitted on the
validation split of the data it was trained on (``lrdif.calibration.fit_temperature``;
``meta["calibration"]``, applied by ``lrdif.Recognizer``; with ``--logit-adjustment``
after a post-hoc class-prior correction chosen on the same split). The file must hold at most
25 MB and give the training checkpoint's logits exactly. Then measures *that file* with
the project's evaluation code on the test split of clean FERPlus and of every UDC version
given (accuracy, per-class recall, ECE before and after the temperature), and writes
``src/lrdif/weights/MODEL_CARD.md`` from those measurements and the checkpoint's own
metadata (config, commit, data manifests). The policy is in ``src/lrdif/weights/README.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from lrdif.calibration import calibration_meta, calibration_summary, fit_temperature, nll
from lrdif.checkpoint import load_checkpoint, load_model, save_checkpoint
from lrdif.config import from_dict
from lrdif.data.splits import DataSection
from lrdif.evaluate.studies import (
    checkpoint_data_section,
    choose_logit_adjustment,
    evaluate_checkpoint,
    evaluate_model,
    load_eval_split,
    log_prior,
    training_prior,
)
from lrdif.io import atomic_write, file_sha256, portable_paths
from lrdif.predict.recognizer import DEFAULT_WEIGHTS
from lrdif.train.config import DistillSection
from lrdif.train.provenance import git_commit

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / "work" / "full"
MAX_BYTES = 25_000_000  # issue 13: at most 25 MB
LEAVE_OUT = ("teacher",)  # the frozen FPEN_S1: stage-2 inference never calls it
PAPER_UDC_FERPLUS = 84.89  # paper Table 3
SHORT = {"neutral": "ne", "happiness": "ha", "surprise": "su", "sadness": "sa", "anger": "an",
         "disgust": "di", "fear": "fe", "contempt": "co"}


def _relative(value: Any) -> Any:
    """``value`` with absolute paths made relative to the repository (or ``../`` beside
    it, as the shared data are; ``<external>/...`` elsewhere): lrdif.io.portable_paths."""
    return portable_paths(value, REPO)


def training_data(checkpoint: Path) -> DataSection:
    """The data section ``checkpoint`` was trained on (its validation split fits T)."""
    trained = load_checkpoint(checkpoint).meta.get("train_config", {}).get("data")
    if not trained:
        raise SystemExit(f"{checkpoint}: no train_config.data in its metadata; pass "
                         "--calibration-data NAME=DIR (a FERPlus-layout root)")
    return from_dict(DataSection, trained, where=f"{checkpoint} train_config.data")


SHIPPABLE = ("lrdif_s2", "backbone")  # the default model, and the fast one


def load_for_shipping(checkpoint: Path, test_flip: bool) -> torch.nn.Module:
    """The stage-2 (or backbone classifier) model of ``checkpoint``, with test-time flip
    averaging switched on when ``test_flip`` (chosen on validation; the stored config
    then says so)."""
    source = load_checkpoint(checkpoint)
    if source.model_name not in SHIPPABLE:
        raise SystemExit(f"{checkpoint}: a {source.model_name!r} checkpoint; shipped models "
                         f"are one of {SHIPPABLE}")
    model = load_model(checkpoint)
    if test_flip:
        model.config = dataclasses.replace(model.config, test_flip=True)
    return model


def fit_calibration(model: torch.nn.Module, data: DataSection, cache_dir: Path, *,
                    logit_adjustment: bool = False) -> dict[str, Any]:
    """Temperature scaling of ``model`` fitted on ``data``'s validation split. With
    ``logit_adjustment``, first post-hoc logit adjustment with tau chosen on the same
    split (``choose_logit_adjustment``, the training split's class prior): the model's
    ``config.logit_offset`` becomes -tau log(prior) and T is fitted on the adjusted logits;
    the choice is recorded under ``"logit_adjustment"``."""
    device = torch.device("cpu")
    val = evaluate_model(model, load_eval_split(data, data.val_split, model, device=device,
                                                cache_dir=cache_dir))
    labels, logits = val.split.labels.cpu(), val.logits
    adjustment = None
    if logit_adjustment:
        prior = training_prior(data)
        tau, curve = choose_logit_adjustment(val, prior)
        offset = tuple((-tau * log_prior(prior)).tolist()) if tau else ()
        model.config = dataclasses.replace(model.config, logit_offset=offset)
        if offset:
            logits = logits + torch.tensor(offset)
        adjustment = {"tau": tau, "prior": prior.tolist(), "valid_curve": curve}
    temperature = fit_temperature(logits, labels)
    roots = [data.root, *data.options.get("roots", [])] if data.dataset == "mixed" else [
        data.root]
    meta = calibration_meta(
        temperature, fitted_on=f"{data.dataset} {_relative(roots)} split {data.val_split}",
        num_samples=len(labels), nll_before=nll(logits, labels),
        nll_after=nll(logits, labels, temperature))
    return meta if adjustment is None else {**meta, "logit_adjustment": adjustment}


def ship(checkpoint: Path, model: torch.nn.Module, target: Path, calibration: dict[str, Any]
         ) -> dict[str, Any]:
    """Re-save ``model`` (loaded from ``checkpoint``) at ``target`` for inference (no
    teacher, relative paths in the metadata, ``calibration`` in ``meta``); it must give
    the same logits."""
    source = load_checkpoint(checkpoint)
    if hasattr(model.config, "image_encoder_kwargs"):  # E_I's source checkpoint, a path
        model.config = dataclasses.replace(
            model.config, image_encoder_kwargs=_relative(model.config.image_encoder_kwargs))
    meta = _relative(dict(source.meta))
    meta["shipped_from"] = _relative(str(checkpoint.resolve()))
    meta["calibration"] = calibration
    save_checkpoint(target, model, meta=meta, leave_out=_leave_out(model))
    check_same_predictions(model, load_model(target), target)
    size = target.stat().st_size
    if size > MAX_BYTES:
        target.unlink()
        raise SystemExit(f"{checkpoint}: {size / 1e6:.1f} MB without the teacher is over the "
                         f"{MAX_BYTES / 1e6:.0f} MB limit")
    return meta


def _leave_out(model: torch.nn.Module) -> tuple[str, ...]:
    """The parts of :data:`LEAVE_OUT` that ``model`` has (a classifier has no teacher)."""
    return tuple(p for p in LEAVE_OUT if hasattr(model, p))


def check_same_predictions(model: torch.nn.Module, shipped: torch.nn.Module, target: Path
                           ) -> None:
    """The shipped file must be the trained model: every kept tensor equal, and the same
    logits on a fixed random batch."""
    kept = shipped.state_dict()
    for key, value in model.state_dict().items():
        if not key.startswith(tuple(p + "." for p in _leave_out(model))) and not torch.equal(
                value, kept[key]):
            raise SystemExit(f"{target}: tensor {key} differs from the training checkpoint")
    c = model.config
    images = torch.rand(8, c.in_channels, c.image_size, c.image_size,
                        generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        if not torch.equal(model(images).logits, shipped(images).logits):
            raise SystemExit(f"{target}: its logits differ from the training checkpoint's")


def measure(target: Path, sets: dict[str, Path], temperature: float
            ) -> dict[str, dict[str, Any]]:
    """Test-split metrics of the shipped file on each data set (FERPlus layout), with ECE
    and NLL before and after ``temperature`` (``summary["calibration"]``)."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, root in sets.items():
            data = checkpoint_data_section(target, "ferplus", root)
            result = evaluate_checkpoint(target, data, "test", device="cpu",
                                         cache_dir=Path(tmp) / name)
            out[name] = result.summary
            out[name]["calibration"] = calibration_summary(
                result.logits, result.split.labels.cpu(), temperature)
    return out


def card(target: Path, meta: dict[str, Any], results: dict[str, dict[str, Any]],
         sets: dict[str, Path], command: str, made_by: str) -> str:
    ckpt = load_checkpoint(target)
    model = load_model(target)
    train = meta.get("train_config", {})
    cal = meta["calibration"]
    classes = list(ckpt.class_names)
    optim = train.get("optim", {})
    lines = [
        f"# Model card: {target.stem}", "",
        f"Generated by `{command}` on {datetime.date.today().isoformat()} (commit "
        f"{git_commit()}); every figure below was measured on this very file.", "",
        (_lrdif_line if ckpt.model_name == "lrdif_s2" else _backbone_line)(target, model,
                                                                           ckpt.config),
        f"- **Calibration**: probabilities are softmax(logits / T), T = "
        f"{cal['temperature']:.4f} fitted by NLL on {cal['fitted_on']} ({cal['num_samples']} "
        f"images; NLL {cal['nll_before']:.4f} -> {cal['nll_after']:.4f}); `lrdif.Recognizer` "
        "and `lrdif predict` apply it (each record's `confidence`)."
        + _adjustment_line(cal.get("logit_adjustment")),
        f"- **Classes** (FERPlus majority protocol): {', '.join(classes)}.",
        "- **Training data**: FERPlus labels (Microsoft, MIT licence) on the FER2013 images "
        "(ICML 2013 representation-learning challenge; **research use only**): "
        + _data_line(meta) + f" Trained on FER2013Train "
        f"({meta.get('dataset', {}).get('num_train', '?')} images), selected and calibrated on "
        "FER2013Valid; the test split was never used for a choice.",
        f"- **Recipe**: `{train.get('model', {}).get('name')}`"
        + (f" from stage-1 checkpoint `{train['model']['init_from']}`"
           if train.get("model", {}).get("init_from") else "")
        + (f", stage-2 options `{json.dumps(train['model']['stage2'], sort_keys=True)}`"
           if train.get("model", {}).get("stage2") else "")
        + (f", options `{json.dumps(train['model']['options'], sort_keys=True)}`"
           if ckpt.model_name != "lrdif_s2" and train.get("model", {}).get("options") else "")
        + _distill_words(train.get("distill", {}), meta.get("distill_teacher_sha256"))
        + f"; {train.get('epochs')} epochs (best on validation: epoch {meta.get('epoch')}), batch "
        f"{train.get('batch_size')}, Adam lr {optim.get('lr')} ({optim.get('schedule')}), "
        f"weight decay {optim.get('weight_decay')}, seed {train.get('seed')}; trained at commit "
        f"{meta.get('git_commit')}. The commands that made it: {made_by}.",
        "- **Results** (test split, 8-class majority protocol, `lrdif evaluate`'s metrics):", "",
        "  | test set | images | accuracy | mean class acc. | macro F1 | recall per class ("
        + " / ".join(SHORT.get(c, c) for c in classes) + ") | ECE T=1 | ECE T |",
        "  | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for name, s in results.items():
        recall = " / ".join(f"{100 * s['per_class'][c]['recall']:.0f}" for c in classes)
        lines.append(f"  | {name} (`{_relative(str(sets[name]))}`) | {s['num_samples']} | "
                     f"{100 * s['accuracy']:.2f}% | {100 * s['mean_class_accuracy']:.2f}% | "
                     f"{s['macro_f1']:.3f} | {recall} | "
                     f"{100 * s['calibration']['ece_before']:.2f}% | "
                     f"{100 * s['calibration']['ece_after']:.2f}% |")
    lines += [
        "", "- **Intended use**: research on expression recognition through under-display "
        "cameras, and demonstrations. Not for decisions about people (hiring, policing, "
        "health, education), nor for inferring what someone feels: a facial expression is "
        "not an emotion.",
        "- **Known limits**:",
        *_gap_line(results),
        "  - trained on 48x48 greyscale crops: colour is discarded, fine detail is lost, and "
        "crops must frame the face as FER2013's do (the Haar detector's boxes with lrdif's "
        "margin do; docs/predict.md);",
        "  - FER2013 is web-scraped: it over-represents some ages, skin tones and posed "
        "expressions and under-represents others; accuracy per group is unmeasured;",
        "  - contempt and disgust have about a hundred training images each: their "
        "probabilities are unreliable (see their recall above);",
        "  - the UDC degradation is simulated (a physical PSF and sensor-noise model), not "
        "captured through a real panel; real displays differ;",
        "  - frontal faces only (the Haar cascade finds few profiles).",
    ]
    return "\n".join(lines) + "\n"


def _lrdif_line(target: Path, model: torch.nn.Module, config: dict[str, Any]) -> str:
    """The card's model line for LRDif stage 2."""
    used = {id(p): p for m in (model.fpen_s2, model.denoiser, model.udcformer)
            if m is not None for p in m.parameters()}  # a shared frozen E_I counts once
    inference = sum(p.numel() for p in used.values())
    teacher = sum(p.numel() for p in model.teacher.parameters() if id(p) not in used)
    encoder = config.get("image_encoder")
    return (
        f"- **Model**: LRDif stage 2 (`MODELS[\"lrdif_s2\"]`, paper Sec. 3.3): FPEN_S2, a "
        f"{config['diffusion']['timesteps']}-step reverse diffusion that estimates the EPR, "
        "and the UDCformer (DTnetwork, learned-landmark DILnetwork, fusion transformer). "
        f"Input `(B, {config['in_channels']}, {config['image_size']}, "
        f"{config['image_size']})` in [0, 1]. Image encoder E_I: `{encoder}`"
        + (" (the frozen trunk of a ResNet-18 trained on the same training split, "
           "docs/model.md)" if encoder == "resnet18" else "")
        + (" (MobileNetV2 with ImageNet weights at "
           f"{config['image_encoder_kwargs'].get('input_size', 64)}-px input, fine-tuned as "
           "the `backbone` classifier, then trained on inside LRDif at a tenth of the "
           "learning rate)" if encoder == "backbone" else "")
        + ("; E_I's own classifier is added to the logits (`image_head`)"
           if config.get("image_head") else "")
        + ("; E_I(x) is also a token of the fusion transformer (`image_token`)"
           if config.get("image_token") else "")
        + ("; the logits average each face and its mirror (`test_flip`)"
           if config.get("test_flip") else "")
        + f". {inference / 1e6:.2f} M parameters, all used at inference; the "
        f"{teacher / 1e6:.2f} M of the frozen stage-1 teacher (training only) are left out, "
        f"so this file serves inference, not further training. File: "
        f"{target.stat().st_size / 1e6:.1f} MB, SHA-256 `{file_sha256(target)}`.")


def _backbone_line(target: Path, model: torch.nn.Module, config: dict[str, Any]) -> str:
    """The card's model line for a backbone classifier (the ``fast`` model)."""
    params = sum(p.numel() for p in model.parameters())
    return (
        f"- **Model**: the `{config['backbone']}` backbone classifier "
        "(`MODELS[\"backbone\"]`, docs/model.md): ImageNet weights fine-tuned as a "
        f"classifier, input `(B, {config['in_channels']}, {config['image_size']}, "
        f"{config['image_size']})` in [0, 1] seen at {config['input_size']}x"
        f"{config['input_size']}"
        + ("; the logits average each face and its mirror (`test_flip`)"
           if config.get("test_flip") else "; one pass per face (no mirror averaging)")
        + f". Not LRDif: no prior, no UDCformer; the cheap model for bulk crops. "
        f"{params / 1e6:.2f} M parameters. File: {target.stat().st_size / 1e6:.1f} MB, "
        f"SHA-256 `{file_sha256(target)}`.")


def _distill_words(distill: dict[str, Any], sha256: str | list[str] | None) -> str:
    """The recipe's clause on its clean-view teacher, one checkpoint or an ensemble
    (empty without distillation)."""
    paths = from_dict(DistillSection, distill, where="train_config.distill").teacher_paths()
    if not paths:
        return ""
    shas = [sha256] if isinstance(sha256, str) else sha256 or ["?"] * len(paths)
    members = ", ".join(f"`{p}` (SHA-256 {h[:12]})" for p, h in zip(paths, shas, strict=True))
    if len(paths) > 1:
        members = (f"an ensemble clean-view teacher (the mean probabilities of {len(paths)} "
                   f"members: {members})")
    else:
        members = f"the clean-view teacher {members}"
    return f", distilled from {members} with weight {distill.get('weight')} (lrdif.train.distill)"


def _adjustment_line(adjustment: dict[str, Any] | None) -> str:
    """The card's sentence on post-hoc logit adjustment (empty when not chosen)."""
    if adjustment is None:
        return ""
    if not adjustment["tau"]:
        return (" Post-hoc logit adjustment was tried and not kept: no tau raised "
                "validation mean class accuracy within 0.5 points of its accuracy.")
    curve = {r["tau"]: r for r in adjustment["valid_curve"]}
    at, zero = curve[adjustment["tau"]], curve[0.0]
    return (f" Before it, the logits get post-hoc logit adjustment, - tau log(training "
            f"prior) with tau = {adjustment['tau']} chosen on the same validation split "
            f"(mean class accuracy {100 * zero['mean_class_accuracy']:.2f} -> "
            f"{100 * at['mean_class_accuracy']:.2f}%, accuracy {100 * zero['accuracy']:.2f} "
            f"-> {100 * at['accuracy']:.2f}%; `LRDifConfig.logit_offset`, in the logits "
            "and the ONNX export).")


def _simulation(manifest: dict[str, Any] | None) -> str:
    """One UDC set's settings from its ``lrdif synthesize`` manifest; "clean" without one."""
    if not manifest:
        return "clean"
    settings = manifest.get("settings", {})
    sim, physics = settings.get("simulator", {}), settings.get("physics", {})
    return (f"display `{sim.get('display')}`, severity {sim.get('severity')} = "
            f"{physics.get('snr_db_white')} dB on white, face width {sim.get('face_px')} "
            f"sensor pixels, seed {sim.get('seed')}")


def _data_line(meta: dict[str, Any]) -> str:
    """The training data: each root of a mixed run, or the one (UDC) set."""
    manifests = meta.get("udc_manifests")
    if manifests:
        parts = "; ".join(f"`{root}`: {_simulation(m)}" for root, m in manifests.items())
        return f"clean and `lrdif synthesize` UDC versions together ({parts})."
    return f"degraded by `lrdif synthesize` ({_simulation(meta.get('udc_manifest'))})."


def _gap_line(results: dict[str, dict[str, Any]]) -> list[str]:
    """The distance to the paper's UDC-FERPlus accuracy, when a toled set was measured."""
    udc = [s for name, s in results.items() if "toled" in name]
    if not udc:
        return []
    gap = PAPER_UDC_FERPLUS - 100 * udc[0]["accuracy"]
    if gap <= 0:
        return [f"  - at or above the paper's {PAPER_UDC_FERPLUS}% on UDC-FERPlus (T-OLED);"]
    return [f"  - {gap:.1f} points below the paper's {PAPER_UDC_FERPLUS}% on UDC-FERPlus: "
            "trained on 2 CPU cores for a few epochs (benchmarks/results/ferplus.md, "
            "levers.md and training_status.md measure what was tried);"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path,
                        default=WORK / "udc_toled" / "ablation" / "S2-V3" / "best.safetensors")
    parser.add_argument("--clean", type=Path, default=REPO.parent / "shared" / "data" / "ferplus")
    parser.add_argument("--udc", nargs="*", metavar="NAME=DIR",
                        default=[f"UDC-FERPlus toled={WORK / 'udc-ferplus-toled'}"],
                        help="UDC versions of FERPlus to measure on (name=folder)")
    parser.add_argument("--target", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--card", type=Path, default=None,
                        help="the model card to write (default: MODEL_CARD.md beside --target)")
    parser.add_argument("--made-by", default="`benchmarks/ferplus.py` (see "
                        "benchmarks/results/ferplus.md for the run, its baselines and "
                        "learning curves)", help="the training commands, for the card")
    parser.add_argument("--calibration-data", metavar="NAME=DIR",
                        help="fit T on this FERPlus-layout root's validation split (default: "
                             "the checkpoint's own training data, e.g. the clean + UDC mix)")
    parser.add_argument("--test-flip", action="store_true",
                        help="ship with test-time flip averaging (LRDifConfig.test_flip)")
    parser.add_argument("--logit-adjustment", action="store_true",
                        help="ship with post-hoc logit adjustment, tau chosen on validation "
                             "(LRDifConfig.logit_offset)")
    args = parser.parse_args()
    torch.manual_seed(0)
    sets = {"clean FERPlus": args.clean}
    for item in args.udc:
        name, _, root = item.partition("=")
        if not root:
            raise SystemExit(f"--udc {item!r}: expected NAME=DIR")
        sets[name] = Path(root)
    target = args.target
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:  # nothing half-shipped
        staged = Path(tmp) / target.name
        if args.calibration_data:
            data = checkpoint_data_section(args.checkpoint, "ferplus",
                                           args.calibration_data.partition("=")[2]
                                           or args.calibration_data)
        else:
            data = training_data(args.checkpoint)
        model = load_for_shipping(args.checkpoint, args.test_flip)
        calibration = fit_calibration(model, data, Path(tmp) / "calibration",
                                      logit_adjustment=args.logit_adjustment)
        meta = ship(args.checkpoint, model, staged, calibration)
        results = measure(staged, sets, calibration["temperature"])
        command = "python benchmarks/ship_weights.py " + " ".join(sys.argv[1:])
        text = card(staged, meta, results, sets, command.strip(), args.made_by)
        shutil.move(staged, target)
    with atomic_write(args.card or target.parent / "MODEL_CARD.md", "w") as handle:
        handle.write(text)
    print(text)


if __name__ == "__main__":
    main()
