"""`lrdif export`: a stage-2 LRDif as one ONNX graph that onnxruntime runs like PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from lrdif.checkpoint import save_checkpoint
from lrdif.cli import main as cli_main
from lrdif.models.lrdif import LRDifConfig, LRDifStage1, LRDifStage2
from lrdif.models.udcformer import UDCformerConfig
from lrdif.predict.export import export_onnx


def tiny_config(**changes) -> LRDifConfig:
    """A small but complete LRDif (all blocks present) that exports in seconds."""
    udcformer = UDCformerConfig(
        dims=(8, 16, 32), dt_heads=(1, 1, 2), dt_blocks=(1, 1, 1), dil_heads=(1, 2, 2),
        fusion_dim=32, fusion_depth=1, fusion_heads=2,
    )
    return LRDifConfig(epr_dim=16, label_encoder="learned", udcformer=udcformer, **changes)


@pytest.fixture(scope="module")
def stage1() -> LRDifStage1:
    torch.manual_seed(0)
    return LRDifStage1(config=tiny_config(), pretrained=False).eval()


@pytest.fixture(scope="module")
def stage2_checkpoint(stage1, tmp_path_factory) -> Path:
    torch.manual_seed(1)
    model = LRDifStage2.from_stage1(stage1)
    # A fresh denoiser outputs nearly nothing; random weights make every step matter.
    for p in model.denoiser.parameters():
        torch.nn.init.normal_(p, 0.0, 0.2)
    path = tmp_path_factory.mktemp("ckpt") / "s2.safetensors"
    save_checkpoint(path, model.eval(), meta={})
    return path


@pytest.fixture(scope="module")
def exported(stage2_checkpoint, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    return out, export_onnx(stage2_checkpoint, out)


def test_onnx_matches_pytorch_on_a_batch(stage2_checkpoint, exported):
    from lrdif.checkpoint import load_model

    out, summary = exported
    assert summary["max_abs_diff"] < 1e-4
    model = load_model(stage2_checkpoint, device="cpu").eval()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, outp.name) == ("images", "probabilities")
    assert isinstance(inp.shape[0], str)  # the batch axis is dynamic
    for batch in (1, 5):  # neither is the batch size used for tracing (2)
        images = torch.rand(batch, 1, 48, 48, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = torch.softmax(model(images).logits, dim=1).numpy()
        (got,) = session.run(None, {"images": images.numpy()})
        assert got.shape == (batch, 8)
        assert np.abs(got - expected).max() < 1e-4
        # Deterministic: the reverse diffusion starts from a fixed point, no sampled noise.
        np.testing.assert_array_equal(session.run(None, {"images": images.numpy()})[0], got)


def test_the_diffusion_steps_are_unrolled_in_the_graph(exported, tmp_path):
    out, _ = exported
    graph = onnx.load(str(out)).graph
    # No loop operator: T = 4 denoiser calls appear as straight-line copies.
    assert not {"Loop", "If", "RandomNormal", "RandomNormalLike"} & {n.op_type for n in graph.node}
    gemms = sum(n.op_type in ("Gemm", "MatMul") for n in graph.node)
    smaller = tiny_config()
    smaller.diffusion.timesteps = 2
    torch.manual_seed(0)
    s2 = LRDifStage2.from_stage1(LRDifStage1(config=smaller, pretrained=False)).eval()
    path = tmp_path / "t2.safetensors"
    save_checkpoint(path, s2, meta={})
    export_onnx(path, tmp_path / "t2.onnx")
    gemms_t2 = sum(n.op_type in ("Gemm", "MatMul")
                   for n in onnx.load(str(tmp_path / "t2.onnx")).graph.node)
    per_step = (gemms - gemms_t2) / 2
    assert per_step >= 1 and per_step == int(per_step)


def test_metadata_names_the_classes(exported):
    out, _ = exported
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props["class_names"].split(",") == list(tiny_config().class_names)
    assert props["model"] == "lrdif_s2"


def test_command_exports_and_refuses_stage1(stage1, stage2_checkpoint, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    assert cli_main(["export", str(stage2_checkpoint), "--onnx", str(out)]) == 0
    assert out.is_file() and "onnxruntime matches PyTorch" in capsys.readouterr().out
    s1_path = tmp_path / "s1.safetensors"
    save_checkpoint(s1_path, stage1, meta={})
    refused = tmp_path / "s1.onnx"
    assert cli_main(["export", str(s1_path), "--onnx", str(refused)]) == 2
    assert "stage-1" in capsys.readouterr().err and not refused.exists()


def test_checkpoint_trained_with_detected_landmarks_is_refused(stage1, tmp_path):
    model = LRDifStage2.from_stage1(stage1).eval()
    path = tmp_path / "mesh.safetensors"
    save_checkpoint(path, model, meta={"dataset": {"landmarks": "mediapipe"}})
    with pytest.raises(ValueError, match="'mediapipe' landmarks, which are detected outside"):
        export_onnx(path, tmp_path / "mesh.onnx")
    assert not (tmp_path / "mesh.onnx").exists()


@pytest.mark.parametrize("which", ["lrdif_backbone", "backbone_classifier"])
def test_pretrained_recipe_models_export(which, tmp_path):
    """The pretrained recipe's models: LRDif with the MobileNetV2 E_I at 96 px, a
    normalised EPR, the E_I token and head, flip averaging and a logit offset (the
    shipped model's options), and the backbone classifier with flip averaging."""
    from lrdif.models.baselines import BackboneClassifier

    torch.manual_seed(0)
    if which == "lrdif_backbone":
        s1 = LRDifStage1(config=tiny_config(
            image_encoder="backbone", image_encoder_kwargs={"input_size": 96},
            normalize_epr=True, image_token=True, image_head=True, test_flip=True,
            logit_offset=tuple(0.1 * k for k in range(8))), pretrained=False)
        model = LRDifStage2.from_stage1(s1)
    else:
        model = BackboneClassifier(pretrained=False)
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, model.eval(), meta={})
    summary = export_onnx(path, tmp_path / "model.onnx")
    assert summary["max_abs_diff"] < 1e-4
