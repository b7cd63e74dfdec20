"""`lrdif predict`: summary, JSON/CSV, annotations, exit statuses; and the annotation drawing."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lrdif.checkpoint import save_checkpoint
from lrdif.cli import main as cli_main
from lrdif.data.images import read_image
from lrdif.models.baselines import ResNet18, ResNet18Config
from lrdif.predict import recognizer as recognizer_module
from lrdif.predict.annotate import annotate

ASTRONAUT = Path(__file__).parents[1] / "src" / "lrdif" / "assets" / "astronaut.jpg"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A real (small, untrained) classifier saved the way `lrdif train` saves one."""
    torch.manual_seed(0)
    model = ResNet18(config=ResNet18Config(widths=(8, 16), blocks=(1, 1)))
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, model, meta={})
    return path


def predict(*args: str) -> int:
    return cli_main(["predict", *args])


def test_photo_to_json_and_annotated_picture(checkpoint, tmp_path, capsys):
    out, folder = tmp_path / "out.json", tmp_path / "annotated"
    status = predict(str(ASTRONAUT), "--weights", str(checkpoint), "--json", str(out),
                     "--annotate", str(folder), "--device", "cpu")
    assert status == 0
    (record,) = json.loads(out.read_text())
    assert record["source"] == str(ASTRONAUT) and record["error"] is None
    printed = capsys.readouterr().out
    assert f"{ASTRONAUT}: face at {record['box']}: {record['dominant_emotion']}" in printed
    assert "1 input(s), 1 face(s), 0 picture(s) without a face, 0 failed" in printed
    drawn = read_image(folder / "astronaut.jpg")
    assert drawn.shape == read_image(ASTRONAUT).shape
    assert np.abs(drawn.astype(int) - read_image(ASTRONAUT)).mean() > 1.0
    # the summary line shows the top three; the JSON holds every class
    line = next(x for x in printed.splitlines() if x.startswith(f"{ASTRONAUT}:"))
    assert line.count("%") == 3
    assert len(record["emotions"]) == 8
    assert sum(record["emotions"].values()) == pytest.approx(1.0, abs=1e-4)
    assert record["confidence"] == max(record["emotions"].values())


def test_all_prints_every_class_likeliest_first(checkpoint, tmp_path, capsys):
    out = tmp_path / "out.json"
    assert predict(str(ASTRONAUT), "--weights", str(checkpoint), "--json", str(out),
                   "--all", "--device", "cpu") == 0
    (record,) = json.loads(out.read_text())
    line = next(x for x in capsys.readouterr().out.splitlines()
                if x.startswith(f"{ASTRONAUT}:"))
    shown = line.split("]: ", 1)[1].split(", ")
    assert [s.rsplit(" ", 1)[0] for s in shown] == sorted(
        record["emotions"], key=record["emotions"].get, reverse=True)
    assert [s.rsplit(" ", 1)[1] for s in shown] == [
        f"{record['emotions'][s.rsplit(' ', 1)[0]]:.0%}" for s in shown]


def test_some_bad_inputs_exit_1_and_the_rest_is_written(checkpoint, tmp_path, capsys):
    text = tmp_path / "text.jpg"
    text.write_text("not a picture")
    broken_video = tmp_path / "clip.avi"
    broken_video.write_bytes(b"RIFF" + bytes(100))
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((100, 100), 255, np.uint8))
    out = tmp_path / "out.csv"
    status = predict(str(text), str(ASTRONAUT), str(broken_video), str(blank),
                     "--weights", str(checkpoint), "--csv", str(out))
    assert status == 1
    rows = list(csv.DictReader(out.open()))
    assert [r["source"] for r in rows] == [str(text), str(ASTRONAUT), str(broken_video),
                                           str(blank)]
    assert rows[0]["error"].startswith(str(text)) and rows[2]["error"].startswith(
        str(broken_video))
    assert rows[1]["error"] == "" and float(rows[1]["box_w"]) > 0
    assert rows[3]["error"] == "no face detected"
    assert "4 input(s), 1 face(s), 1 picture(s) without a face, 2 failed" in (
        capsys.readouterr().out)


def test_video_gets_one_summary_line_and_annotated_frames(checkpoint, tmp_path, capsys):
    photo = read_image(ASTRONAUT)
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (512, 512))
    for i in range(6):
        writer.write(cv2.cvtColor(photo if i < 3 else photo // 8, cv2.COLOR_RGB2BGR))
    writer.release()
    folder = tmp_path / "frames"
    assert predict(str(video), "--weights", str(checkpoint), "--every", "2",
                   "--annotate", str(folder)) == 0
    assert f"{video}: 3 frame(s) read, " in capsys.readouterr().out
    assert sorted(p.name for p in folder.iterdir()) == [
        "clip_frame000000.jpg", "clip_frame000002.jpg", "clip_frame000004.jpg",
    ]


def test_no_detect_on_face_crops(checkpoint, tmp_path):
    crops = tmp_path / "crops"
    crops.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(crops / f"fer{i}.png"), rng.integers(0, 256, (48, 48), dtype=np.uint8))
    out = tmp_path / "out.json"
    assert predict(str(crops), "--no-detect", "--weights", str(checkpoint),
                   "--json", str(out), "--batch-size", "2") == 0
    records = json.loads(out.read_text())
    assert [r["box"] for r in records] == [[0, 0, 48, 48]] * 3


def test_missing_default_model_is_a_usage_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(recognizer_module, "DEFAULT_WEIGHTS", tmp_path / "absent.safetensors")
    assert predict(str(ASTRONAUT)) == 2
    assert "the default model of lrdif is not installed" in capsys.readouterr().err


def test_bad_checkpoint_is_a_usage_error(tmp_path, capsys):
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"not a checkpoint")
    assert predict(str(ASTRONAUT), "--weights", str(fake)) == 2
    assert str(fake) in capsys.readouterr().err


@pytest.mark.parametrize(
    "options", [["--every", "0"], ["--batch-size", "-1"], ["--json", "a", "--csv", "b"]]
)
def test_bad_options_exit_2(options, capsys):
    with pytest.raises(SystemExit) as exc:
        predict(str(ASTRONAUT), *options)
    assert exc.value.code == 2


def test_console_entry_point_returns_the_status(checkpoint, tmp_path):
    text = tmp_path / "text.png"
    text.write_text("no")
    result = subprocess.run(
        [sys.executable, "-m", "lrdif", "predict", str(text), str(ASTRONAUT),
         "--weights", str(checkpoint)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert "1 failed" in result.stdout


def test_annotate_draws_box_label_and_bars():
    image = np.full((200, 300, 3), 128, np.uint8)
    record = {"box": [40, 50, 60, 60], "dominant_emotion": "happiness",
              "emotions": {"neutral": 0.1, "happiness": 0.8, "sadness": 0.1}}
    drawn = annotate(image, [record])
    assert drawn.shape == (360, 540, 3)  # small pictures are enlarged (x1.8) to be legible
    assert (image == 128).all()  # the input is not drawn on
    box_colour = np.array([40, 220, 90])
    x, y = round(40 * 1.8), round(50 * 1.8)
    assert (drawn[y + 30, x - 1 : x + 2] == box_colour).all(axis=1).any()  # left edge
    bar_colour = np.array([255, 190, 40])
    panel = drawn[y:, round(100 * 1.8) :]
    assert (panel == bar_colour).all(axis=2).sum() > 100  # the probability bars


def test_annotate_labels_each_bar_with_its_percentage(monkeypatch):
    from lrdif.predict import annotate as annotate_module

    texts: list[str] = []
    real = annotate_module.cv2.putText

    def put_text(img, text, *args, **kwargs):
        texts.append(text)
        return real(img, text, *args, **kwargs)

    monkeypatch.setattr(annotate_module.cv2, "putText", put_text)
    record = {"box": [40, 50, 60, 60], "dominant_emotion": "happiness",
              "emotions": {"neutral": 0.1, "happiness": 0.85, "sadness": 0.05}}
    annotate(np.full((200, 300, 3), 128, np.uint8), [record])
    assert "happiness 85%" in texts  # the label over the box
    assert [t for t in texts if t.endswith("%") and " " not in t] == ["10%", "85%", "5%"]


def test_annotate_picture_without_a_face_shows_the_message():
    image = np.full((400, 400), 30, np.uint8)
    drawn = annotate(image, [{"box": None, "error": "no face detected"}])
    assert drawn.shape == (400, 400, 3)
    assert (drawn[:10] != 30).any() and (drawn[200:] == 30).all()


def test_simulate_udc_changes_the_prediction(checkpoint, tmp_path):
    clean, udc = tmp_path / "clean.json", tmp_path / "udc.json"
    assert predict(str(ASTRONAUT), "--weights", str(checkpoint), "--json", str(clean)) == 0
    assert predict(str(ASTRONAUT), "--weights", str(checkpoint), "--json", str(udc),
                   "--simulate-udc", "poled") == 0
    (a,), (b,) = json.loads(clean.read_text()), json.loads(udc.read_text())
    assert a["box"] == b["box"] and a["emotions"] != b["emotions"]
