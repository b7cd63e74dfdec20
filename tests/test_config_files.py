"""The shipped config files and the ``base:`` / ``${ENV:-default}`` loader features.

``configs_at_649560e.json`` holds what every shipped config resolved to at commit
649560e, before the files shared a base (``_base.yaml``, ``_cpu.yaml``,
``_paper.yaml``); ``bench_ferplus`` holds what benchmarks/ferplus.py resolved for the
recorded runs from command-line flags (--epochs 3 --s1-epochs 1 --s1-warmup 0.25
--resnet-epochs 4 --bf16-resnet), now the bench_ferplus_*.yaml files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lrdif.config import ConfigError, load_config, packaged_config_names, to_dict
from lrdif.train.config import TrainConfig, load_train_config

EXPECTED = json.loads((Path(__file__).parent / "configs_at_649560e.json").read_text())


@pytest.fixture(autouse=True)
def _no_ferplus_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LRDIF_FERPLUS", raising=False)


def _with_new_defaults(expected: dict, default: dict) -> dict:
    """``expected`` plus the keys added since 649560e, at their defaults (which train
    exactly as before: no label smoothing, Adam's L2 decay, one learning rate)."""
    out = dict(expected)
    for key, value in default.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict) and isinstance(out[key], dict) and key != "options":
            out[key] = _with_new_defaults(out[key], value)
    return out


def test_shipped_configs_resolve_as_before() -> None:
    names = set(packaged_config_names())
    assert set(EXPECTED["shipped"]) <= names
    default = to_dict(TrainConfig())
    for name, expected in EXPECTED["shipped"].items():
        assert to_dict(load_train_config(name)) == _with_new_defaults(expected, default), name


def test_bench_recipe_resolves_as_the_recorded_flags_did() -> None:
    wiring = {  # what benchmarks/ferplus.py sets per data set and run
        "resnet18": ["data.root=ROOT"],
        "s1": ["data.root=ROOT", "model.options.image_encoder_kwargs.checkpoint=R18"],
        "s2": ["data.root=ROOT", "model.init_from=S1"],
    }
    for stage, overrides in wiring.items():
        name = f"bench_ferplus_{stage}"
        expected = _with_new_defaults(EXPECTED["bench_ferplus"][name], to_dict(TrainConfig()))
        assert to_dict(load_train_config(name, overrides)) == expected


def test_bases_are_not_configs_of_their_own() -> None:
    assert not any(n.startswith("_") for n in packaged_config_names())
    with pytest.raises(ConfigError, match="neither a file nor one of"):
        load_train_config("_base")


def test_env_variable_sets_the_ferplus_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LRDIF_FERPLUS", "/data/my-ferplus")
    assert load_train_config("cpu_s1").data.root == "/data/my-ferplus"
    assert load_train_config("paper_s2", ["data.root=x"]).data.root == "x"


def test_base_merges_mappings_and_replaces_values(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("epochs: 5\noptim: {lr: 0.1, schedule: step}\n"
                                     "data: {options: {label_mode: plurality}}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\noptim: {lr: 0.2}\nseed: 3\n")
    cfg = load_config(TrainConfig, tmp_path / "b.yaml", ["epochs=7"])
    assert (cfg.epochs, cfg.seed, cfg.optim.lr, cfg.optim.schedule) == (7, 3, 0.2, "step")
    assert cfg.data.options == {"label_mode": "plurality"}
    # a packaged config as a base, by name
    (tmp_path / "c.yaml").write_text("base: cpu_s2\nepochs: 2\n")
    cfg = load_config(TrainConfig, tmp_path / "c.yaml")
    assert cfg.model.name == "lrdif_s2" and cfg.epochs == 2 and cfg.optim.lr == 7e-4


def test_unknown_key_in_a_base_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("optim: {lrr: 0.1}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['lrr'\]"):
        load_config(TrainConfig, tmp_path / "b.yaml")


def test_missing_base_names_both_files(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("base: nothere.yaml\n")
    with pytest.raises(ConfigError, match=r"b\.yaml: base .*nothere\.yaml: cannot read"):
        load_config(TrainConfig, tmp_path / "b.yaml")
    (tmp_path / "c.yaml").write_text("base: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: 'base' must be a file name"):
        load_config(TrainConfig, tmp_path / "c.yaml")


def test_cyclic_base_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"form a cycle: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        load_config(TrainConfig, tmp_path / "a.yaml")
    (tmp_path / "self.yaml").write_text("base: self.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(TrainConfig, tmp_path / "self.yaml")
