"""The LRDif stage wrappers (paper Sec. 3, Fig. 2): the models that are trained and saved.

- :class:`LRDifStage1` (MODELS ``lrdif_s1``, Fig. 2a): Z = FPEN_S1(Concat(E_L(y), E_I(x)))
  (Eq. 1) guides the UDCformer (Eq. 2-12); trained with L_ce (Eq. 13). Needs the label.
- :class:`LRDifStage2` (MODELS ``lrdif_s2``, Fig. 2b): x_S2 = FPEN_S2(E_I(x)) (Eq. 15)
  conditions a T-step reverse diffusion (Eq. 16) that estimates the EPR Z'_0 for the
  UDCformer; trained with L_total = L_ce + L_kl (Eq. 17, 18) against a frozen copy of
  FPEN_S1 (the teacher). At inference it uses no label and never calls the teacher.

Both take images (B, C_in, H, W) in [0, 1], normalise them once and feed the same
normalised, channels_last tensor to E_I and to the UDCformer. The exact meaning of the
diffusion options (parameterisation, insert noise) is in docs/model.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lrdif.diffusion.denoiser import Denoiser, reverse_process
from lrdif.diffusion.schedule import BetaSchedule, NoiseSchedule, Parameterization
from lrdif.losses import cross_entropy, epr_kl, total_loss
from lrdif.models.fpen import FPENS1, FPENS2
from lrdif.models.image_encoders import build_image_encoder
from lrdif.models.label_encoders import build_label_encoder
from lrdif.models.udcformer import UDCformer, UDCformerConfig
from lrdif.registry import MODELS
from lrdif.vocabulary import FERPLUS_CLASSES, IMAGE_MEAN, IMAGE_STD, ModelOutput


@dataclass
class DiffusionConfig:
    """The stage-2 prior (Sec. 3.3); ignored by stage 1. See docs/model.md."""

    timesteps: int = 4  # T; Fig. 6: accuracy saturates at 4
    beta_schedule: BetaSchedule = "linear_sqrt"
    beta_start: float = 0.1
    beta_end: float = 0.99
    parameterization: Parameterization = "x0"  # what the denoiser predicts: Z_0 or the noise
    insert_noise: bool = True  # training chain starts from a sample of q(Z_T | Z) (Table 5 V3)
    use_diffusion: bool = True  # False: x_S2 is the EPR (Table 5 S2-V1)


@dataclass
class LRDifConfig:
    """Architecture and stage-2 options of LRDif; stored in every checkpoint."""

    image_size: int = 48
    in_channels: int = 1
    class_names: tuple[str, ...] = FERPLUS_CLASSES
    epr_dim: int = 128  # C
    image_encoder: str = "conv"
    image_encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    label_encoder: str = "minilm"
    label_encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    fpen_layers: int = 2
    label_dropout: float = 0.0  # stage 1: P(E_L(y) -> 0) per training sample; 0 = paper
    # Z and x_S2 to zero mean, unit variance per sample (fpen.normalize_epr), the noise's
    # scale; False keeps checkpoints trained before this option as they were.
    normalize_epr: bool = False
    # E_I(x) joins the fusion transformer as one more token (udcformer.Fusion): the
    # pretrained encoder reaches the classifier directly, not only through Z. Not in the paper.
    image_token: bool = False
    # The logits add a linear classifier on E_I(x), started from the head of the fine-tuned
    # `backbone` classifier E_I comes from: LRDif starts where its backbone ends and the
    # UDCformer learns what to add to it. Not in the paper.
    image_head: bool = False
    # Evaluation averages the logits of each face and its mirror (landmarks mirrored too),
    # as the `backbone` baseline does; False keeps earlier checkpoints as they were.
    test_flip: bool = False
    # (K,) added to the logits in eval mode: post-hoc logit adjustment -tau log(prior)
    # (Menon et al., ICLR 2021), tau chosen on validation when a model is shipped
    # (benchmarks/ship_weights.py); empty = none. Training never sees it.
    logit_offset: tuple[float, ...] = ()
    udcformer: UDCformerConfig = field(default_factory=UDCformerConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    loss: Literal["ce", "total"] = "total"  # stage 2: Eq. 13 alone (S2-V2) or Eq. 18
    kl_temperature: float = 1.0  # stage 2: tau of Eq. 17 (1 = paper; see losses.epr_kl)

    def __post_init__(self) -> None:
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels}")
        if len(self.class_names) < 2 or len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"need >= 2 distinct class names, got {self.class_names}")
        if self.epr_dim < 1:
            raise ValueError(f"epr_dim must be positive, got {self.epr_dim}")
        if self.logit_offset and len(self.logit_offset) != len(self.class_names):
            raise ValueError(f"logit_offset needs one value per class ({len(self.class_names)}),"
                             f" got {len(self.logit_offset)}")


class _LRDifBase(nn.Module):
    """What both stages share: config, input normalisation, FPEN_S1 and UDCformer builders.

    ``pretrained=False`` skips what a checkpoint overwrites (pretrained CLIP weights,
    text embeddings of the class prompts); ``load_model`` builds models that way.
    ``image_encoder_weights``: the state dict of the E_I that the config names by file
    (``resnet18``), read by the caller (``lrdif.checkpoint.new_model`` does); needed when
    ``pretrained``. Each stage builds its parts in :meth:`_build_parts`.
    """

    config_class = LRDifConfig

    def __init__(
        self,
        *,
        config: LRDifConfig | None = None,
        pretrained: bool = True,
        image_encoder_weights: Mapping[str, Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.config = config = config or LRDifConfig()
        shape = (1, config.in_channels, 1, 1)
        self.register_buffer("mean", torch.full(shape, IMAGE_MEAN), persistent=False)
        self.register_buffer("std", torch.full(shape, IMAGE_STD), persistent=False)
        self._build_parts(pretrained, image_encoder_weights)

    def _build_parts(
        self, pretrained: bool, image_encoder_weights: Mapping[str, Tensor] | None
    ) -> None:
        raise NotImplementedError

    @classmethod
    def build_for_checkpoint(cls, config: LRDifConfig) -> _LRDifBase:
        """The architecture of ``config`` with nothing computed that a checkpoint overwrites
        (no pretrained weights loaded, no text encoder run); used by ``load_model``."""
        return cls(config=config, pretrained=False)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.config.class_names)

    def _build_fpen_s1(
        self, pretrained: bool, image_encoder_weights: Mapping[str, Tensor] | None
    ) -> FPENS1:
        c = self.config
        return FPENS1(
            image_encoder=self._build_image_encoder(pretrained, image_encoder_weights),
            label_encoder=build_label_encoder(
                c.label_encoder, class_names=c.class_names, pretrained=pretrained,
                kwargs=c.label_encoder_kwargs,
            ),
            epr_dim=c.epr_dim,
            num_layers=c.fpen_layers,
            label_dropout=c.label_dropout,
            normalize=c.normalize_epr,
        )

    def _build_image_encoder(
        self, pretrained: bool, weights: Mapping[str, Tensor] | None
    ) -> nn.Module:
        c = self.config
        return build_image_encoder(
            c.image_encoder, in_channels=c.in_channels, pretrained=pretrained,
            kwargs=c.image_encoder_kwargs, weights=weights,
        )

    def _build_image_head(
        self, image_feature_dim: int, weights: Mapping[str, Tensor] | None
    ) -> nn.Linear | None:
        """The E_I classifier of ``image_head`` (None when off), from the ``backbone``
        classifier's ``head`` when its state dict is at hand (a fresh stage 1)."""
        if not self.config.image_head:
            return None
        head = nn.Linear(image_feature_dim, len(self.config.class_names))
        if weights is not None and "head.weight" in weights:
            head.load_state_dict({"weight": weights["head.weight"], "bias": weights["head.bias"]})
        return head

    def forward(
        self, images: Tensor, *, landmarks: Tensor | None = None, labels: Tensor | None = None
    ) -> ModelOutput:
        """images (B, C_in, H, W) in [0, 1]; landmarks (B, P, 2) or None; labels (B,) /
        (B, K) or None -> :class:`ModelOutput` (see each stage's :meth:`forward_once`). With
        ``test_flip`` in eval mode the logits average the face and its mirror (one pass
        over both: a batch of 2B costs less than two of B); the other outputs are the
        face's own. In eval mode ``logit_offset`` is then added to the logits."""
        if self.training:
            return self.forward_once(images, landmarks=landmarks, labels=labels)
        one_pass = self._flip_averaged if self.config.test_flip else self.forward_once
        out = one_pass(images, landmarks=landmarks, labels=labels)
        if not self.config.logit_offset:
            return out
        offset = torch.tensor(self.config.logit_offset, dtype=out.logits.dtype,
                              device=out.logits.device)
        return out._replace(logits=out.logits + offset)

    def _flip_averaged(
        self, images: Tensor, *, landmarks: Tensor | None, labels: Tensor | None
    ) -> ModelOutput:
        """:meth:`forward_once` on the faces and their mirrors in one batch of 2B; the
        logits averaged, the other outputs the face's own."""
        b = images.shape[0]
        if landmarks is not None:
            mirrored = torch.stack([1.0 - landmarks[..., 0], landmarks[..., 1]], dim=-1)
            landmarks = torch.cat([landmarks, mirrored])
        out = self.forward_once(torch.cat([images, images.flip(-1)]), landmarks=landmarks,
                                labels=None if labels is None else torch.cat([labels, labels]))
        return ModelOutput(0.5 * (out.logits[:b] + out.logits[b:]), out.features[:b],
                           *(None if t is None else t[:b] for t in (out.epr, out.epr_teacher)))

    def forward_once(
        self, images: Tensor, *, landmarks: Tensor | None = None, labels: Tensor | None = None
    ) -> ModelOutput:
        raise NotImplementedError

    def decode(
        self, x: Tensor, epr: Tensor, landmarks: Tensor | None, e_i: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The UDCformer (Fig. 2c) on normalised images x (B, C_in, H, W) given the EPR
        (B, C), with E_I(x) (B, D_I) as a fusion token (``image_token``) and its own
        classifier added (``image_head``) -> logits (B, K), fused features (B, D)."""
        logits, features = self.udcformer(x, epr, landmarks,
                                          e_i if self.config.image_token else None)
        return self.classify(logits, e_i), features

    def classify(self, logits: Tensor, e_i: Tensor) -> Tensor:
        """The UDCformer's logits (B, K) plus, with ``image_head``, E_I's own (B, K)."""
        return logits if self.image_head is None else logits + self.image_head(e_i)

    def _build_udcformer(self, image_feature_dim: int) -> UDCformer:
        c = self.config
        return UDCformer(
            config=c.udcformer, in_channels=c.in_channels, image_size=c.image_size,
            num_classes=len(c.class_names), epr_dim=c.epr_dim,
            image_feature_dim=image_feature_dim if c.image_token else None,
        )

    def normalize(self, images: Tensor) -> Tensor:
        """images (B, C_in, H, W) in [0, 1] -> normalised, channels_last."""
        c = self.config
        if images.ndim != 4 or images.shape[1] != c.in_channels:
            raise ValueError(
                f"expected images (B, {c.in_channels}, H, W) in [0, 1], got {tuple(images.shape)}"
            )
        x = (images - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last)


@MODELS.register("lrdif_s1")
class LRDifStage1(_LRDifBase):
    """Stage 1 (Fig. 2a): FPEN_S1 (with the label) + UDCformer, trained with L_ce.

    Built as ``LRDifStage1(config=..., pretrained=True, image_encoder_weights=None)``
    (see :class:`_LRDifBase`).
    """

    registry_name = "lrdif_s1"

    def _build_parts(
        self, pretrained: bool, image_encoder_weights: Mapping[str, Tensor] | None
    ) -> None:
        self.fpen_s1 = self._build_fpen_s1(pretrained, image_encoder_weights)
        self.udcformer = self._build_udcformer(self.fpen_s1.image_encoder.out_dim)
        self.image_head = self._build_image_head(self.fpen_s1.image_encoder.out_dim,
                                                 image_encoder_weights if pretrained else None)

    def forward_once(
        self, images: Tensor, *, landmarks: Tensor | None = None, labels: Tensor | None = None
    ) -> ModelOutput:
        """images (B, C_in, H, W); labels (B,) or (B, K); landmarks (B, P, 2) or None.

        ``labels=None`` runs the label-free path (E_L(y) = 0, what label dropout trains):
        the image path that stage 2 inherits, on which stage 1 is selected.
        """
        if labels is None and self.config.label_dropout == 0:
            raise ValueError("stage 1 needs the labels: its EPR Z is computed from them "
                             "(Eq. 1); only a stage 1 trained with label_dropout > 0 runs "
                             "without them")
        x = self.normalize(images)
        e_i = self.fpen_s1.image_encoder(x)  # (B, D_I)
        z = self.fpen_s1(x, labels, e_i)  # (B, C), Eq. 1
        logits, features = self.decode(x, z, landmarks, e_i)  # (B, K), (B, D)
        return ModelOutput(logits=logits, features=features, epr=z, epr_teacher=None)

    def loss(self, output: ModelOutput, labels: Tensor) -> dict[str, Tensor]:
        """{"total", "ce"}: Eq. 13 averaged over the batch."""
        ce = cross_entropy(output.logits, labels)
        return {"total": ce, "ce": ce}


@MODELS.register("lrdif_s2")
class LRDifStage2(_LRDifBase):
    """Stage 2 (Fig. 2b): FPEN_S2 + denoiser + UDCformer, with FPEN_S1 frozen as teacher.

    Build it from a trained stage 1 with :meth:`from_stage1`. The teacher's weights are
    part of the state dict (a stage-2 checkpoint is self-contained); they never train
    and the teacher stays in eval mode. ``use_diffusion=False`` builds no denoiser.
    Constructor arguments as in :class:`LRDifStage1`.
    """

    registry_name = "lrdif_s2"

    def _build_parts(
        self, pretrained: bool, image_encoder_weights: Mapping[str, Tensor] | None
    ) -> None:
        c = self.config
        self.teacher = self._build_fpen_s1(pretrained, image_encoder_weights)
        # A frozen E_I (resnet18, clip) is the same in teacher and student: share it, so
        # it is stored and run once; a trainable one (conv) gets its own copy.
        self.shares_image_encoder = not any(
            p.requires_grad for p in self.teacher.image_encoder.parameters()
        )
        self.teacher.requires_grad_(False).eval()
        image_encoder = (self.teacher.image_encoder if self.shares_image_encoder
                         else self._build_image_encoder(pretrained, image_encoder_weights))
        self.fpen_s2 = FPENS2(image_encoder=image_encoder, epr_dim=c.epr_dim,
                              num_layers=c.fpen_layers, normalize=c.normalize_epr)
        d = c.diffusion
        self.denoiser = Denoiser(epr_dim=c.epr_dim) if d.use_diffusion else None
        self.schedule = NoiseSchedule.build(
            timesteps=d.timesteps, beta_schedule=d.beta_schedule, beta_start=d.beta_start,
            beta_end=d.beta_end,
        )
        self.inference_schedule = self.schedule
        # One fixed draw of N(0, I): with inserted noise, inference starts the chain from a
        # sample of the distribution training starts from, the same for every face.
        noise = torch.randn(c.epr_dim, generator=torch.Generator().manual_seed(0))
        self.register_buffer("inference_noise", noise, persistent=False)
        self.udcformer = self._build_udcformer(image_encoder.out_dim)
        self.image_head = self._build_image_head(image_encoder.out_dim, None)

    @classmethod
    def from_stage1(
        cls,
        stage1: LRDifStage1,
        *,
        diffusion: DiffusionConfig | None = None,
        loss: Literal["ce", "total"] | None = None,
        kl_temperature: float | None = None,
    ) -> LRDifStage2:
        """Stage 2 initialised from a trained stage 1 (DiffIR's recipe).

        UDCformer: copied. Teacher: a frozen copy of FPEN_S1. FPEN_S2: E_I and the
        layers copied from FPEN_S1, the first layer restricted to its E_I columns
        (:meth:`FPENS2.init_from_fpen_s1`). Denoiser: fresh. ``diffusion``, ``loss`` and
        ``kl_temperature`` replace the stage-1 config's entries when given.
        """
        given = {"diffusion": diffusion, "loss": loss, "kl_temperature": kl_temperature}
        config = dataclasses.replace(
            stage1.config, **{k: v for k, v in given.items() if v is not None}
        )
        model = cls(config=config, pretrained=False)
        model.teacher.load_state_dict(stage1.fpen_s1.state_dict())
        model.fpen_s2.init_from_fpen_s1(stage1.fpen_s1)
        model.udcformer.load_state_dict(stage1.udcformer.state_dict())
        if model.image_head is not None:
            model.image_head.load_state_dict(stage1.image_head.state_dict())
        device = next(stage1.parameters()).device
        return model.to(device)

    def train(self, mode: bool = True) -> LRDifStage2:
        super().train(mode)
        self.teacher.eval()  # frozen: never in training mode
        return self

    def set_inference_steps(self, steps: int) -> None:
        """Run the inference chain in ``steps`` steps (Fig. 6), re-spaced over the trained
        noise range (:meth:`NoiseSchedule.respaced`); training always uses the trained T."""
        if self.denoiser is None:
            raise ValueError("this stage-2 model has no diffusion (use_diffusion=False)")
        self.inference_schedule = self.schedule.respaced(steps)

    def estimate_epr(self, x_s2: Tensor, z_teacher: Tensor | None) -> Tensor:
        """Z'_0 (B, C) from the condition x_S2 (B, C); see docs/model.md for the settings.

        Training and inference start from the same distribution, so the chain cannot
        learn to read the label from its start. With inserted noise (Table 5 V3), training
        starts from q(Z_T | Z) (Eq. 14), a sample of about N(0, I) when Z is normalised,
        and inference from one fixed draw of N(0, I); without (V2, V4), both start from
        Z_T = 0. Training runs the trained T steps with gradients; inference the
        inference schedule, deterministic.
        """
        if self.denoiser is None:
            return x_s2  # Table 5 S2-V1: FPEN_S2's output is the EPR
        d = self.config.diffusion
        if self.training:
            if z_teacher is None:
                raise ValueError("stage-2 training needs labels: the chain starts from Z")
            T = self.schedule.timesteps
            if d.insert_noise:
                z_T = self.schedule.add_noise(z_teacher, torch.randn_like(z_teacher), T)
            else:
                z_T = torch.zeros_like(x_s2)
            schedule = self.schedule
        else:
            z_T = (self.inference_noise.to(x_s2.dtype).expand_as(x_s2) if d.insert_noise
                   else torch.zeros_like(x_s2))
            schedule = self.inference_schedule
        return reverse_process(
            self.denoiser, schedule, x_s2=x_s2, z_T=z_T, parameterization=d.parameterization
        )

    def forward_once(
        self, images: Tensor, *, landmarks: Tensor | None = None, labels: Tensor | None = None
    ) -> ModelOutput:
        """images (B, C_in, H, W); landmarks (B, P, 2) or None; labels (B,) / (B, K) or None.

        Labels are needed in training (the chain starts from the teacher's Z) and give
        ``epr_teacher`` for L_kl whenever present; inference needs none.
        """
        x = self.normalize(images)
        e_i = self.fpen_s2.image_encoder(x)  # (B, D_I)
        x_s2 = self.fpen_s2(x, e_i)  # (B, C), Eq. 15
        z_teacher = None
        if labels is not None:
            with torch.no_grad():  # Eq. 1, frozen
                z_teacher = self.teacher(x, labels, e_i if self.shares_image_encoder else None)
        epr = self.estimate_epr(x_s2, z_teacher)  # (B, C), Eq. 16 x T
        logits, features = self.decode(x, epr, landmarks, e_i)  # (B, K), (B, D)
        return ModelOutput(logits=logits, features=features, epr=epr, epr_teacher=z_teacher)

    def loss(self, output: ModelOutput, labels: Tensor) -> dict[str, Tensor]:
        """{"total", "ce", "kl"}: "kl" (Eq. 17) whenever the teacher's Z is in ``output``;
        "total" is Eq. 18 (loss="total") or the cross-entropy alone (loss="ce", S2-V2)."""
        ce = cross_entropy(output.logits, labels)
        out = {"ce": ce}
        if output.epr_teacher is not None:
            out["kl"] = epr_kl(output.epr_teacher, output.epr, self.config.kl_temperature)
        if self.config.loss == "total":
            if "kl" not in out:
                raise ValueError("loss='total' needs epr_teacher: call forward with labels")
            out["total"] = total_loss(ce, out["kl"])
        else:
            out["total"] = ce
        return out
