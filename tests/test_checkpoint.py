"""Checkpoints: safetensors + JSON round trips, pickle refusal, clear mismatch errors."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lrdif.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    load_state,
    load_weights,
    new_model,
    save_checkpoint,
    save_state,
)
from lrdif.models import DiffusionConfig, LRDifConfig, LRDifStage1, LRDifStage2, label_encoders
from lrdif.models.udcformer import UDCformerConfig
from lrdif.vocabulary import __version__

# A small UDCformer keeps these tests fast; the format does not depend on the size.
SMALL = UDCformerConfig(dims=(8, 16, 32), dt_heads=(1, 1, 2), dt_blocks=(1, 1, 1),
                        dil_heads=(1, 2, 2), fusion_dim=32, fusion_depth=1, fusion_heads=2)


def _config(**changes) -> LRDifConfig:
    base = LRDifConfig(epr_dim=32, label_encoder="learned", udcformer=SMALL)
    return dataclasses.replace(base, **changes)


@pytest.fixture(scope="module")
def stage1() -> LRDifStage1:
    torch.manual_seed(0)
    return LRDifStage1(config=_config()).eval()


def test_stage1_round_trip_gives_identical_logits(stage1: LRDifStage1, tmp_path: Path) -> None:
    path = tmp_path / "s1.safetensors"
    save_checkpoint(path, stage1, meta={"epoch": 3, "val_accuracy": 0.5})
    assert [p.name for p in tmp_path.iterdir()] == ["s1.safetensors"]  # no temp file left
    ckpt = load_checkpoint(path)
    assert ckpt.model_name == "lrdif_s1" and ckpt.version == __version__
    assert ckpt.class_names == stage1.class_names
    assert ckpt.meta == {"epoch": 3, "val_accuracy": 0.5}
    loaded = load_model(path, expect="lrdif_s1")
    assert isinstance(loaded, LRDifStage1) and not loaded.training
    assert loaded.config == stage1.config
    images, labels = torch.rand(4, 1, 48, 48), torch.tensor([0, 2, 4, 6])
    with torch.inference_mode():
        expected = stage1(images, labels=labels).logits
        assert torch.equal(loaded(images, labels=labels).logits, expected)


def test_stage2_round_trip_is_self_contained(stage1: LRDifStage1, tmp_path: Path) -> None:
    s2 = LRDifStage2.from_stage1(
        stage1, diffusion=DiffusionConfig(parameterization="eps", timesteps=3), loss="ce"
    ).eval()
    path = tmp_path / "s2.safetensors"
    save_checkpoint(path, s2)
    loaded = load_model(path)
    assert isinstance(loaded, LRDifStage2)
    assert loaded.config.diffusion.timesteps == 3 and loaded.config.loss == "ce"
    images, labels = torch.rand(3, 1, 48, 48), torch.tensor([1, 2, 3])
    with torch.inference_mode():
        a, b = loaded(images, labels=labels), s2(images, labels=labels)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.epr_teacher, b.epr_teacher)
    with pytest.raises(CheckpointError, match=r"holds a 'lrdif_s2' model.*'lrdif_s1'"):
        load_model(path, expect="lrdif_s1")


def test_text_embeddings_load_without_the_text_model(tmp_path: Path, monkeypatch) -> None:
    model = LRDifStage1(config=_config(label_encoder="minilm")).eval()
    path = tmp_path / "minilm.safetensors"
    save_checkpoint(path, model)

    def refuse(*args, **kwargs):
        raise AssertionError("loading must not run the text encoder")

    monkeypatch.setattr(label_encoders, "minilm_embeddings", refuse)
    loaded = load_model(path)
    table = loaded.fpen_s1.label_encoder.embeddings
    assert torch.equal(table, model.fpen_s1.label_encoder.embeddings) and table.abs().sum() > 0


def test_pickles_are_refused_with_the_reason(stage1: LRDifStage1, tmp_path: Path) -> None:
    pt = tmp_path / "model.pt"
    torch.save(stage1.state_dict(), pt)
    with pytest.raises(CheckpointError, match="pickle") as info:
        load_model(pt)
    assert "execute" in str(info.value) and "save_checkpoint" in str(info.value)
    # The same bytes under a safetensors name are recognised by their content.
    disguised = tmp_path / "model.safetensors"
    disguised.write_bytes(pt.read_bytes())
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(disguised)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"hello, not a checkpoint")
    with pytest.raises(CheckpointError, match="not a safetensors"):
        load_checkpoint(junk)
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_plain_safetensors_without_metadata_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="without lrdif metadata"):
        load_checkpoint(path)


def test_wrong_architecture_names_the_keys(stage1: LRDifStage1, tmp_path: Path) -> None:
    path = tmp_path / "s1.safetensors"
    save_checkpoint(path, stage1)
    wider = LRDifStage1(config=_config(epr_dim=48))
    with pytest.raises(CheckpointError, match=r"mis-shaped: .*fpen_s1\.layers\.0\.weight"):
        load_weights(wider, load_checkpoint(path).state_dict, source=str(path))
    # A stage-2 state dict under a stage-1 label: keys that exist on one side only.
    s2 = LRDifStage2.from_stage1(stage1)
    forged = tmp_path / "forged.safetensors"
    save_checkpoint(forged, s2)
    ckpt = load_checkpoint(forged)
    document = {"format": 1, "model": "lrdif_s1", "config": ckpt.config,
                "class_names": list(ckpt.class_names), "version": __version__, "meta": {}}
    tensors = {k: v.contiguous() for k, v in ckpt.state_dict.items()}
    save_file(tensors, str(forged), metadata={"lrdif": json.dumps(document)})
    with pytest.raises(CheckpointError) as info:
        load_model(forged)
    message = str(info.value)
    assert re.search(r"missing: \d+ keys in fpen_s1\.\* \(\d+\)", message)
    assert re.search(r"unexpected: \d+ keys in .*teacher\.\* \(\d+\)", message)
    assert "denoiser.* (" in message


def test_unknown_config_key_is_refused(stage1: LRDifStage1, tmp_path: Path) -> None:
    path = tmp_path / "s1.safetensors"
    save_checkpoint(path, stage1)
    ckpt = load_checkpoint(path)
    config = dict(ckpt.config, epr_width=7)
    document = {"format": 1, "model": "lrdif_s1", "config": config,
                "class_names": list(ckpt.class_names), "version": __version__, "meta": {}}
    save_file({k: v.contiguous() for k, v in ckpt.state_dict.items()}, str(path),
              metadata={"lrdif": json.dumps(document)})
    with pytest.raises(ValueError, match="epr_width"):
        load_model(path)


def test_training_state_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "state.safetensors"
    tensors = {"adam.exp_avg.0": torch.randn(3, 4), "step": torch.tensor(7)}
    save_state(path, tensors, {"epoch": 2, "rng": [1, 2, 3]})
    loaded, meta = load_state(path)
    assert meta == {"epoch": 2, "rng": [1, 2, 3]}
    assert set(loaded) == set(tensors)
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    with pytest.raises(CheckpointError, match="training-state"):
        load_checkpoint(path)


def test_stage2_with_a_frozen_encoder_stores_it_once(tmp_path: Path) -> None:
    """A frozen E_I (here resnet18) is shared by teacher and FPEN_S2: the file holds its
    tensors once and loading gives both modules the same, identical weights."""
    from lrdif.models.baselines import ResNet18, ResNet18Config

    torch.manual_seed(0)
    r18 = tmp_path / "r18.safetensors"
    save_checkpoint(r18, ResNet18(config=ResNet18Config(widths=(8, 16), blocks=(1, 1))))
    config = _config(image_encoder="resnet18", image_encoder_kwargs={
        "checkpoint": str(r18), "widths": [8, 16], "blocks": [1, 1]})
    s2 = LRDifStage2.from_stage1(new_model(LRDifStage1, config)).eval()
    assert s2.shares_image_encoder and s2.fpen_s2.image_encoder is s2.teacher.image_encoder
    path = tmp_path / "s2.safetensors"
    save_checkpoint(path, s2)
    stored = json.loads(json.loads(path.read_bytes()[8:8 + int.from_bytes(
        path.read_bytes()[:8], "little")])["__metadata__"]["lrdif"])["shared"]
    assert stored and all(k.startswith("fpen_s2.image_encoder.") for k in stored)
    ckpt = load_checkpoint(path)
    assert set(ckpt.state_dict) == set(s2.state_dict())
    loaded = load_model(path)
    assert loaded.fpen_s2.image_encoder is loaded.teacher.image_encoder
    images, labels = torch.rand(3, 1, 48, 48), torch.tensor([1, 2, 3])
    with torch.inference_mode():
        a, b = loaded(images, labels=labels), s2(images, labels=labels)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.epr_teacher, b.epr_teacher)
    # The trainable conv E_I is not shared: each FPEN has its own.
    conv = LRDifStage2.from_stage1(LRDifStage1(config=_config()))
    assert not conv.shares_image_encoder
    assert conv.fpen_s2.image_encoder is not conv.teacher.image_encoder


def _inference_only_pair(s2: LRDifStage2, tmp_path: Path) -> tuple[Path, Path]:
    full, slim = tmp_path / "full.safetensors", tmp_path / "slim.safetensors"
    save_checkpoint(full, s2, meta={"epoch": 1})
    save_checkpoint(slim, s2, meta={"epoch": 1}, leave_out=("teacher",))
    return full, slim


@pytest.mark.parametrize("encoder", ["conv", "resnet18"])
def test_inference_only_checkpoint_is_smaller_and_predicts_the_same(
    encoder: str, tmp_path: Path
) -> None:
    """Without the frozen teacher (never called at inference) the file shrinks, loads
    through load_model and gives the full checkpoint's logits exactly; a shared frozen E_I
    (resnet18) is kept under FPEN_S2's name. Calling the teacher is a clear error."""
    from lrdif.models.baselines import ResNet18, ResNet18Config

    torch.manual_seed(0)
    config = _config()
    if encoder == "resnet18":
        r18 = tmp_path / "r18.safetensors"
        save_checkpoint(r18, ResNet18(config=ResNet18Config(widths=(8, 16), blocks=(1, 1))))
        config = _config(image_encoder="resnet18", image_encoder_kwargs={
            "checkpoint": str(r18), "widths": [8, 16], "blocks": [1, 1]})
    s2 = LRDifStage2.from_stage1(new_model(LRDifStage1, config)).eval()
    full, slim = _inference_only_pair(s2, tmp_path)
    assert slim.stat().st_size < full.stat().st_size
    ckpt = load_checkpoint(slim)
    assert ckpt.left_out == ("teacher",) and ckpt.meta == {"epoch": 1}
    assert not any(k.startswith("teacher.") for k in ckpt.state_dict)
    assert any(k.startswith("fpen_s2.image_encoder.") for k in ckpt.state_dict)
    a, b = load_model(full), load_model(slim)
    images = torch.rand(5, 1, 48, 48)
    with torch.inference_mode():
        assert torch.equal(a(images).logits, b(images).logits)
    with pytest.raises(CheckpointError, match=r"inference only, without the weights of 'teacher'"):
        b(images, labels=torch.tensor([0, 1, 2, 3, 4]))


def test_leave_out_must_name_a_submodule(stage1: LRDifStage1, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no submodule 'teacher'"):
        save_checkpoint(tmp_path / "s1.safetensors", stage1, leave_out=("teacher",))
    assert not (tmp_path / "s1.safetensors").exists()
