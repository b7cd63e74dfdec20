"""Prior encoders E_I and E_L: the offline conv / MiniLM / learned ones and real CLIP loading.

CLIP is tested on a tiny randomly initialised CLIP (model and tokenizer) that the test
saves with ``save_pretrained`` and that the encoders load through the same
``from_pretrained`` code users run on a downloaded CLIP.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from lrdif.models import image_encoders, label_encoders
from lrdif.models.image_encoders import ConvImageEncoder, build_image_encoder
from lrdif.models.label_encoders import DEFAULT_PROMPT, build_label_encoder
from lrdif.vocabulary import FERPLUS_CLASSES, IMAGE_MEAN, IMAGE_STD

# --------------------------------------------------------------------------- conv / learned


@pytest.mark.parametrize(("channels", "size"), [(1, 48), (3, 112)])
def test_conv_image_encoder_shapes(channels: int, size: int) -> None:
    enc = build_image_encoder("conv", in_channels=channels, pretrained=True, kwargs={})
    for batch in (1, 8):
        out = enc(torch.randn(batch, channels, size, size))
        assert out.shape == (batch, enc.out_dim)


def test_conv_image_encoder_is_cheap_at_48() -> None:
    enc = ConvImageEncoder(in_channels=1)
    with FlopCounterMode(display=False) as counter:
        enc(torch.randn(1, 1, 48, 48))
    assert 10e6 < counter.get_total_flops() < 100e6  # "tens of MFLOPs"


def test_learned_label_encoder_hard_and_soft_labels() -> None:
    enc = build_label_encoder("learned", class_names=FERPLUS_CLASSES, pretrained=True,
                              kwargs={"dim": 16})
    labels = torch.tensor([0, 3, 7])
    hard = enc(labels)
    assert hard.shape == (3, 16)
    assert torch.allclose(enc(F.one_hot(labels, 8).float()), hard)
    mix = torch.zeros(1, 8)
    mix[0, 1] = mix[0, 2] = 0.5
    assert torch.allclose(enc(mix), 0.5 * (enc(torch.tensor([1])) + enc(torch.tensor([2]))))


def test_bad_encoder_names_and_kwargs() -> None:
    with pytest.raises(KeyError, match=r"unknown image encoder 'resnet'; known: backbone, clip"):
        build_image_encoder("resnet", in_channels=1, pretrained=True, kwargs={})
    with pytest.raises(ValueError, match="widthz"):
        build_image_encoder("conv", in_channels=1, pretrained=True, kwargs={"widthz": [8]})
    with pytest.raises(ValueError, match="model"):  # clip needs its model path
        build_label_encoder("clip", class_names=FERPLUS_CLASSES, pretrained=True, kwargs={})
    with pytest.raises(ValueError, match=r"\{label\}"):
        label_encoders.class_prompts(FERPLUS_CLASSES, "a face")


# --------------------------------------------------------------------------- MiniLM


def test_minilm_label_encoder_loads_and_separates_classes() -> None:
    enc = build_label_encoder("minilm", class_names=FERPLUS_CLASSES, pretrained=True, kwargs={})
    table = enc.embeddings
    assert table.shape == (8, label_encoders.MINILM_DIM)
    assert torch.allclose(table.norm(dim=1), torch.ones(8), atol=1e-4)
    cos = table @ table.T
    off_diagonal = cos[~torch.eye(8, dtype=torch.bool)]
    assert off_diagonal.max() < 0.98  # eight different prompts, eight different vectors
    # Semantics, not noise: the same prompt embeds the same way again.
    again = label_encoders.minilm_embeddings([DEFAULT_PROMPT.format(label="happiness")])
    assert torch.allclose(again[0], table[1], atol=1e-5)
    assert torch.equal(enc(torch.tensor([2, 5])), table[[2, 5]])


def test_text_embeddings_are_restored_without_the_text_model(monkeypatch) -> None:
    enc = build_label_encoder("minilm", class_names=FERPLUS_CLASSES, pretrained=True, kwargs={})

    def refuse(*args, **kwargs):
        raise AssertionError("the text encoder must not run when loading")

    monkeypatch.setattr(label_encoders, "minilm_embeddings", refuse)
    empty = build_label_encoder("minilm", class_names=FERPLUS_CLASSES, pretrained=False, kwargs={})
    assert not torch.equal(empty.embeddings, enc.embeddings)
    empty.load_state_dict(enc.state_dict())
    assert torch.equal(empty.embeddings, enc.embeddings)


# --------------------------------------------------------------------------- CLIP


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised CLIP and a character-level CLIP tokenizer, saved like a hub model."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    path = tmp_path_factory.mktemp("tiny-clip")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    tokenizer.save_pretrained(path)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 64,
            "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1,
        },
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "image_size": 32, "patch_size": 8,
        },
        projection_dim=24,
    )
    CLIPModel(config).save_pretrained(path)
    assert json.loads((path / "config.json").read_text())["projection_dim"] == 24
    return path


def test_clip_image_encoder_loads_a_saved_clip(tiny_clip: Path) -> None:
    from transformers import CLIPModel

    enc = build_image_encoder("clip", in_channels=3, pretrained=True,
                              kwargs={"model": str(tiny_clip)})
    assert enc.out_dim == 24
    assert not any(p.requires_grad for p in enc.parameters())  # frozen
    enc.train()
    assert not enc.training
    images = torch.rand(2, 3, 48, 48)
    normalised = (images - IMAGE_MEAN) / IMAGE_STD
    out = enc(normalised)
    assert out.shape == (2, 24)
    # Independent reference: CLIP's own image features on CLIP-normalised 32x32 pixels.
    reference = CLIPModel.from_pretrained(tiny_clip).eval()
    pixels = F.interpolate(images, size=(32, 32), mode="bilinear", antialias=True)
    mean = torch.tensor(image_encoders.CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(image_encoders.CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = reference.visual_projection(
            reference.vision_model(pixel_values=(pixels - mean) / std).pooler_output
        )
    assert torch.allclose(out, expected, atol=1e-5)


def test_clip_image_encoder_grey_equals_replicated_rgb(tiny_clip: Path) -> None:
    grey = build_image_encoder("clip", in_channels=1, pretrained=True,
                               kwargs={"model": str(tiny_clip)})
    rgb = build_image_encoder("clip", in_channels=3, pretrained=True,
                              kwargs={"model": str(tiny_clip)})
    x = torch.randn(2, 1, 48, 48)
    assert torch.allclose(grey(x), rgb(x.expand(-1, 3, -1, -1)), atol=1e-6)


def test_clip_image_encoder_rebuilds_from_config_only(tiny_clip: Path) -> None:
    trained = build_image_encoder("clip", in_channels=3, pretrained=True,
                                  kwargs={"model": str(tiny_clip)})
    skeleton = build_image_encoder("clip", in_channels=3, pretrained=False,
                                   kwargs={"model": str(tiny_clip)})
    x = torch.randn(1, 3, 32, 32)
    assert not torch.allclose(skeleton(x), trained(x))
    skeleton.load_state_dict(trained.state_dict())
    assert torch.equal(skeleton(x), trained(x))


def test_clip_label_encoder_embeds_prompts(tiny_clip: Path) -> None:
    from transformers import AutoTokenizer, CLIPModel

    enc = build_label_encoder("clip", class_names=FERPLUS_CLASSES, pretrained=True,
                              kwargs={"model": str(tiny_clip)})
    assert enc.embeddings.shape == (8, 24)
    # Independent reference through CLIPModel.get_text_features.
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    tokens = AutoTokenizer.from_pretrained(tiny_clip)(
        [DEFAULT_PROMPT.format(label=n) for n in FERPLUS_CLASSES], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        feats = model.get_text_features(**tokens)
    feats = getattr(feats, "pooler_output", feats)
    assert torch.allclose(enc.embeddings, F.normalize(feats, dim=1), atol=1e-5)
    cos = enc.embeddings @ enc.embeddings.T
    assert cos[~torch.eye(8, dtype=torch.bool)].max() < 0.9999
    skeleton = build_label_encoder("clip", class_names=FERPLUS_CLASSES, pretrained=False,
                                   kwargs={"model": str(tiny_clip)})
    skeleton.load_state_dict(enc.state_dict())
    assert torch.equal(skeleton.embeddings, enc.embeddings)


def test_missing_clip_gives_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="cannot load a CLIP model"):
        build_image_encoder("clip", in_channels=3, pretrained=True,
                            kwargs={"model": str(tmp_path / "nowhere")})


# --------------------------------------------------------------------------- resnet18

TINY_WIDTHS, TINY_BLOCKS = (8, 16), (1, 1)


@pytest.fixture(scope="module")
def resnet_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small trained-looking ResNet-18: random weights, non-trivial batch-norm statistics."""
    from lrdif.checkpoint import save_checkpoint
    from lrdif.models.baselines import ResNet18, ResNet18Config

    torch.manual_seed(0)
    net = ResNet18(config=ResNet18Config(widths=TINY_WIDTHS, blocks=TINY_BLOCKS))
    net.train()
    with torch.no_grad():
        for _ in range(3):  # move the running statistics away from (0, 1)
            net(torch.rand(16, 1, 48, 48) * 0.5 + 0.3)
    path = tmp_path_factory.mktemp("r18") / "best.safetensors"
    save_checkpoint(path, net.eval())
    return path


def _resnet_encoder(path: Path, pretrained: bool = True) -> image_encoders.ResNetImageEncoder:
    from lrdif.checkpoint import encoder_source_weights

    return build_image_encoder("resnet18", in_channels=1, pretrained=pretrained, kwargs={
        "checkpoint": str(path), "widths": list(TINY_WIDTHS), "blocks": list(TINY_BLOCKS)},
        weights=encoder_source_weights("resnet18", path) if pretrained else None)


def test_resnet_encoder_is_the_checkpoints_trunk_and_frozen(resnet_checkpoint: Path) -> None:
    from lrdif.checkpoint import load_model

    net = load_model(resnet_checkpoint)
    enc = _resnet_encoder(resnet_checkpoint)
    enc.train()  # stays in eval mode: the trained batch-norm statistics are used
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    images = torch.rand(4, 1, 48, 48)
    x = (images - IMAGE_MEAN) / IMAGE_STD  # what LRDif feeds E_I
    with torch.no_grad():
        expected = net(images).features  # the baseline's pooled features (B, 16)
    assert enc(x).shape == (4, 16)
    torch.testing.assert_close(enc(x), expected)
    # Built for a checkpoint (no file read): same architecture, weights still to load.
    skeleton = _resnet_encoder(Path("absent.safetensors"), pretrained=False)
    skeleton.load_state_dict(enc.state_dict())
    torch.testing.assert_close(skeleton(x), expected)


def test_resnet_encoder_refuses_other_checkpoints(resnet_checkpoint: Path,
                                                  tmp_path: Path) -> None:
    from lrdif.checkpoint import CheckpointError, encoder_source_weights, save_checkpoint
    from lrdif.models import LRDifConfig, LRDifStage1

    with pytest.raises(CheckpointError, match=r"does not match the image encoder.*widths"):
        build_image_encoder("resnet18", in_channels=1, pretrained=True,
                            kwargs={"checkpoint": str(resnet_checkpoint)},  # default widths
                            weights=encoder_source_weights("resnet18", resnet_checkpoint))
    with pytest.raises(ValueError, match=r"needs the weights of .*lrdif.checkpoint.new_model"):
        build_image_encoder("resnet18", in_channels=1, pretrained=True,
                            kwargs={"checkpoint": str(resnet_checkpoint)})
    other = tmp_path / "s1.safetensors"
    save_checkpoint(other, LRDifStage1(config=LRDifConfig(label_encoder="learned")))
    with pytest.raises(CheckpointError, match=r"'lrdif_s1' model; the resnet18 image encoder"):
        _resnet_encoder(other)
    with pytest.raises(CheckpointError, match=r"absent.safetensors: no such resnet18.*lrdif train"):
        _resnet_encoder(tmp_path / "absent.safetensors")


def test_backbone_encoder_gives_the_backbone_its_own_input() -> None:
    """E_I ``backbone`` undoes the package's normalisation and applies the backbone's."""
    from lrdif.models.backbones import IMAGENET_MEAN, IMAGENET_STD
    from lrdif.vocabulary import IMAGE_MEAN, IMAGE_STD

    enc = build_image_encoder("backbone", in_channels=1, pretrained=True,
                              kwargs={"input_size": 64}).eval()
    images = torch.rand(2, 1, 48, 48)
    with torch.inference_mode():
        got = enc((images - IMAGE_MEAN) / IMAGE_STD)
        up = torch.nn.functional.interpolate(images, size=(64, 64), mode="bilinear",
                                             align_corners=False).expand(-1, 3, -1, -1)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        want = enc.backbone.features((up - mean) / std).mean(dim=(2, 3))
    assert got.shape == (2, 1280)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_backbone_encoder_starts_from_a_finetuned_classifier(tmp_path: Path) -> None:
    from lrdif.checkpoint import CheckpointError, new_model, save_checkpoint
    from lrdif.models import LRDifConfig, LRDifStage1
    from lrdif.models.baselines import BackboneClassifier, ResNet18

    torch.manual_seed(0)
    classifier = BackboneClassifier(pretrained=False)
    save_checkpoint(tmp_path / "backbone.safetensors", classifier)  # random weights
    path = str(tmp_path / "backbone.safetensors")
    config = LRDifConfig(image_encoder="backbone", label_encoder="learned",
                         image_encoder_kwargs={"checkpoint": path})
    model = new_model(LRDifStage1, config)
    mine = model.fpen_s1.image_encoder.backbone.state_dict()
    theirs = classifier.backbone.state_dict()
    assert set(mine) == set(theirs) and all(torch.equal(mine[k], theirs[k]) for k in mine)
    save_checkpoint(tmp_path / "r18.safetensors", ResNet18())
    wrong = LRDifConfig(image_encoder="backbone", label_encoder="learned",
                        image_encoder_kwargs={"checkpoint": str(tmp_path / "r18.safetensors")})
    with pytest.raises(CheckpointError, match="needs a 'backbone' checkpoint"):
        new_model(LRDifStage1, wrong)
