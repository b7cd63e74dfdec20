"""Recognizer: inputs of every kind, faces, batching, videos, bad inputs, exports."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from lrdif.checkpoint import save_checkpoint
from lrdif.data.images import read_image
from lrdif.models.baselines import ResNet18, ResNet18Config
from lrdif.predict import recognizer as recognizer_module
from lrdif.predict.faces import Face, crop_faces
from lrdif.predict.recognizer import NoDefaultWeightsError, Recognizer
from lrdif.predict.records import NO_FACE, RECORD_KEYS, Predictions

ASTRONAUT = Path(__file__).parents[1] / "src" / "lrdif" / "assets" / "astronaut.jpg"
ASTRONAUT_FACE = (180, 70, 90, 105)  # hairline to chin, marked by hand


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A real (small, untrained) classifier saved the way `lrdif train` saves one."""
    torch.manual_seed(0)
    model = ResNet18(config=ResNet18Config(widths=(8, 16), blocks=(1, 1)))
    # Random BN statistics so that the outputs depend on the input clearly.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.normal_(m.bias, 0.0, 0.3)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, model, meta={})
    return path


@pytest.fixture(scope="module")
def recognizer(checkpoint) -> Recognizer:
    return Recognizer.from_checkpoint(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return read_image(ASTRONAUT)


def direct_probabilities(recognizer: Recognizer, crops: np.ndarray) -> np.ndarray:
    """The model run by hand on uint8 crops (N, C, H, W): the reference for the pipeline."""
    with torch.no_grad():
        logits = recognizer.model(torch.from_numpy(crops).float() / 255).logits
    return torch.softmax(logits, dim=1).numpy()


def test_no_default_weights_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(recognizer_module, "DEFAULT_WEIGHTS", tmp_path / "absent.safetensors")
    with pytest.raises(NoDefaultWeightsError, match="default model of lrdif is not installed") as e:
        Recognizer()
    assert "lrdif train" in str(e.value) and "from_checkpoint" in str(e.value)


def test_the_shipped_model_is_the_one_its_card_describes():
    """The package's default weights: a stage-2 LRDif of at most 25 MB, trained on clean
    and UDC (T-OLED and P-OLED) faces, whose SHA-256 and test accuracy are the ones its
    model card states (the card is made from the file)."""
    import hashlib
    import re

    from lrdif.checkpoint import load_checkpoint

    path = recognizer_module.DEFAULT_WEIGHTS
    card = (path.parent / "MODEL_CARD.md").read_text()
    assert path.stat().st_size <= 25_000_000
    assert hashlib.sha256(path.read_bytes()).hexdigest() in card
    shipped = load_checkpoint(path)
    meta = shipped.meta
    assert shipped.model_name == "lrdif_s2"
    displays = {(m or {}).get("settings", {}).get("simulator", {}).get("display")
                for m in meta["udc_manifests"].values()}
    assert displays == {None, "toled", "poled"}  # clean, T-OLED and P-OLED faces
    assert meta["train_config"]["data"]["val_split"] == "valid"  # selected on validation
    rec = Recognizer(device="cpu")
    (face,) = rec.predict(ASTRONAUT)
    assert face["dominant_emotion"] in rec.class_names
    assert re.search(r"\| UDC-FERPlus toled .*\| 3137 \| \d+\.\d\d% \|", card)


def test_the_fast_model_is_the_one_its_card_describes():
    """The shipped ``fast`` model: a MobileNetV2 classifier at 48 px without mirror
    averaging, at most 25 MB, trained on clean and UDC faces, whose SHA-256 and test
    accuracy its card states."""
    import hashlib
    import re

    from lrdif.checkpoint import load_checkpoint

    path = recognizer_module.FAST_WEIGHTS
    card = (path.parent / "FAST_MODEL_CARD.md").read_text()
    assert path.stat().st_size <= 25_000_000
    assert hashlib.sha256(path.read_bytes()).hexdigest() in card
    shipped = load_checkpoint(path)
    assert shipped.model_name == "backbone"
    assert (shipped.config["input_size"], shipped.config["test_flip"]) == (48, False)
    assert {(m or {}).get("settings", {}).get("simulator", {}).get("display")
            for m in shipped.meta["udc_manifests"].values()} == {None, "toled", "poled"}
    rec = Recognizer("fast", device="cpu")
    (face,) = rec.predict(ASTRONAUT)
    assert face["dominant_emotion"] in rec.class_names
    assert re.search(r"\| UDC-FERPlus toled .*\| 3137 \| \d+\.\d\d% \|", card)


def test_default_weights_load_when_present(monkeypatch, checkpoint):
    monkeypatch.setattr(recognizer_module, "DEFAULT_WEIGHTS", checkpoint)
    assert Recognizer(device="cpu").weights == checkpoint


def test_one_face_in_a_photo(recognizer, astronaut):
    (record,) = recognizer.predict(ASTRONAUT)
    assert tuple(record) == RECORD_KEYS
    assert record["source"] == str(ASTRONAUT) and record["error"] is None
    assert record["frame"] is None and record["time"] is None
    x, y, w, h = record["box"]
    overlap = max(0, min(x + w, 270) - max(x, 180)) * max(0, min(y + h, 175) - max(y, 70))
    assert overlap > 0.5 * 90 * 105
    assert 0.5 < record["face_confidence"] < 1.0
    assert list(record["emotions"]) == list(recognizer.class_names)
    probs = np.array(list(record["emotions"].values()))
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert record["dominant_emotion"] == recognizer.class_names[int(probs.argmax())]
    # The probabilities are the model's on the detector's crop, nothing else.
    crop = crop_faces(astronaut, [tuple(record["box"])], size=(48, 48), channels=1)
    np.testing.assert_allclose(probs, direct_probabilities(recognizer, crop)[0], atol=1e-5)


def test_picture_without_a_face_says_so(recognizer):
    (record,) = recognizer.predict(np.full((480, 640, 3), 128, np.uint8))
    assert record["error"] == NO_FACE
    assert record["box"] is None and record["emotions"] is None
    assert record["source"] == "<array 0>"


def test_every_input_kind_gives_the_same_answer(recognizer, astronaut, tmp_path):
    data = ASTRONAUT.read_bytes()
    inputs = [str(ASTRONAUT), ASTRONAUT, data, Image.open(io.BytesIO(data)), astronaut]
    predictions = recognizer.predict(inputs)
    assert [r["source"] for r in predictions] == [
        str(ASTRONAUT), str(ASTRONAUT), "<bytes 2>", "<PIL 3>", "<array 4>",
    ]
    first = predictions[0]
    for record in predictions[1:]:
        assert record["box"] == first["box"]
        for name, p in first["emotions"].items():
            assert record["emotions"][name] == pytest.approx(p, abs=1e-6)


def test_folder_is_searched_recursively_for_images_only(recognizer, tmp_path):
    (tmp_path / "b").mkdir()
    crop = (read_image(ASTRONAUT, mode="L")[70:175, 170:275])
    for name in ("a.png", "b/c.jpg"):
        cv2.imwrite(str(tmp_path / name), crop)
    (tmp_path / "label.csv").write_text("a.png,1\n")
    predictions = recognizer.predict(tmp_path, detect=False)
    assert [Path(r["source"]).relative_to(tmp_path).as_posix() for r in predictions] == [
        "a.png", "b/c.jpg",
    ]


def test_no_detect_uses_the_whole_picture(recognizer):
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (5, 48, 48), dtype=np.uint8)
    predictions = recognizer.predict(list(faces), detect=False)
    assert [r["box"] for r in predictions] == [[0, 0, 48, 48]] * 5
    assert all(r["face_confidence"] is None for r in predictions)
    got = np.array([list(r["emotions"].values()) for r in predictions])
    np.testing.assert_allclose(got, direct_probabilities(recognizer, faces[:, None]), atol=1e-5)


def test_batch_size_does_not_change_results_or_order(checkpoint):
    rng = np.random.default_rng(1)
    faces = list(rng.integers(0, 256, (11, 60, 60), dtype=np.uint8))
    one = Recognizer(checkpoint, device="cpu", batch_size=1).predict(faces, detect=False)
    many = Recognizer(checkpoint, device="cpu", batch_size=4).predict(faces, detect=False)
    assert [r["source"] for r in one] == [f"<array {i}>" for i in range(11)]
    for a, b in zip(one, many, strict=True):
        assert a["source"] == b["source"]
        np.testing.assert_allclose(list(a["emotions"].values()), list(b["emotions"].values()),
                                   atol=1e-5)


def test_a_plugged_in_detector_is_used(checkpoint):
    class TwoBoxes:
        margin = 0.0

        def detect(self, image):
            return [Face((0, 0, 10, 10), 0.9), Face((10, 10, 20, 20), 0.3)]

    recognizer = Recognizer(checkpoint, device="cpu", detector=TwoBoxes())
    predictions = recognizer.predict(np.zeros((40, 40), np.uint8))
    assert [r["box"] for r in predictions] == [[0, 0, 10, 10], [10, 10, 20, 20]]
    assert [r["face_confidence"] for r in predictions] == [0.9, 0.3]


def write_video(path: Path, frames: list[np.ndarray], fps: float) -> None:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def test_video_every_nth_frame_with_index_and_time(recognizer, astronaut, tmp_path):
    blank = np.full_like(astronaut, 90)
    frames = [astronaut if i % 2 == 0 else blank for i in range(10)]
    video = tmp_path / "clip.avi"
    write_video(video, frames, fps=5.0)
    predictions = recognizer.predict(video, every=3)
    assert [r["frame"] for r in predictions] == [0, 3, 6, 9]
    assert [r["time"] for r in predictions] == pytest.approx([0.0, 0.6, 1.2, 1.8])
    # Frames 0 and 6 show the face; 3 and 9 are blank.
    assert [r["error"] for r in predictions] == [None, NO_FACE, None, NO_FACE]


def test_bad_inputs_are_per_file_errors_and_the_rest_still_run(checkpoint, tmp_path):
    good = tmp_path / "good.jpg"
    good.write_bytes(ASTRONAUT.read_bytes())
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(ASTRONAUT.read_bytes()[:3000])
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture\n")
    huge = tmp_path / "huge.png"
    cv2.imwrite(str(huge), np.zeros((1000, 1000), np.uint8))
    video = tmp_path / "broken.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    missing = tmp_path / "missing.png"
    inputs = [truncated, text, huge, good, video, missing]
    recognizer = Recognizer(checkpoint, device="cpu", max_pixels=600 * 600)
    predictions = recognizer.predict(inputs)
    by_source = {r["source"]: r for r in predictions}
    assert list(by_source) == [str(p) for p in inputs]
    assert by_source[str(good)]["error"] is None
    for path in (truncated, text, huge, video, missing):
        error = by_source[str(path)]["error"]
        assert error.startswith(str(path)), error
    assert "exceeds max_pixels" in by_source[str(huge)]["error"]
    assert "expected a PNG, JPEG" in by_source[str(text)]["error"]
    assert len(predictions.failures) == 5 and len(predictions.faces) == 1


@pytest.mark.parametrize("kind", ["cmyk", "rgba", "16-bit"])
def test_unusual_but_valid_pictures_are_read_not_refused(recognizer, astronaut, kind):
    """CMYK JPEGs, RGBA PNGs and 16-bit PNGs are pictures: they are converted and classified."""
    crop = astronaut[70:175, 170:275]
    buffer = io.BytesIO()
    if kind == "cmyk":
        Image.fromarray(crop).convert("CMYK").save(buffer, "JPEG", quality=95)
    elif kind == "rgba":
        Image.fromarray(np.dstack([crop, np.full(crop.shape[:2], 255, np.uint8)])).save(
            buffer, "PNG"
        )
    else:
        grey = np.asarray(Image.fromarray(crop).convert("L")).astype(np.uint16) * 257
        buffer.write(cv2.imencode(".png", grey)[1].tobytes())
    (record,) = recognizer.predict(buffer.getvalue(), detect=False)
    (reference,) = recognizer.predict(crop, detect=False)
    assert record["error"] is None
    got, want = (np.array(list(r["emotions"].values())) for r in (record, reference))
    assert np.abs(got - want).max() < 0.05  # CMYK goes through lossy JPEG


def test_inputs_of_an_unknown_type_are_a_usage_error(recognizer):
    with pytest.raises(TypeError, match="expected a path"):
        recognizer.predict(42)
    with pytest.raises(ValueError, match="every"):
        recognizer.predict(ASTRONAUT, every=0)


def test_exports(recognizer, tmp_path):
    predictions = recognizer.predict([ASTRONAUT, np.zeros((64, 64), np.uint8)])
    assert json.loads(predictions.to_json(tmp_path / "out.json")) == list(predictions)
    assert json.loads((tmp_path / "out.json").read_text()) == list(predictions)
    csv_text = predictions.to_csv(tmp_path / "out.csv")
    header, face_row, empty_row = csv_text.splitlines()
    assert face_row.startswith(f"{ASTRONAUT},,,{predictions[0]['box'][0]},")
    assert header.split(",")[:8] == [
        "source", "frame", "time", "box_x", "box_y", "box_w", "box_h", "face_confidence",
    ]
    assert header.split(",")[8:10] == ["dominant_emotion", "confidence"]
    assert header.split(",")[10:-1] == list(recognizer.class_names)
    assert empty_row.endswith(NO_FACE)
    frame = predictions.to_dataframe()
    assert list(frame.columns[10:-1]) == list(recognizer.class_names)
    assert frame.loc[0, "confidence"] == max(predictions[0]["emotions"].values())
    assert frame.loc[0, "box_w"] == predictions[0]["box"][2]
    assert frame.loc[1, "error"] == NO_FACE


def test_to_dataframe_without_pandas_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        Predictions([], class_names=("a", "b")).to_dataframe()


# End-to-end fuzzing of the predict path: malformed bytes and arrays never crash or hang.
_SEEDS = [ASTRONAUT.read_bytes()[:6000]]
_buffer = io.BytesIO()
Image.fromarray(np.arange(48 * 48, dtype=np.uint8).reshape(48, 48)).save(_buffer, "PNG")
_SEEDS.append(_buffer.getvalue())


@st.composite
def damaged_bytes(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        where = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            data[where] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[where:]
            if not data:
                break
        else:
            data[where:where] = draw(st.binary(min_size=1, max_size=64))
    return bytes(data)


@st.composite
def odd_arrays(draw) -> np.ndarray:
    shape = draw(st.one_of(st.lists(st.integers(0, 70), min_size=1, max_size=3),
                           st.just([2, 3, 4, 5])))
    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64,
                                  np.bool_]))
    value = draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, -1.0, np.nan, np.inf]))
    with np.errstate(invalid="ignore"):  # NaN cast to an integer type: garbage on purpose
        return np.full(shape, value).astype(dtype)


@settings(max_examples=120, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(damaged_bytes(), st.binary(max_size=200), odd_arrays()),
                min_size=1, max_size=4))
def test_fuzzed_inputs_give_records_not_crashes(recognizer, sources):
    """About 300 malformed inputs in all, each followed by the same good picture."""
    control = np.full((48, 48), 100, np.uint8)
    predictions = recognizer.predict([*sources, control], detect=False)
    assert predictions[-1]["source"] == f"<array {len(sources)}>"
    assert predictions[-1]["error"] is None  # the good input after the bad ones still ran
    assert {r["source"] for r in predictions[:-1]} == {
        f"<{'array' if isinstance(x, np.ndarray) else 'bytes'} {i}>" for i, x in enumerate(sources)
    }
    for record in predictions[:-1]:
        if record["error"] is None:  # damage that still decodes is a picture
            assert sum(record["emotions"].values()) == pytest.approx(1.0, abs=1e-5)
        else:
            assert record["error"].startswith(record["source"] + ":"), record["error"]


def tiny_lrdif_config():
    """A small but complete LRDif config (every block present), fast on CPU."""
    from lrdif.models.lrdif import LRDifConfig
    from lrdif.models.udcformer import UDCformerConfig

    udcformer = UDCformerConfig(dims=(8, 16, 32), dt_heads=(1, 1, 2), dt_blocks=(1, 1, 1),
                                dil_heads=(1, 2, 2), fusion_dim=32, fusion_depth=1,
                                fusion_heads=2)
    return LRDifConfig(epr_dim=16, label_encoder="learned", udcformer=udcformer)


class FixedPoints:
    """A landmark source (LANDMARKS protocol) that puts 468 points on a fixed grid."""

    def detect(self, images: np.ndarray) -> np.ndarray:
        grid = np.linspace(0.2, 0.8, 468, dtype=np.float32)
        points = np.stack([grid, grid[::-1]], axis=1)
        return np.repeat(points[None], len(images), axis=0)


def test_landmarks_come_from_the_source_the_checkpoint_was_trained_with(tmp_path):
    from lrdif.models.lrdif import LRDifStage1, LRDifStage2
    from lrdif.registry import LANDMARKS

    if "test-fixed-points" not in LANDMARKS:
        LANDMARKS.register("test-fixed-points")(FixedPoints)
    torch.manual_seed(0)
    config = tiny_lrdif_config()
    model = LRDifStage2.from_stage1(LRDifStage1(config=config, pretrained=False)).eval()
    with_points = tmp_path / "points.safetensors"
    save_checkpoint(with_points, model, meta={"dataset": {"landmarks": "test-fixed-points"}})
    learned = tmp_path / "learned.safetensors"
    save_checkpoint(learned, model, meta={"dataset": {"landmarks": "learned"}})
    faces = np.random.default_rng(0).integers(0, 256, (3, 1, 48, 48), dtype=np.uint8)
    images = torch.from_numpy(faces).float() / 255
    points = torch.from_numpy(FixedPoints().detect(faces))
    with torch.no_grad():
        want_points = torch.softmax(model(images, landmarks=points).logits, 1).numpy()
        want_learned = torch.softmax(model(images).logits, 1).numpy()
    assert np.abs(want_points - want_learned).max() > 1e-4  # the landmarks matter
    got_points = Recognizer(with_points, device="cpu").classify(faces)
    got_learned = Recognizer(learned, device="cpu").classify(faces)
    np.testing.assert_allclose(got_points, want_points, atol=1e-5)
    np.testing.assert_allclose(got_learned, want_learned, atol=1e-5)


def test_stage1_checkpoint_is_refused(tmp_path):
    from lrdif.models.lrdif import LRDifStage1

    config = tiny_lrdif_config()
    path = tmp_path / "s1.safetensors"
    save_checkpoint(path, LRDifStage1(config=config, pretrained=False), meta={})
    with pytest.raises(ValueError, match="stage-1 LRDif checkpoint needs the true label"):
        Recognizer(path, device="cpu")


def test_simulated_udc_changes_the_input_reproducibly(checkpoint, astronaut):
    from lrdif.udc.degrade import UDCConfig, UDCSimulator

    clean = Recognizer(checkpoint, device="cpu")
    udc = Recognizer(checkpoint, device="cpu", simulate_udc="poled")
    (a,), (b,), (c,) = clean.predict(astronaut), udc.predict(astronaut), udc.predict(astronaut)
    assert a["box"] == b["box"]  # detection runs on the photo, the display acts on the face
    assert b["emotions"] == c["emotions"]  # the noise is seeded per face: reruns agree
    # The model saw the simulator's P-OLED version of the crop, seeded by source/frame/face.
    crop = crop_faces(astronaut, [tuple(b["box"])], size=(48, 48), channels=1)
    degraded = UDCSimulator(UDCConfig(display="poled")).degrade(crop[:, 0], ["<array 0>#None#0"])
    assert np.abs(degraded.astype(int) - crop[:, 0]).mean() > 2  # the display does something
    want = direct_probabilities(udc, degraded[:, None])[0]
    np.testing.assert_allclose(list(b["emotions"].values()), want, atol=1e-5)


def _with_temperature(checkpoint: Path, folder: Path, temperature) -> Path:
    from lrdif.checkpoint import load_model

    path = folder / f"t{temperature}.safetensors"
    save_checkpoint(path, load_model(checkpoint),
                    meta={"calibration": {"temperature": temperature}})
    return path


def test_the_checkpoint_temperature_calibrates_the_probabilities(checkpoint, tmp_path):
    """Probabilities are softmax(logits / T) with the checkpoint's T; the ranking, hence the
    dominant emotion, is unchanged; ``confidence`` is its calibrated probability."""
    rng = np.random.default_rng(2)
    faces = rng.integers(0, 256, (6, 48, 48), dtype=np.uint8)
    plain = Recognizer(checkpoint, device="cpu")
    hot = Recognizer(_with_temperature(checkpoint, tmp_path, 3.0), device="cpu")
    assert plain.temperature == 1.0 and hot.temperature == 3.0
    logits = plain.logits(faces[:, None])
    expected = torch.softmax(torch.from_numpy(logits) / 3.0, dim=1).numpy()
    records = hot.predict(list(faces), detect=False)
    got = np.array([list(r["emotions"].values()) for r in records])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    for r, p in zip(records, plain.predict(list(faces), detect=False), strict=True):
        assert r["dominant_emotion"] == p["dominant_emotion"]
        assert r["confidence"] == max(r["emotions"].values()) < p["confidence"]


def test_a_bad_temperature_is_an_error_naming_the_file(checkpoint, tmp_path):
    from lrdif.checkpoint import CheckpointError

    path = _with_temperature(checkpoint, tmp_path, -1.0)
    with pytest.raises(CheckpointError, match=str(path)):
        Recognizer(path, device="cpu")


def test_bfloat16_precision_keeps_the_answer(checkpoint):
    rng = np.random.default_rng(3)
    faces = list(rng.integers(0, 256, (8, 48, 48), dtype=np.uint8))
    full = Recognizer(checkpoint, device="cpu").predict(faces, detect=False)
    bf16 = Recognizer(checkpoint, device="cpu", precision="bfloat16").predict(faces,
                                                                             detect=False)
    for a, b in zip(full, bf16, strict=True):
        np.testing.assert_allclose(list(a["emotions"].values()), list(b["emotions"].values()),
                                   atol=0.05)
    with pytest.raises(ValueError, match="precision"):
        Recognizer(checkpoint, device="cpu", precision="float16")


def test_a_shipped_model_is_chosen_by_name(monkeypatch, tmp_path, checkpoint):
    monkeypatch.setattr(recognizer_module, "FAST_WEIGHTS", checkpoint)
    assert Recognizer("fast", device="cpu").weights == checkpoint
    monkeypatch.setattr(recognizer_module, "DEFAULT_WEIGHTS", checkpoint)
    assert Recognizer("lrdif", device="cpu").weights == checkpoint
    monkeypatch.setattr(recognizer_module, "FAST_WEIGHTS", tmp_path / "absent.safetensors")
    with pytest.raises(NoDefaultWeightsError, match="model 'fast' of lrdif is not installed"):
        Recognizer("fast")
    monkeypatch.chdir(tmp_path)  # a file of that name comes before the shipped model
    (tmp_path / "fast").write_bytes(checkpoint.read_bytes())
    assert Recognizer("fast", device="cpu").weights == Path("fast")
