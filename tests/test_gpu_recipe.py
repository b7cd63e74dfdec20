"""benchmarks/gpu_recipe.py (issue 14 part 2): staging FERPlus in carried parts, and the
whole protocol end to end on the CPU with the smoke setting, on the toy FERPlus."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu_recipe

from lrdif.checkpoint import load_checkpoint
from lrdif.data.toy import make_ferplus

FERPLUS = Path(os.environ.get("LRDIF_FERPLUS") or
               Path(__file__).resolve().parents[2] / "shared" / "data" / "ferplus")


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_ferplus(tmp_path_factory.mktemp("fer") / "ferplus",
                        {"train": 48, "valid": 24, "test": 24}, size=48)


def test_pack_parts_unpack_to_the_same_pixels_and_labels(toy: Path, tmp_path: Path) -> None:
    weights = tmp_path / "w.pth"
    weights.write_bytes(bytes(range(256)) * 9)
    info = gpu_recipe.pack(toy, tmp_path / "stage", 0.02, weights)
    assert len(info["parts"]) >= 2  # 20 KiB parts: several carried calls
    # the first call carries part 0 alone: it waits in the spool, nothing is unpacked
    first = tmp_path / "call1"
    first.mkdir()
    (first / "stage.json").write_bytes((tmp_path / "stage" / "stage.json").read_bytes())
    part0 = info["parts"][0]["name"]
    (first / part0).write_bytes((tmp_path / "stage" / part0).read_bytes())
    spool, dst = tmp_path / "spool", tmp_path / "rebuilt"
    with pytest.raises(FileNotFoundError, match="not carried yet"):
        gpu_recipe.unpack(first, dst, spool)
    # a later call carries the rest; the spool completes the set
    rest = tmp_path / "call2"
    rest.mkdir()
    for p in info["parts"][1:]:
        (rest / p["name"]).write_bytes((tmp_path / "stage" / p["name"]).read_bytes())
    (rest / "stage.json").write_bytes((first / "stage.json").read_bytes())
    gpu_recipe.unpack(rest, dst, spool)
    for folder in gpu_recipe.SPLITS.values():
        a, names_a, csv_a = gpu_recipe.read_ferplus_split(toy, folder)
        b, names_b, csv_b = gpu_recipe.read_ferplus_split(dst, folder)
        assert np.array_equal(a, b) and names_a == names_b and csv_a == csv_b
    assert (dst / "mobilenet_v2-b0353104.pth").read_bytes() == weights.read_bytes()
    # a damaged part is refused
    damaged = spool / info["parts"][-1]["name"]
    damaged.write_bytes(b"x" + damaged.read_bytes()[1:])
    for p in info["parts"][1:]:
        (rest / p["name"]).unlink()
    with pytest.raises(FileNotFoundError, match=info["parts"][-1]["name"]):
        gpu_recipe.unpack(rest, tmp_path / "again", spool)


def test_smoke_run_of_the_whole_protocol_on_cpu(toy: Path, tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    gpu_recipe.pack(toy, stage, 9.0, None)
    out = tmp_path / "out"
    gpu_recipe.main(["run", "--stage", str(stage), "--out", str(out), "--work",
                     str(tmp_path / "work"), "--recipe", "cpu", "--device", "cpu",
                     "--workers", "1", "--smoke", "24", "--override", "batch_size=8",
                     "eval_batch_size=24", "--stage-override",
                     "s1:model.options.label_encoder=learned"])
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= gpu_recipe.MAX_FILES
    assert all((out / f).stat().st_size <= gpu_recipe.MAX_FILE_BYTES for f in files)
    assert files[:4] == ["ferplus.json", "ferplus.md", "gpu_recipe.json", "learning_curves.png"]
    record = json.loads((out / "gpu_recipe.json").read_text())
    # the stage-2 checkpoint, in 16 MiB pieces where larger: joined, it loads
    joined = tmp_path / "s2.safetensors"
    joined.write_bytes(b"".join((out / p["name"]).read_bytes() for p in record["checkpoint"]))
    assert load_checkpoint(joined).model_name == "lrdif_s2"
    assert set(record["summaries"]) == {"clean", "udc_toled"}
    # smoke: Table 5 from S1, S2-V1 and S2-V3 (ferplus.run_set trains V2 and V4 in full runs)
    assert len(record["summaries"]["udc_toled"]["table5"]) == 3
    assert "udc_toled/ablation/S2-V3" in record["learning_curves"]
    accuracy = json.loads((out / "ferplus.json").read_text())
    assert 0 <= accuracy["udc_toled"]["lrdif_s2"] <= 100


@pytest.mark.skipif(not (FERPLUS / "FER2013Test" / "label.csv").is_file(),
                    reason="needs the real FERPlus (LRDIF_FERPLUS or ../shared/data/ferplus)")
def test_real_ferplus_test_split_round_trips(tmp_path: Path) -> None:
    images, names, _ = gpu_recipe.read_ferplus_split(FERPLUS, "FER2013Test")
    assert images.shape[1:] == (48, 48) and len(names) == len(images) > 3000
