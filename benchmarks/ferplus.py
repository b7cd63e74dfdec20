"""The FERPlus benchmark of issue 4: clean FERPlus and UDC-FERPlus (T-OLED), every method.

    python benchmarks/ferplus.py throughput [--steps 30]      # images/s + compute peak
    python benchmarks/ferplus.py full [--recipe NAME] [--smoke N] [--sets clean udc_toled]
    python benchmarks/ferplus.py report                        # rebuild from finished runs

``full``: synthesises UDC-FERPlus from the clean FERPlus (``--data``: ``$LRDIF_FERPLUS``,
else ``../shared/data/ferplus``) with ``lrdif synthesize``, trains the recipe's image-encoder
run (a baseline row too), LRDif stage 1, LRDif stage 2 and stage 2 without diffusion
(Table 5 S2-V1) on both, selects every run on the validation split, measures the test
split (8-class majority protocol), runs the Table 5 ablation and the Fig. 6 iterations
study on UDC-FERPlus, and writes ``benchmarks/results/ferplus.md`` and ``ferplus.json``.
Every finished run is reused and every killed one resumed, so re-running the command
continues where it stopped. A machine without the run folders continues from the committed
``ferplus_detail.json`` of ``--results``: ``--missing-rows-only`` trains only the rows it
lacks (a new ablation row without retraining the rest).

The recipe is three config files, ``--recipe NAME`` naming ``NAME_backbone`` (or
``NAME_resnet18``), ``NAME_s1`` and ``NAME_s2`` (packaged names or files in
``src/lrdif/configs``): ``pretrained`` (the default: ``pretrained_*.yaml``, E_I from the
ImageNet MobileNetV2 fine-tuned as the ``backbone`` baseline), ``cpu`` (``cpu_*.yaml``,
E_I the frozen trunk of a ResNet-18 trained from scratch) or ``bench_ferplus`` (the first
benchmark's runs: ``bench_ferplus_*.yaml``). The script only wires them together:
``data.root`` per data set, stage 1's E_I checkpoint and stage 2's ``model.init_from``;
Table 5's variants are overrides of the stage-2 config (``configs/studies/table5.yaml``).

``--smoke N`` runs the same pipeline on the first N images of each split for one epoch
(a check of the script, not a result); its outputs go to ``benchmarks/work/smoke``.
``--equal-time`` adds the backbone given LRDif's whole training time, ``--landmarks
mediapipe`` LRDif with detected landmarks (caches from ``benchmarks/landmark_rate.py``).
It is not part of CI.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lrdif.checkpoint import load_checkpoint, load_model
from lrdif.config import flatten, load_config, packaged_config_names, to_dict
from lrdif.evaluate import plots
from lrdif.evaluate.studies import (
    ablation_variants,
    cached_summary,
    epr_diagnostics,
    evaluate_checkpoint,
    logit_adjustment,
    paired_bootstrap,
    run_ablation,
    steps_curve,
    table5_markdown,
    training_prior,
)
from lrdif.io import atomic_write, atomic_write_json, file_sha256, portable_path, tree_sha256
from lrdif.train.config import TrainConfig
from lrdif.train.loop import train
from lrdif.train.provenance import git_commit

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
SOURCE = Path(os.environ.get("LRDIF_FERPLUS") or REPO.parent / "shared" / "data" / "ferplus")
FERPLUS_DIRS = ("FER2013Train", "FER2013Valid", "FER2013Test")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), load average {load:.1f} at start")


def compute_peak(device: str = "cpu", dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s this device reaches on dense work: on CPU the faster of a 2048^2 ``torch.mm``
    (2 n^3 per product) and a 3x3 convolution in channels_last (128 channels, 24x24, batch
    64; oneDNN), on GPU an 8192^2 ``torch.mm``. Both count on CPU because MKL's sgemm
    reached less than half of oneDNN's rate on this project's AMD machine (106 against 243
    to 265 GFLOP/s on one thread), so a torch.mm alone understates what convolutions reach."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def rate(work: Any, flops: float, repeats: int) -> float:  # the fastest call: a peak
        work()
        sync()
        fastest = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            work()
            sync()
            fastest = min(fastest, time.perf_counter() - start)
        return flops / fastest

    n = 2048 if device == "cpu" else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    peak = rate(lambda: a @ b, 2 * n**3, 10 if device == "cpu" else 20)
    if device == "cpu":
        conv = torch.nn.Conv2d(128, 128, 3, padding=1, bias=False).to(
            dtype=dtype, memory_format=torch.channels_last)
        x = torch.rand(64, 128, 24, 24, dtype=dtype).to(memory_format=torch.channels_last)
        with torch.no_grad():
            peak = max(peak, rate(lambda: conv(x), 2 * 64 * 24 * 24 * 128 * 128 * 9, 10))
    return peak


def train_flops_per_image(model: torch.nn.Module, size: int) -> float:
    """Training FLOPs of one image: 3x the forward count of FlopCounterMode (backward ~ 2x
    forward), 1x for a frozen E_I (no backward). The backward is not counted directly
    because torch's counter ignores the groups of a grouped convolution's backward,
    overcounting depthwise convs ~10x."""
    from torch.utils.flop_counter import FlopCounterMode

    model.train()
    x = torch.rand(16, model.config.in_channels, size, size)
    y = torch.arange(16) % len(model.class_names)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, labels=y)
    total = counter.get_total_flops()
    fpen = getattr(model, "fpen_s2", None) or getattr(model, "fpen_s1", None)
    frozen = 0
    if fpen is not None and not any(p.requires_grad for p in fpen.image_encoder.parameters()):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            fpen.image_encoder(model.normalize(x))
        frozen = counter.get_total_flops()
    return (3 * (total - frozen) + frozen) / 16


def _config(name: str, overrides: list[str]) -> TrainConfig:
    return load_config(TrainConfig, name, overrides)


def run_train(config: TrainConfig, out: Path) -> Path:
    """Train (or resume, or reuse a finished run) and return its best checkpoint."""
    best, last = out / "best.safetensors", out / "last.safetensors"
    if last.is_file() and load_checkpoint(last).meta.get("epoch", 0) >= config.epochs:
        return best
    train(config, out, resume=(out / "resume.safetensors").is_file())
    return best


def adopt_run(checkpoint: Path, config: TrainConfig, out: Path) -> Path:
    """A committed best checkpoint (``benchmarks/checkpoints``) as the finished run ``out`` of
    ``config``: every setting the file records must equal the config's (``data.root``
    aside; settings newer than the file are not in it). Copied into ``out`` with its
    ``NAME.metrics.jsonl`` when there is one."""
    trained = flatten(load_checkpoint(checkpoint).meta.get("train_config") or {})
    wanted = flatten(json.loads(json.dumps(to_dict(config))))  # tuples as lists, as stored
    differ = sorted(k for k, v in trained.items() if k != "data.root" and wanted.get(k) != v)
    if not trained or differ:
        raise SystemExit(f"{checkpoint}: not a run of the config of {out} "
                         f"(settings that differ: {differ or 'no train_config recorded'})")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checkpoint, out / "best.safetensors")
    metrics = checkpoint.with_name(checkpoint.name.replace(".safetensors", ".metrics.jsonl"))
    if metrics.is_file():
        shutil.copyfile(metrics, out / "metrics.jsonl")
    return out / "best.safetensors"


# --------------------------------------------------------------------------- throughput


def throughput(args: argparse.Namespace) -> None:
    work = HERE / "work" / "throughput"
    shutil.rmtree(work, ignore_errors=True)
    data = args.data
    if args.synthetic:  # a machine without FERPlus (the GPU machine): same layout and size
        from lrdif.data.toy import make_ferplus

        sizes = {"train": args.synthetic, "valid": 512, "test": 16}
        data = make_ferplus(work / "synthetic-ferplus", sizes, size=48)
    peak = compute_peak(args.device, torch.bfloat16 if args.bf16 else torch.float32)
    limit = args.steps * 64
    rows = []
    overrides = [f"data.root={data}", "epochs=1", f"limit_train={limit}",
                 "save_every_steps=0", f"device={args.device}", f"bf16={str(args.bf16).lower()}",
                 *args.override]
    for method, config_name in (("resnet18", "cpu_resnet18"), ("lrdif_s1", "cpu_s1"),
                                ("lrdif_s2", "cpu_s2")):
        extra = {
            "resnet18": [],
            "lrdif_s1": ["model.options.image_encoder_kwargs.checkpoint="
                         f"{work / 'resnet18' / 'best.safetensors'}"],
            "lrdif_s2": [f"model.init_from={work / 'lrdif_s1' / 'best.safetensors'}"],
        }[method]
        own = [o for o in overrides if not (method != "lrdif_s1" and o.startswith("model."))]
        config = _config(config_name, own + extra)
        result = train(config, work / method)
        rate = result.history[-1]["train_images_per_s"]
        model = load_model(work / method / "best.safetensors")
        flops = train_flops_per_image(model, 48)
        rows.append({"method": method, "config": config_name, "images_per_s": rate,
                     "train_gflop_per_image": flops / 1e9,
                     "fraction_of_peak": rate * flops / peak,
                     "epoch_time_s_full_ferplus": 25045 / rate})
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else machine()
    report = {"date": datetime.date.today().isoformat(), "commit": git_commit(),
              "machine": device, "peak_gflops": peak / 1e9, "bf16": args.bf16,
              "steps": args.steps, "batch_size": 64, "rows": rows,
              "command": "python benchmarks/ferplus.py throughput " + " ".join(sys.argv[2:])}
    results = args.results or RESULTS
    atomic_write_json(results / "throughput.json", report)
    lines = [
        f"# Training throughput on FERPlus 48x48 ({args.device})", "",
        f"- Command: `{report['command']}`",
        f"- Date: {report['date']}, commit {report['commit']}",
        f"- Machine: {report['machine']}",
        f"- Compute peak ({'bf16' if args.bf16 else 'float32'}, same run; "
        f"`compute_peak`): {report['peak_gflops']:.1f} GFLOP/s",
        f"- Each model: the real training loop (`lrdif.train.loop.train`, augmentation, "
        f"channels_last, Adam) for {args.steps} steps of batch 64 on FERPlus train "
        "(first images); images/s excludes validation.", "",
        "| model | config | train images/s | train GFLOP/image (3x forward; 1x frozen E_I) | "
        "fraction of peak | implied FERPlus epoch (25,045 images) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['method']} | {r['config']} | {r['images_per_s']:.1f} | "
                     f"{r['train_gflop_per_image']:.2f} | {100 * r['fraction_of_peak']:.1f}% | "
                     f"{r['epoch_time_s_full_ferplus'] / 60:.1f} min |")
    with atomic_write(results / "throughput.md", "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


# --------------------------------------------------------------------------- full


def subset_copy(src: Path, dst: Path, n: int) -> Path:
    """The first ``n`` rows of each FERPlus split (labels and images): the smoke data."""
    if (dst / FERPLUS_DIRS[-1] / "label.csv").is_file():
        return dst
    for folder in FERPLUS_DIRS:
        rows = (src / folder / "label.csv").read_text().splitlines()[:n]
        (dst / folder).mkdir(parents=True, exist_ok=True)
        for row in rows:
            name = row.split(",", 1)[0]
            shutil.copyfile(src / folder / name, dst / folder / name)
        (dst / folder / "label.csv").write_text("\n".join(rows) + "\n")
    return dst


def synthesize(src: Path, dst: Path) -> Path:
    """UDC-FERPlus (T-OLED, seed 0) by the project's own command; resumable."""
    subprocess.run(
        [sys.executable, "-m", "lrdif", "synthesize", "--dataset", "ferplus", "--src", str(src),
         "--dst", str(dst), "--display", "toled", "--seed", "0"],
        check=True,
    )
    return dst


SETS = ("clean", "udc_toled")
METHODS = ("resnet18", "backbone", "backbone_logit_adjusted", "backbone_equal_time",
           "lrdif_s1_label_free", "lrdif_s2_no_dm", "lrdif_s2", "lrdif_s2_logit_adjusted",
           "lrdif_s2_detected_landmarks")
DETECTED = "detected_landmarks"  # run folder of the landmark ablation (``--landmarks``)


def _summary_path(work: Path, name: str) -> Path:
    return work / name / "summary.json"


def load_summary(work: Path, results: Path, name: str) -> dict[str, Any]:
    """Data set ``name``'s summary: the work folder's (runs in progress), else the one
    committed in ``results/ferplus_detail.json`` (a machine without the earlier run folders
    continues from the reported rows), else empty. A committed summary's clock is set back
    by its wall time, so ``wall_s`` keeps counting from it."""
    path = _summary_path(work, name)
    if path.is_file():
        return json.loads(path.read_text())
    detail = results / "ferplus_detail.json"
    committed = json.loads(detail.read_text()).get(name) if detail.is_file() else None
    if not committed:
        return {}
    return {**committed, "started": time.time() - committed.get("wall_s", 0.0)}


def _save(work: Path, name: str, summary: dict[str, Any]) -> None:
    """Write ``summary``, keeping the commands of processes that wrote it meanwhile
    (parallel ``--table5`` processes share one data set's summary)."""
    path = _summary_path(work, name)
    if path.is_file():
        on_disk = json.loads(path.read_text()).get("commands", [])
        summary["commands"] = [*on_disk, *(c for c in summary["commands"] if c not in on_disk)]
    atomic_write_json(path, summary)


def adjusted_summary(best: Path, data: Any, out: Path, cache: dict[str, Any],
                     method: str) -> dict[str, Any]:
    """Test metrics of ``best`` with post-hoc logit adjustment (tau chosen on valid),
    remembered in ``cache[method]`` by the checkpoint's SHA-256."""
    sha = file_sha256(best)
    if cache.get(method, {}).get("sha256") != sha:
        val = evaluate_checkpoint(best, data, "valid", cache_dir=out / "landmarks")
        test = evaluate_checkpoint(best, data, "test", cache_dir=out / "landmarks")
        result = logit_adjustment(val, test, training_prior(data))
        cache[method] = {"sha256": sha, "tau": result["tau"],
                         "valid_curve": result["valid_curve"], "test": result["test"]}
    return {**cache[method]["test"], "tau": cache[method]["tau"]}


def seed_landmark_caches(work: Path, name: str, run_dirs: list[Path]) -> None:
    """Copy the detector's landmark caches of data set ``name`` (``work/landmarks/NAME/
    SPLIT.npz``, written by ``benchmarks/landmark_rate.py`` in the landmark environment,
    where MediaPipe runs) into each run folder's ``landmarks/``, where training and
    evaluation look for them; each cache is checked against the images it is read for."""
    source = work / "landmarks" / name
    missing = [s for s in ("train", "valid", "test") if not (source / f"{s}.npz").is_file()]
    if missing:
        raise SystemExit(
            f"{source}: no landmark cache for split(s) {', '.join(missing)}; compute them in "
            "the landmark environment first: OMP_NUM_THREADS=1 PYTHONPATH=src "
            ".venv-landmarks/bin/python benchmarks/landmark_rate.py --udc "
            f"{work / 'udc-ferplus-toled'} --cache {work / 'landmarks'} (see .ci/run)")
    for run_dir in run_dirs:
        (run_dir / "landmarks").mkdir(parents=True, exist_ok=True)
        for split in ("train", "valid", "test"):
            target = run_dir / "landmarks" / f"{split}.npz"
            if not target.is_file():
                shutil.copyfile(source / f"{split}.npz", target)


def encoder_run(recipe: str) -> str:
    """The run whose checkpoint stage 1's E_I starts from, also a baseline row: the
    recipe's ``backbone`` (a pretrained classifier) if it has one, else its ``resnet18``."""
    return "backbone" if f"{recipe}_backbone" in packaged_config_names() else "resnet18"


def scratch_baseline(recipe: str) -> bool:
    """Whether the recipe trains a from-scratch ``resnet18`` row beside a pretrained
    encoder run (its config ``NAME_resnet18`` exists and is not already the encoder)."""
    return encoder_run(recipe) != "resnet18" and f"{recipe}_resnet18" in packaged_config_names()


@dataclass
class SetRuns:
    """One data set's runs: where they go (``out`` = ``work/name``), the overrides every
    run on it gets (``common``) and each stage's own (``extra``), and the summary they
    fill, saved after each row group (``save``) so a partial run reports."""

    name: str
    work: Path
    results: Path
    args: argparse.Namespace
    summary: dict[str, Any]
    common: list[str]
    extra: dict[str, list[str]]

    @property
    def out(self) -> Path:
        return self.work / self.name

    def overrides(self, stage: str, *more: str) -> list[str]:
        """A stage's overrides: the common ones, ``more``, then the stage's extra ones."""
        return [*self.common, *more, *self.extra.get(stage, [])]

    def save(self) -> None:
        _save(self.work, self.name, self.summary)


def lrdif_rows(runs: SetRuns, s1_config: TrainConfig, s2_recipe: str, encoder: str,
               encoder_best: Path) -> None:
    """LRDif's rows on one data set: stage 1, stage 2 with and without diffusion (and on
    UDC-FERPlus the other Table 5 variants and Fig. 6), the EPR diagnostics, the paired
    differences to the encoder run and post-hoc logit adjustment; into ``runs.summary``."""
    name, out, results, summary = runs.name, runs.out, runs.results, runs.summary
    methods = summary["methods"]
    s1 = run_train(s1_config, out / "lrdif_s1")
    s2_config = _config(s2_recipe, runs.overrides("s2", f"model.init_from={s1}"))
    rows = run_ablation(s2_config, out / "ablation", variants=["S2-V3", "S2-V1"])
    methods["lrdif_s1_with_label"] = rows[0]["test"]
    if load_checkpoint(s1).config.get("label_dropout", 0) > 0:  # the path stage 2 inherits
        methods["lrdif_s1_label_free"] = cached_summary(s1, s2_config.data, "test",
                                                        cache_dir=out / "landmarks",
                                                        label_free=True)
    methods["lrdif_s2"], methods["lrdif_s2_no_dm"] = rows[1]["test"], rows[2]["test"]
    plots.plot_confusion_matrix(methods["lrdif_s2"]["confusion_matrix"],
                                methods["lrdif_s2"]["class_names"],
                                results / f"confusion_lrdif_s2_{name}.png",
                                title=f"LRDif stage 2, {name} test")
    # EPR diagnostics and (UDC) Fig. 6, measured again only for another S2-V3 checkpoint
    s2 = out / "ablation" / "S2-V3" / "best.safetensors"
    sha = file_sha256(s2)
    if summary.get("s2_sha256") != sha:
        ev = evaluate_checkpoint(s2, s2_config.data, "test", cache_dir=out / "landmarks")
        summary["epr_diagnostics"] = epr_diagnostics(ev.model, ev.split)
        if name == "udc_toled":
            summary["fig6"] = steps_curve(ev.model, ev.split, [1, 2, 4, 8, 16])
        summary["s2_sha256"] = sha
    if name == "udc_toled":
        plots.plot_steps_curve([r["steps"] for r in summary["fig6"]],
                               [r["accuracy"] for r in summary["fig6"]],
                               results / "fig6_steps.png", trained_steps=4)
    runs.save()
    if name == "udc_toled":  # Table 5: the remaining variants, from the same stage 1
        variants = runs.args.table5 if runs.args.smoke is None else ["S2-V1", "S2-V3"]
        summary["table5"] = run_ablation(s2_config, out / "ablation", variants=variants)
        runs.save()
    # differences that matter, with 95% paired-bootstrap intervals on the test images
    pairs = {"lrdif_s2 - lrdif_s2_no_dm": (s2, out / "ablation" / "S2-V1" / "best.safetensors"),
             f"lrdif_s2 - {encoder}": (s2, encoder_best)}
    cache = summary.setdefault("differences", {})
    for label, (a, b) in pairs.items():
        key = [file_sha256(a), file_sha256(b)]
        if cache.get(label, {}).get("sha256") != key:
            ev_a, ev_b = (evaluate_checkpoint(c, s2_config.data, "test",
                                              cache_dir=out / "landmarks") for c in (a, b))
            cache[label] = {"sha256": key, **paired_bootstrap(ev_a, ev_b)}
    runs.save()
    # class imbalance: post-hoc logit adjustment, its strength chosen on valid
    for method, best in {encoder: encoder_best, "lrdif_s2": s2}.items():
        methods[f"{method}_logit_adjusted"] = adjusted_summary(
            best, s2_config.data, out, summary.setdefault("logit_adjusted", {}), method)
    runs.save()


def run_set(name: str, root: Path, work: Path, results: Path, args: argparse.Namespace) -> None:
    """Every run on one data set, in the order the report needs them; the summary
    (``work/NAME/summary.json``) is rewritten after each, so a partial run reports."""
    summary = load_summary(work, results, name)
    # committed results carry no machine path: the root relative to the repository (or
    # beside it), and a checksum of the data set's label and manifest files
    data_sha256 = tree_sha256(root)
    if args.missing_rows_only and summary.get("data_sha256", data_sha256) != data_sha256:
        raise SystemExit(f"{root}: not the data set the reported {name} rows were measured on "
                         "(label and manifest checksums differ); run without "
                         "--missing-rows-only")
    summary.update(root=portable_path(root, REPO), data_sha256=data_sha256,
                   started=summary.get("started") or time.time())
    summary.setdefault("commands", [])
    command = "python benchmarks/ferplus.py " + " ".join(sys.argv[1:])
    if command not in summary["commands"]:
        summary["commands"].append(command)
    # --smoke: one epoch of each, no step checkpoints (a check of the script); per-stage
    # overrides: benchmarks/gpu_recipe.py (epochs, batch, device options)
    smoke = ["epochs=1", "save_every_steps=0"] if args.smoke is not None else []
    runs = SetRuns(name, work, results, args, summary, common=[*smoke, f"data.root={root}"],
                   extra=getattr(args, "stage_overrides", None) or {})
    out = runs.out
    encoder = encoder_run(args.recipe)
    recipe = {stage: f"{args.recipe}_{stage}" for stage in (encoder, "s1", "s2")}
    methods = summary.setdefault("methods", {})

    def missing(method: str) -> bool:  # --missing-rows-only trains a row group once
        return not (args.missing_rows_only and method in methods)

    encoder_config = _config(recipe[encoder], runs.overrides("encoder"))
    given = dict(args.encoder_checkpoint).get(name)
    encoder_best = (adopt_run(given, encoder_config, out / encoder) if given
                    else run_train(encoder_config, out / encoder))
    methods[encoder] = cached_summary(encoder_best, encoder_config.data, "test",
                                      cache_dir=out / "landmarks")
    runs.save()
    if scratch_baseline(args.recipe) and missing("resnet18"):
        # the from-scratch baseline of the paper's tables, beside the pretrained encoder
        scratch_config = _config(f"{args.recipe}_resnet18", runs.overrides("resnet18"))
        methods["resnet18"] = cached_summary(run_train(scratch_config, out / "resnet18"),
                                             scratch_config.data, "test",
                                             cache_dir=out / "landmarks")
        runs.save()

    encoder_ckpt = f"model.options.image_encoder_kwargs.checkpoint={encoder_best}"
    reported = {r["method"].removeprefix("LRDif_") for r in summary.get("table5", [])}
    if missing("lrdif_s2") or (name == "udc_toled" and not set(args.table5) <= reported):
        lrdif_rows(runs, _config(recipe["s1"], runs.overrides("s1", encoder_ckpt)),
                   recipe["s2"], encoder, encoder_best)
    if args.landmarks and missing("lrdif_s2_detected_landmarks"):
        # the landmark ablation: DILnetwork queries from a detector
        lm = f"data.landmarks={args.landmarks}"
        runs_lm = out / DETECTED
        seed_landmark_caches(work, name, [runs_lm / "lrdif_s1", runs_lm / "lrdif_s2", runs_lm])
        s1_lm = run_train(_config(recipe["s1"], runs.overrides("s1", encoder_ckpt, lm)),
                          runs_lm / "lrdif_s1")
        s2_lm_config = _config(recipe["s2"],
                               runs.overrides("s2", lm, f"model.init_from={s1_lm}"))
        methods["lrdif_s2_detected_landmarks"] = cached_summary(
            run_train(s2_lm_config, runs_lm / "lrdif_s2"), s2_lm_config.data, "test",
            cache_dir=runs_lm / "landmarks")
        runs.save()
    if args.equal_time and missing("backbone_equal_time"):
        # the backbone alone, given at least LRDif's whole training time
        long_config = _config(f"{args.recipe}_backbone_long", runs.common)
        long_best = run_train(long_config, out / "backbone_equal_time")
        methods["backbone_equal_time"] = cached_summary(long_best, long_config.data, "test",
                                                        cache_dir=out / "landmarks")
    summary["wall_s"] = time.time() - summary["started"]
    runs.save()


def full(args: argparse.Namespace) -> None:
    smoke = args.smoke is not None
    work = HERE / "work" / ("smoke" if smoke else args.work)
    results = work if smoke else args.results
    results.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    clean = subset_copy(args.data, work / "ferplus", args.smoke) if smoke else args.data
    roots = {"clean": clean}
    if "udc_toled" in args.sets:
        roots["udc_toled"] = synthesize(clean, work / "udc-ferplus-toled")
    for name in args.sets:
        run_set(name, roots[name], work, results, args)
    report(work, results, smoke)


def mean_train_rate(history: list[dict[str, Any]]) -> float:
    """Mean training images/s over a run's epochs (its metrics.jsonl rows)."""
    rates = [r["train_images_per_s"] for r in history if "train_images_per_s" in r]
    return sum(rates) / max(len(rates), 1)


def report(work: Path, results: Path, smoke: bool) -> None:
    """ferplus.json / ferplus.md from every data set's summary so far (missing: '-'). Each
    run's learning curve and training throughput are kept in its set's summary, so rows
    whose run folders are gone (committed results) keep theirs."""
    summaries = {name: s for name in SETS if (s := load_summary(work, results, name))}
    accuracy = {name: {m: round(100 * s["methods"][m]["accuracy"], 2)
                       for m in METHODS if m in s["methods"]}
                for name, s in summaries.items()}
    peaks: dict[bool, float] = {}
    for name, s in summaries.items():
        histories, efficiency = s.setdefault("histories", {}), s.setdefault("efficiency", {})
        for run in ("resnet18", "backbone", "backbone_equal_time", "lrdif_s1",
                    *(f"ablation/S2-V{i}" for i in range(1, 5)),
                    f"{DETECTED}/lrdif_s1", f"{DETECTED}/lrdif_s2"):
            path = work / name / run / "metrics.jsonl"
            if not path.is_file():
                continue
            histories[run] = [json.loads(x) for x in path.read_text().splitlines()]
            best = work / name / run / "best.safetensors"
            if best.is_file():  # training FLOPs per image vs this machine's peak
                model = load_model(best)
                meta = load_checkpoint(best).meta
                bf16 = bool(meta["train_config"].get("bf16"))
                efficiency[run] = {
                    "train_gflop_per_image": train_flops_per_image(model, 48) / 1e9,
                    "bf16": bf16, "commit": (meta.get("git_commit") or "-")[:12],
                    "images_per_s": mean_train_rate(histories[run])}
        for e in efficiency.values():  # every run against this machine's peak, measured now
            if e["bf16"] not in peaks:
                peaks[e["bf16"]] = compute_peak(
                    dtype=torch.bfloat16 if e["bf16"] else torch.float32)
            e["peak_gflops"] = peaks[e["bf16"]] / 1e9
            e["fraction_of_peak"] = e["images_per_s"] * e["train_gflop_per_image"] / e[
                "peak_gflops"]
    curves = {f"{name}/{run}": h for name, s in summaries.items()
              for run, h in s["histories"].items()}
    if curves:
        plots.plot_learning_curves(curves, results / "learning_curves.png")
    atomic_write_json(results / "ferplus.json", accuracy)
    atomic_write_json(results / "ferplus_detail.json", summaries)
    text = render(accuracy, summaries, smoke)
    with atomic_write(results / "ferplus.md", "w") as handle:
        handle.write(text)
    print(text)


def _table5_so_far(methods: dict[str, Any]) -> list[dict[str, Any]]:
    """Table 5 rows from the runs every data set makes (S1, S2-V1, S2-V3)."""
    variants = ablation_variants()
    named = [("LRDif_S1", "stage 1 with the ground-truth label", "lrdif_s1_with_label"),
             ("LRDif_S2-V1", variants["S2-V1"]["description"], "lrdif_s2_no_dm"),
             ("LRDif_S2-V3", variants["S2-V3"]["description"], "lrdif_s2")]
    return [{"method": m, "description": d, "test": methods[k]} for m, d, k in named
            if k in methods]


def render(accuracy: dict, summaries: dict, smoke: bool) -> str:
    lines = [
        "# FERPlus and UDC-FERPlus (T-OLED) benchmark" + (" - SMOKE RUN, not a result"
                                                          if smoke else ""), "",
        *(f"- Commands, {name}: " + "; ".join(f"`{c}`" for c in s.get("commands", []))
          for name, s in summaries.items()),
        f"- Report: `python benchmarks/ferplus.py {' '.join(sys.argv[1:])}` (rebuilt from "
        "every finished run)",
        f"- Date: {datetime.datetime.now().isoformat(timespec='minutes')}, commit {git_commit()}",
        f"- Machine: {machine()}",
        *(f"- Wall time, {name}: {s['wall_s'] / 3600:.2f} h" for name, s in summaries.items()
          if "wall_s" in s),
        "- Protocol: 8-class majority labels, FER2013Test, every run selected on FER2013Valid.",
        "- LRDif's image encoder E_I starts from the same data set's baseline row that "
        "exists: the ImageNet MobileNetV2 fine-tuned as a classifier (backbone, then trained "
        "on inside LRDif) or the frozen trunk of a ResNet-18 trained from scratch (resnet18); "
        "see docs/model.md. A run that was already finished is reused, so a wall time counts "
        "only what this command ran.",
        "", "## Test accuracy, mean class accuracy (%) and macro-F1", "",
        "| method | clean acc. | clean mean class | clean macro-F1 | UDC acc. | "
        "UDC mean class | UDC macro-F1 | drop |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in METHODS:
        c, u = accuracy.get("clean", {}).get(m), accuracy.get("udc_toled", {}).get(m)
        if c is None and u is None:
            continue
        drop = "-" if c is None or u is None else f"{c - u:.2f}"
        cells = []
        for name in ("clean", "udc_toled"):
            r = summaries.get(name, {}).get("methods", {}).get(m)
            cells += ["-"] * 3 if r is None else [
                f"{100 * r['accuracy']:.2f}", f"{100 * r['mean_class_accuracy']:.2f}",
                f"{r['macro_f1']:.3f}"]
        lines.append(f"| {m} | {' | '.join(cells)} | {drop} |")
    lines += ["", "Paper: LRDif 87.13 (FERPlus), 84.89 (UDC-FERPlus).", ""]
    udc = summaries.get("udc_toled", {})
    rows = udc.get("table5") or _table5_so_far(udc.get("methods", {}))
    if rows:
        lines += ["## Table 5 analogue (UDC-FERPlus, test split)", "",
                  table5_markdown(rows), ""]
        if len(rows) < 5:
            lines += ["Variants S2-V2 and S2-V4 have not finished yet.", ""]
    differences = [(name, label, d) for name, s in summaries.items()
                   for label, d in s.get("differences", {}).items()]
    if differences:
        lines += ["## Differences in test accuracy (points, 95% paired-bootstrap interval)", "",
                  "| data set | difference | points | 95% interval |", "| --- | --- | --- | --- |"]
        lines += [f"| {name} | {label} | {100 * d['difference']:+.2f} | "
                  f"[{100 * d['low']:+.2f}, {100 * d['high']:+.2f}] |"
                  for name, label, d in differences]
        lines.append("")
    diagnosed = {name: s["epr_diagnostics"] for name, s in summaries.items()
                 if "epr_diagnostics" in s}
    if diagnosed:
        lines += ["## Does the prior carry the signal? (LRDif stage 2, test accuracy %)", "",
                  "The UDCformer of the stage-2 model given the EPR it predicts from the face, "
                  "the frozen teacher's Z (from the true label), a zero EPR, and the EPR "
                  "predicted from the next face's x_S2.", "",
                  "| data set | predicted | teacher (label) | zero | other face's x_S2 |",
                  "| --- | --- | --- | --- | --- |"]
        for name, d in diagnosed.items():
            cells = " | ".join(f"{100 * d[p]['accuracy']:.2f}" for p in
                               ("predicted", "teacher", "zero", "other_face_x_s2"))
            lines.append(f"| {name} | {cells} |")
        lines.append("")
    if "fig6" in udc:
        lines += ["## Fig. 6 analogue (UDC-FERPlus, LRDif stage 2)", "",
                  "| iterations | accuracy (%) |", "| --- | --- |"]
        lines += [f"| {r['steps']} | {100 * r['accuracy']:.2f} |" for r in udc["fig6"]]
        lines += ["", "![Fig. 6](fig6_steps.png)", ""]
    lines += ["## Confusion matrices", ""]
    lines += [f"![{name}](confusion_lrdif_s2_{name}.png)" for name in summaries
              if "lrdif_s2" in summaries[name]["methods"]]
    lines += ["", "## Learning curves and training throughput", "",
              "![curves](learning_curves.png)", "",
              "Training images/s were measured while both data sets trained side by side, one "
              "torch thread each; the peak is one thread's (`compute_peak`: the faster of a "
              "torch.mm and a oneDNN convolution, float32, or bf16 for runs trained with bf16 "
              "autocast), measured when the report was built.",
              "",
              "| run | epochs | best val acc (%) | mean train images/s | train GFLOP/image | "
              "fraction of peak | wall (min) | trained at commit |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, s in summaries.items():  # runs reported before curves were kept: no curve
        efficiency, curves = s.get("efficiency", {}), s.get("histories", {})
        for key in dict.fromkeys([*curves, *efficiency]):
            h, e = curves.get(key, []), efficiency.get(key)
            rate = mean_train_rate(h) if h else e["images_per_s"]
            cells = [str(len(h)) if h else "-",
                     f"{100 * max(r['val_accuracy'] for r in h):.2f}" if h else "-",
                     f"{rate:.1f}",
                     "-" if e is None else f"{e['train_gflop_per_image']:.2f}",
                     "-" if e is None else (f"{100 * e['fraction_of_peak']:.1f}% of "
                                            f"{e['peak_gflops']:.0f} GFLOP/s"
                                            f"{' (bf16)' if e['bf16'] else ''}"),
                     f"{sum(r.get('epoch_time_s', 0.0) for r in h) / 60:.1f}" if h else "-",
                     "-" if e is None else e["commit"]]
            lines.append(f"| {name}/{key} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SOURCE, help="clean FERPlus root")
    sub = parser.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("throughput", help="training images/s of each model + compute peak")
    t.add_argument("--steps", type=int, default=30)
    t.add_argument("--device", default="cpu")
    t.add_argument("--bf16", action="store_true", help="bf16 autocast (and a bf16 compute peak)")
    t.add_argument("--synthetic", type=int, default=0, metavar="N",
                   help="train on N synthetic 48x48 FERPlus-layout images instead of --data")
    t.add_argument("--override", nargs="*", default=[], metavar="key=value",
                   help="config overrides for every model ('model.*' ones: stage 1 only)")
    t.add_argument("--results", type=Path, default=None, help="folder for the reports")
    f = sub.add_parser("full", help="the whole benchmark (hours)")
    f.add_argument("--smoke", type=int, default=None, metavar="N",
                   help="first N images per split, 1 epoch: checks the script")
    f.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS),
                   help="data sets to run here (run one per process to use more cores)")
    f.add_argument("--recipe", default="pretrained",
                   help="configs NAME_backbone (or NAME_resnet18), NAME_s1, NAME_s2: "
                        "'pretrained' (pretrained_*.yaml, the ImageNet MobileNetV2 E_I), 'cpu' "
                        "(cpu_*.yaml) or 'bench_ferplus' (the first benchmark's runs)")
    f.add_argument("--table5", nargs="+", default=list(ablation_variants()), metavar="VARIANT",
                   help="Table 5 variants this process trains on udc_toled (the main rows "
                        "need S2-V1 and S2-V3; give the others to parallel processes, then "
                        "rerun with all to collect them)")
    f.add_argument("--equal-time", action="store_true",
                   help="also train (or collect) RECIPE_backbone_long, the backbone given "
                        "LRDif's whole training time (a process of its own on another core)")
    f.add_argument("--landmarks", choices=["mediapipe"], default=None,
                   help="also train LRDif stages 1 and 2 with the DILnetwork's landmark "
                        "queries from this detector (learned maps where it finds no face): "
                        "the landmark ablation row; its caches come from "
                        "benchmarks/landmark_rate.py in the landmark environment")
    f.add_argument("--missing-rows-only", action="store_true",
                   help="train only the row groups (resnet18, LRDif, landmark ablation, "
                        "equal-time backbone) the set's summary lacks, that summary being "
                        "the work folder's or, on a machine without the earlier runs, the "
                        "one committed in --results/ferplus_detail.json")
    f.add_argument("--encoder-checkpoint", nargs="+", default=[], metavar="SET=FILE",
                   type=lambda text: (text.partition("=")[0], Path(text.partition("=")[2])),
                   help="take the E_I run of SET from a committed best checkpoint of the "
                        "recipe's encoder config (benchmarks/checkpoints) instead of training it")
    f.add_argument("--results", type=Path, default=RESULTS,
                   help="folder for ferplus.md/json and the figures (default "
                        "benchmarks/results; another recipe's partial runs: elsewhere)")
    f.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    f.add_argument("--work", default="full",
                   help="folder under benchmarks/work for the runs (one per schedule)")
    r = sub.add_parser("report", help="rebuild ferplus.md/json from the finished runs")
    r.add_argument("--threads", type=int, default=1,
                   help="torch threads for the compute peak (the training runs' count)")
    r.add_argument("--work", default="full", help="folder under benchmarks/work to report")
    r.add_argument("--results", type=Path, default=RESULTS, help="folder for ferplus.md/json")
    args = parser.parse_args()
    if args.mode == "throughput":
        throughput(args)
    elif args.mode == "full":
        full(args)
    else:
        torch.set_num_threads(args.threads)
        report(HERE / "work" / args.work, args.results, smoke=False)


if __name__ == "__main__":
    main()
