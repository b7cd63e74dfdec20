"""The stage wrappers: shapes, gradients, the teacher, the diffusion settings, the demo."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lrdif.data.landmarks import FACE_MESH_POINTS
from lrdif.losses import epr_kl
from lrdif.models import DiffusionConfig, LRDifConfig, LRDifStage1, LRDifStage2
from lrdif.models.udcformer import UDCformerConfig

SMALL = UDCformerConfig(dims=(8, 16, 32), dt_heads=(1, 1, 2), dt_blocks=(1, 1, 1),
                        dil_heads=(1, 2, 2), fusion_dim=32, fusion_depth=1, fusion_heads=2)
SEVEN = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")


def _config(size: int = 48, channels: int = 1, classes: tuple[str, ...] | None = None,
            **changes) -> LRDifConfig:
    config = LRDifConfig(image_size=size, in_channels=channels, label_encoder="learned")
    if classes is not None:
        config = dataclasses.replace(config, class_names=classes)
    return dataclasses.replace(config, **changes)


@pytest.fixture(scope="module")
def stage1() -> LRDifStage1:
    """The default architecture (for gradients: every parameter of the real model)."""
    torch.manual_seed(0)
    return LRDifStage1(config=_config())


@pytest.fixture(scope="module")
def small() -> LRDifStage1:
    """A small UDCformer, for behaviour that does not depend on the network's size."""
    torch.manual_seed(0)
    return LRDifStage1(config=_config(udcformer=SMALL, epr_dim=32))


def _landmarks(batch: int) -> torch.Tensor:
    """Face-mesh points for the first half of the batch, none (NaN) for the rest."""
    points = torch.rand(batch, FACE_MESH_POINTS, 2) * 0.6 + 0.2
    points[batch // 2 :] = float("nan")
    return points


@pytest.mark.parametrize(
    ("size", "channels", "classes"), [(48, 1, None), (112, 3, SEVEN)],
    ids=["48x48x1-8cls", "112x112x3-7cls"],
)
def test_shapes(size: int, channels: int, classes: tuple[str, ...] | None) -> None:
    torch.manual_seed(0)
    s1 = LRDifStage1(config=_config(size, channels, classes))
    s2 = LRDifStage2.from_stage1(s1)
    k, c = len(s1.class_names), s1.config.epr_dim
    s1.eval()
    s2.eval()
    with torch.inference_mode():
        for batch in (1, 8):
            images = torch.rand(batch, channels, size, size)
            labels = torch.randint(0, k, (batch,))
            out1 = s1(images, labels=labels)
            assert out1.logits.shape == (batch, k) and out1.epr.shape == (batch, c)
            assert out1.features.shape[0] == batch and out1.epr_teacher is None
            out2 = s2(images)
            assert out2.logits.shape == (batch, k) and out2.epr.shape == (batch, c)
            assert out2.epr_teacher is None
            assert s2(images, labels=labels).epr_teacher.shape == (batch, c)


def test_stage1_every_parameter_gets_a_gradient(stage1: LRDifStage1) -> None:
    stage1.train()
    stage1.zero_grad()
    images, labels = torch.rand(4, 1, 48, 48), torch.tensor([0, 3, 5, 7])
    out = stage1(images, labels=labels, landmarks=_landmarks(4))
    stage1.loss(out, labels)["total"].backward()
    for name, p in stage1.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_stage2_gradients_reach_everything_but_the_teacher(stage1: LRDifStage1) -> None:
    s2 = LRDifStage2.from_stage1(stage1)
    s2.train()
    assert not s2.teacher.training  # frozen teacher stays in eval mode
    images, labels = torch.rand(4, 1, 48, 48), torch.tensor([1, 2, 4, 6])
    out = s2(images, labels=labels, landmarks=_landmarks(4))
    losses = s2.loss(out, labels)
    assert set(losses) == {"total", "ce", "kl"}
    assert losses["total"].item() == pytest.approx((losses["ce"] + losses["kl"]).item())
    sharp = LRDifStage2.from_stage1(stage1, kl_temperature=0.15)
    assert sharp.config.kl_temperature == 0.15 and s2.config.kl_temperature == 1.0
    assert sharp.loss(out, labels)["kl"].item() == pytest.approx(
        epr_kl(out.epr_teacher, out.epr, 0.15).item())
    losses["total"].backward()
    trainable = {n: p for n, p in s2.named_parameters() if p.requires_grad}
    assert any(n.startswith("denoiser.") for n in trainable)
    for name, p in trainable.items():
        assert not name.startswith("teacher."), name
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for name, p in s2.teacher.named_parameters():
        assert not p.requires_grad and p.grad is None, name


def test_from_stage1_copies_weights(small: LRDifStage1) -> None:
    s2 = LRDifStage2.from_stage1(small)
    for name, tensor in small.udcformer.state_dict().items():
        assert torch.equal(s2.udcformer.state_dict()[name], tensor), name
    for name, tensor in small.fpen_s1.state_dict().items():
        assert torch.equal(s2.teacher.state_dict()[name], tensor), name
    # Copies, not shared tensors: stage-2 training cannot change stage 1.
    w1 = small.udcformer.classifier.weight
    assert s2.udcformer.classifier.weight.data_ptr() != w1.data_ptr()


def test_stage2_inference_is_deterministic_and_needs_no_teacher(small: LRDifStage1) -> None:
    s2 = LRDifStage2.from_stage1(small).eval()

    def refuse(*args, **kwargs):
        raise AssertionError("inference must not call the teacher")

    s2.teacher.forward = refuse  # type: ignore[method-assign]
    images = torch.rand(3, 1, 48, 48)
    with torch.inference_mode():
        a, b = s2(images), s2(images)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.epr, b.epr)


def test_insert_noise_setting(small: LRDifStage1) -> None:
    images, labels = torch.rand(2, 1, 48, 48), torch.tensor([0, 1])
    noisy = LRDifStage2.from_stage1(small, diffusion=DiffusionConfig(insert_noise=True)).train()
    quiet = LRDifStage2.from_stage1(small, diffusion=DiffusionConfig(insert_noise=False)).train()
    quiet.load_state_dict(noisy.state_dict())
    with torch.no_grad():
        # With inserted noise the training chain starts from a random Z_T ...
        assert not torch.equal(noisy(images, labels=labels).epr, noisy(images, labels=labels).epr)
        # ... without, from Z_T = 0: the same every time.
        assert torch.equal(quiet(images, labels=labels).epr, quiet(images, labels=labels).epr)


def _normalised(small: LRDifStage1, **diffusion) -> LRDifStage2:
    s1 = LRDifStage1(config=dataclasses.replace(small.config, normalize_epr=True))
    s1.load_state_dict(small.state_dict())
    return LRDifStage2.from_stage1(s1, diffusion=DiffusionConfig(**diffusion))


def test_normalised_epr_has_the_noise_scale(small: LRDifStage1) -> None:
    """Z and x_S2 at unit scale per dimension: the diffusion's noise does not drown Z."""
    s2 = _normalised(small).eval()
    images, labels = torch.rand(4, 1, 48, 48), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        x = s2.normalize(images)
        for z in (s2.teacher(x, labels), s2.fpen_s2(x)):
            torch.testing.assert_close(z.mean(1), torch.zeros(4), atol=1e-5, rtol=0)
            torch.testing.assert_close(z.std(1, unbiased=False), torch.ones(4), atol=1e-2,
                                       rtol=0)
        # Unnormalised, the untrained FPEN's Z is far smaller than the noise.
        assert small.fpen_s1(x, labels).std(1).max() < 0.5


def test_reverse_chain_depends_on_its_start_and_on_x_s2(small: LRDifStage1) -> None:
    s2 = _normalised(small, insert_noise=True).eval()
    x_s2 = torch.randn(3, s2.config.epr_dim)
    with torch.no_grad():
        base = s2.estimate_epr(x_s2, None)
        assert (s2.estimate_epr(torch.randn_like(x_s2), None) - base).abs().max() > 1e-2
        s2.inference_noise = torch.randn_like(s2.inference_noise)
        assert (s2.estimate_epr(x_s2, None) - base).abs().max() > 1e-4


@pytest.mark.parametrize("insert_noise", [True, False])
def test_training_start_cannot_carry_the_label(small: LRDifStage1, insert_noise: bool) -> None:
    """Training starts the chain where inference does (Table 5 V2-V4 included): without
    inserted noise from 0, whatever Z; with it from q(Z_T | Z), nearly N(0, I) for a
    normalised Z (correlation sqrt(alpha_bar_T) ~ 0.05 with Z)."""
    s2 = _normalised(small, insert_noise=insert_noise).train()
    n, c = 4096, s2.config.epr_dim
    z = torch.nn.functional.layer_norm(torch.randn(n, c), (c,))
    x_s2 = torch.randn(n, c)
    with torch.no_grad():
        if not insert_noise:
            torch.manual_seed(0)
            a = s2.estimate_epr(x_s2, z)
            assert torch.equal(a, s2.estimate_epr(x_s2, -z))
            return
        z_T = s2.schedule.add_noise(z, torch.randn_like(z), s2.schedule.timesteps)
    corr = torch.corrcoef(torch.stack([z_T.flatten(), z.flatten()]))[0, 1]
    assert abs(float(corr)) < 0.1
    assert abs(float(z_T.std()) - 1.0) < 0.02


def test_stage1_label_free_path(small: LRDifStage1) -> None:
    images = torch.rand(3, 1, 48, 48)
    dropped = LRDifStage1(config=dataclasses.replace(small.config, label_dropout=0.5)).eval()
    dropped.load_state_dict(small.state_dict())
    with torch.no_grad():
        x = dropped.normalize(images)
        e_i = dropped.fpen_s1.image_encoder(x)
        zero_label = torch.cat([torch.zeros(3, dropped.fpen_s1.label_dim), e_i], dim=1)
        z = dropped.fpen_s1.layers(zero_label)
        assert torch.equal(dropped(images).epr, z)
        assert not torch.equal(dropped(images, labels=torch.tensor([0, 1, 2])).epr, z)


def test_parameterizations_and_inference_steps(small: LRDifStage1) -> None:
    images = torch.rand(2, 1, 48, 48)
    s2 = LRDifStage2.from_stage1(small, diffusion=DiffusionConfig(parameterization="x0")).eval()
    eps = LRDifStage2.from_stage1(small, diffusion=DiffusionConfig(parameterization="eps"))
    eps.load_state_dict(s2.state_dict())
    with torch.no_grad():
        # The same weights read as a Z_0 estimate or as a noise estimate: other EPRs.
        assert not torch.allclose(s2(images).epr, eps.eval()(images).epr)
        four = s2(images).epr
        s2.set_inference_steps(8)
        assert s2.inference_schedule.timesteps == 8 and s2.schedule.timesteps == 4
        eight = s2(images).epr
        assert eight.shape == four.shape and not torch.equal(eight, four)
        s2.set_inference_steps(4)
        assert torch.equal(s2(images).epr, four)


def test_no_diffusion_uses_fpen_s2_directly_and_ce_loss(small: LRDifStage1) -> None:
    s2 = LRDifStage2.from_stage1(
        small, diffusion=DiffusionConfig(use_diffusion=False), loss="ce"
    ).train()
    assert s2.denoiser is None
    images, labels = torch.rand(2, 1, 48, 48), torch.tensor([3, 4])
    out = s2(images, labels=labels)
    with torch.no_grad():
        assert torch.allclose(out.epr, s2.fpen_s2(s2.normalize(images)))
    losses = s2.loss(out, labels)
    assert torch.equal(losses["total"], losses["ce"]) and "kl" in losses
    with pytest.raises(ValueError, match="no diffusion"):
        s2.set_inference_steps(2)


def test_bad_inputs_are_clear(small: LRDifStage1) -> None:
    with pytest.raises(ValueError, match="needs the labels"):
        small(torch.rand(1, 1, 48, 48))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        small(torch.rand(1, 3, 48, 48), labels=torch.tensor([0]))
    s2 = LRDifStage2.from_stage1(small).train()
    with pytest.raises(ValueError, match="needs labels"):
        s2(torch.rand(1, 1, 48, 48))
    with pytest.raises(ValueError, match="in_channels"):
        LRDifConfig(in_channels=2)


def test_default_model_and_demo(capsys: pytest.CaptureFixture[str]) -> None:
    """The default config (MiniLM label prompts) builds; ``lrdif demo`` runs it honestly."""
    from lrdif.cli import main

    assert main(["demo"]) == 0
    printed = capsys.readouterr().out
    assert "untrained" in printed
    assert "lrdif_s2" in printed and "parameters" in printed


def test_image_token_feeds_e_i_to_the_fusion() -> None:
    """image_token: E_I(x) is one more fusion token in both stages, trained by L_ce, and
    copied into stage 2; without it the fusion has no such token (the paper's tokens)."""
    torch.manual_seed(0)
    s1 = LRDifStage1(config=_config(udcformer=SMALL, epr_dim=32, image_token=True,
                                    label_dropout=0.5))
    plain = LRDifStage1(config=_config(udcformer=SMALL, epr_dim=32))
    assert plain.udcformer.fusion.to_image_token is None
    extra = s1.udcformer.fusion.pos_embed.shape[1] - plain.udcformer.fusion.pos_embed.shape[1]
    assert extra == 1
    s1.train()
    images, labels = torch.rand(4, 1, 48, 48), torch.tensor([0, 3, 5, 7])
    s1.loss(s1(images, labels=labels), labels)["total"].backward()
    assert s1.udcformer.fusion.to_image_token.weight.grad.abs().sum() > 0
    s2 = LRDifStage2.from_stage1(s1).eval()
    token = s2.udcformer.fusion.to_image_token
    assert torch.equal(token.weight, s1.udcformer.fusion.to_image_token.weight)
    with torch.inference_mode():
        before = s2(images).logits
        token.weight.mul_(2)  # only the E_I token changes: so must the logits
        assert not torch.allclose(s2(images).logits, before)
    with pytest.raises(ValueError, match="image_features"):
        s2.udcformer(s2.normalize(images), torch.zeros(4, 32))


def test_image_head_starts_from_the_backbone_head_and_test_flip_averages_mirrors() -> None:
    """image_head: the logits add E_I's own classifier, copied into stage 2; test_flip:
    evaluation averages each face and its mirror (landmarks mirrored), training does not."""
    torch.manual_seed(0)
    s1 = LRDifStage1(config=_config(udcformer=SMALL, epr_dim=32, image_head=True,
                                    label_dropout=0.5))
    s2 = LRDifStage2.from_stage1(s1)
    assert torch.equal(s2.image_head.weight, s1.image_head.weight)
    s2.eval()
    images, points = torch.rand(3, 1, 48, 48), _landmarks(4)[:3]
    with torch.inference_mode():
        plain = s2(images).logits
        s2.image_head.weight.zero_()
        s2.image_head.bias.fill_(1.0)  # E_I's classifier adds 1 to every logit
        assert torch.allclose(s2(images).logits, plain + 1.0 - s1.image_head(
            s2.fpen_s2.image_encoder(s2.normalize(images))), atol=1e-5)
        mirrored_points = torch.stack([1 - points[..., 0], points[..., 1]], -1)
        one = s2(images, landmarks=points).logits
        other = s2(images.flip(-1), landmarks=mirrored_points).logits
        s2.config.test_flip = True
        both = s2(images, landmarks=points).logits
        assert torch.allclose(both, 0.5 * (one + other), atol=1e-5)
        assert torch.allclose(s2(images.flip(-1), landmarks=mirrored_points).logits, both,
                              atol=1e-5)
        s2.config.test_flip = False


def test_logit_offset_shifts_eval_logits_only_and_needs_one_value_per_class() -> None:
    """logit_offset (post-hoc logit adjustment) is added to the logits in eval mode, after
    flip averaging, and never in training."""
    torch.manual_seed(0)
    s1 = LRDifStage1(config=_config(udcformer=SMALL, epr_dim=32))
    s2 = LRDifStage2.from_stage1(s1)
    images = torch.rand(3, 1, 48, 48)
    offset = tuple(float(k) for k in range(len(s2.class_names)))
    s2.eval()
    with torch.inference_mode():
        plain = s2(images).logits
        s2.config.test_flip = True
        flipped = s2(images).logits
        s2.config = dataclasses.replace(s2.config, logit_offset=offset)
        assert torch.allclose(s2(images).logits, flipped + torch.tensor(offset), atol=1e-6)
        s2.config.test_flip = False
        assert torch.allclose(s2(images).logits, plain + torch.tensor(offset), atol=1e-6)
    s2.train()
    labels = torch.tensor([0, 1, 2])
    torch.manual_seed(1)
    raw = s2.forward_once(images, labels=labels).logits
    torch.manual_seed(1)
    assert torch.allclose(s2(images, labels=labels).logits, raw)
    with pytest.raises(ValueError, match="one value per class"):
        dataclasses.replace(s2.config, logit_offset=(0.0, 1.0))
