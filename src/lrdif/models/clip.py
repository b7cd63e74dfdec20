"""The CLIP model (``transformers``) that both CLIP prior encoders read (paper Sec. 3.1).

E_I ``clip`` (:mod:`lrdif.models.image_encoders`) keeps its image tower, E_L ``clip``
(:mod:`lrdif.models.label_encoders`) embeds the class prompts with its text tower.
"""

from __future__ import annotations

from torch import nn


def load_clip(model: str, *, pretrained: bool) -> nn.Module:
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
