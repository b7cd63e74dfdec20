from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from lrdif.config import ConfigError, apply_overrides, flatten, from_dict, load_config, to_dict
from lrdif.registry import Registry


@dataclass
class Inner:
    lr: float = 1e-3
    steps: tuple[int, ...] = (1, 2)


@dataclass
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    flag: bool = False


def test_from_dict_builds_nested_and_coerces() -> None:
    cfg = from_dict(Outer, {"name": "y", "inner": {"lr": 1, "steps": [4, 8]}, "flag": True})
    assert cfg.inner.lr == 1.0 and isinstance(cfg.inner.lr, float)
    assert cfg.inner.steps == (4, 8)
    assert to_dict(cfg) == {"name": "y", "inner": {"lr": 1.0, "steps": [4, 8]}, "flag": True}


def test_unknown_key_names_key_and_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['lrr'\].*'lr'"):
        from_dict(Outer, {"inner": {"lrr": 1}})


def test_wrong_type_is_an_error() -> None:
    with pytest.raises(ConfigError, match="expected true/false"):
        from_dict(Outer, {"flag": "yes"})


def test_overrides_and_yaml_file(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: a\ninner:\n  lr: 0.5\n")
    cfg = load_config(Outer, path, ["inner.lr=2e-3", "flag=true"])
    assert cfg.inner.lr == pytest.approx(2e-3) and cfg.flag is True
    assert apply_overrides({"a": 1}, ["b.c=3"]) == {"a": 1, "b": {"c": 3}}
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["novalue"])


def test_registry_lists_known_names_on_miss() -> None:
    reg: Registry[type] = Registry("widget")
    reg.register("a")(dict)
    assert reg.get("a") is dict and reg.build("a", x=3) == {"x": 3} and "a" in reg
    with pytest.raises(KeyError, match="unknown widget 'b'; known: a"):
        reg.get("b")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(list)


def test_flatten_gives_dotted_keys_and_keeps_empty_mappings_as_values() -> None:
    tree = {"optim": {"lr": 1e-3, "betas": [0.9, 0.99]}, "model": {"options": {}}, "seed": 0}
    assert flatten(tree) == {"optim.lr": 1e-3, "optim.betas": [0.9, 0.99],
                             "model.options": {}, "seed": 0}
    assert flatten({}) == {}
