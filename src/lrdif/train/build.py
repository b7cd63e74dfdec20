"""The model a training run trains, and its optimiser.

A fresh MODELS entry whose data-fixed fields (in_channels, image_size, class_names) come
from the data, or stage 2 (paper Sec. 3.3) built from its stage-1 checkpoint; with
``model.init_from`` any model starts from the weights of a checkpoint of the same model
and classes (fine-tuning).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import lrdif.models  # noqa: F401 (registers the models)
from lrdif.checkpoint import load_checkpoint, load_model, load_weights, new_model
from lrdif.config import ConfigError, from_dict, to_dict
from lrdif.data.splits import label_map
from lrdif.registry import MODELS
from lrdif.train.config import TrainConfig


def model_class_names(
    config: TrainConfig, data_classes: tuple[str, ...]
) -> tuple[tuple[str, ...], str]:
    """The classes the model will have, and where they come from (for error messages):
    stage 2 keeps its stage-1 checkpoint's; others take ``model.options.class_names`` or
    the data set's."""
    root, init_from = config.data.root, config.model.init_from
    if config.model.name == "lrdif_s2":
        where = f"{root} with model.init_from = {init_from}"
        return tuple(load_checkpoint(init_from).class_names), where
    return tuple(config.model.options.get("class_names", data_classes)), str(root)


def build_model_and_optimizer(
    config: TrainConfig, class_names: tuple[str, ...], images: Tensor, device: torch.device
) -> tuple[nn.Module, torch.optim.Optimizer, list[nn.Parameter]]:
    """The model (on ``device``, checked against the training ``images``), Adam over its
    trainable parameters (paper Sec. 4.2; the fused kernel on CUDA unless
    ``optim.fused: false``), and those parameters."""
    model = build_model(
        config, class_names=class_names, in_channels=images.shape[1], image_size=images.shape[2]
    ).to(device)
    _check_input(model, images, str(config.data.root))
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    groups = parameter_groups(model, config.optim.lr_scale)
    params = [p for group in groups for p in group["params"]]
    fused = config.optim.fused if config.optim.fused is not None else device.type == "cuda"
    optimizer = torch.optim.Adam(
        groups, lr=config.optim.lr, betas=config.optim.betas,
        weight_decay=config.optim.weight_decay,
        decoupled_weight_decay=config.optim.decoupled_weight_decay,
        fused=True if fused else None,  # None: torch's default (for-each) update
    )
    return model, optimizer, params


def parameter_groups(model: nn.Module, lr_scale: dict[str, float]) -> list[dict[str, Any]]:
    """Trainable parameters grouped by LR multiplier (``optim.lr_scale``: name prefix ->
    scale; the longest matching prefix wins, 1.0 where none matches)."""
    by_scale: dict[float, list[nn.Parameter]] = {}
    matched = dict.fromkeys(lr_scale, False)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        prefixes = [k for k in lr_scale if name == k or name.startswith(k + ".")]
        for k in prefixes:
            matched[k] = True
        scale = lr_scale[max(prefixes, key=len)] if prefixes else 1.0
        by_scale.setdefault(scale, []).append(p)
    unused = [k for k, hit in matched.items() if not hit]
    if unused:
        raise ConfigError(f"optim.lr_scale: no trainable parameter under {unused}")
    return [{"params": ps, "lr_scale": scale} for scale, ps in by_scale.items()]


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
    model = new_model(cls, model_config)
    if section.init_from:
        _load_init_from(model, section.name, Path(section.init_from))
    return model


def _load_init_from(model: nn.Module, name: str, path: Path) -> None:
    """Start ``model`` (MODELS key ``name``) from the weights of a checkpoint of the same
    model and classes; the run's config may change what weights do not fix (input size)."""
    ckpt = load_checkpoint(path)
    where = f"model.init_from = {path}"
    if ckpt.model_name != name:
        raise ConfigError(f"{where}: a {ckpt.model_name!r} checkpoint; this run trains {name!r}")
    if ckpt.left_out:
        raise ConfigError(f"{where} was saved for inference only (without {list(ckpt.left_out)})"
                          "; start training from a full checkpoint")
    if tuple(ckpt.class_names) != tuple(model.class_names):
        raise ConfigError(f"{where}: classes {list(ckpt.class_names)}, but this run's are "
                          f"{list(model.class_names)}")
    load_weights(model, ckpt.state_dict, source=where)


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
