"""Typed configuration: dataclasses read from YAML files, with ``key=value`` overrides.

Every config is a (nested) dataclass. Unknown keys are errors that name the key
and list the known ones, so a typo never silently falls back to a default.

A file may name a file it builds on with a top-level ``base:`` key: a ``.yaml`` path
relative to the file itself, or the name of a packaged config (``cpu_s1``), or a list
of them, later ones winning. The base is read first
(recursively) and the file's keys are laid over it: mappings merge key by key,
anything else (numbers, strings, lists) replaces the base's value. Packaged files
whose names start with ``_`` are such shared bases, not configs of their own.

A string value of the form ``${NAME:-default}`` (or ``${NAME}``) is read from the
environment variable ``NAME`` (or ``default`` when it is unset or empty); the
packaged configs use it for the FERPlus root (``LRDIF_FERPLUS``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

C = TypeVar("C")

PACKAGED_CONFIGS = Path(__file__).parent / "configs"
BASE_KEY = "base"
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(ValueError):
    """A config file or override does not fit the dataclass it is read into."""


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(annotation, value, where=where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: cannot read {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if origin is tuple:
            return tuple(value)
        inner = args[0] if args else Any
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "2e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def from_dict(cls: type[C], data: dict[str, Any], *, where: str = "config") -> C:
    """Build dataclass ``cls`` from a mapping; unknown keys raise :class:`ConfigError`."""
    hints = _field_types(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown}; known keys: {sorted(fields)}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """Plain, JSON- and YAML-safe mapping of a dataclass config (tuples become lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(config)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=1e-3"`` -> (["optim", "lr"], 0.001); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with dotted ``key=value`` overrides applied."""
    out = yaml.safe_load(yaml.safe_dump(data))
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a section")
        node[path[-1]] = value
    return out


def packaged_config_names() -> list[str]:
    """Names of the configs shipped in ``lrdif/configs`` (``_*`` bases excluded)."""
    return sorted(p.stem for p in PACKAGED_CONFIGS.glob("*.yaml") if not p.stem.startswith("_"))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A file path, or the name of a config shipped in ``lrdif/configs`` (``cpu_s1``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    packaged = PACKAGED_CONFIGS / f"{name_or_path}.yaml"
    if packaged.is_file() and not str(name_or_path).startswith("_"):
        return packaged
    raise ConfigError(
        f"config {str(name_or_path)!r} is neither a file nor one of {packaged_config_names()}"
    )


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys, ``{"optim": {"lr": 1e-3}}`` -> ``{"optim.lr": 1e-3}``
    (an empty mapping stays a value), for comparing two settings key by key."""
    if isinstance(tree, dict) and (tree or not prefix):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid over ``base``: mappings merge key by key, other values replace."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def expand_env(value: Any) -> Any:
    """``${NAME:-default}`` in strings (recursively) replaced from the environment."""
    if isinstance(value, dict):
        return {k: expand_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v) for v in value]
    if isinstance(value, str):
        return _ENV.sub(lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""), value)
    return value


def read_config_file(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping a YAML config file stands for, its ``base:`` files merged in.

    A missing base, or a base that leads back to a file already being read, is a
    :class:`ConfigError` that names the files involved.
    """
    path = Path(path)
    real = path.resolve()
    if real in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain[_chain.index(real):], real))
        raise ConfigError(f"{path}: {BASE_KEY!r} files form a cycle: {cycle}")
    try:
        text = path.read_text()
    except OSError as exc:
        where = f"{_chain[-1]}: {BASE_KEY} " if _chain else ""
        raise ConfigError(f"{where}{path}: cannot read the config file ({exc.strerror})") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    bases = data.pop(BASE_KEY, None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: {BASE_KEY!r} must be a file name or a list of them")
    merged: dict[str, Any] = {}
    for name in bases:
        base = path.parent / name if name.endswith((".yaml", ".yml")) else (
            PACKAGED_CONFIGS / f"{name}.yaml")
        merged = merge(merged, read_config_file(base, (*_chain, real)))
    return merge(merged, data)


def load_config(cls: type[C], name_or_path: str | Path, overrides: list[str] = ()) -> C:  # type: ignore[assignment]
    """Read a YAML config (and its ``base:`` files) into dataclass ``cls``, applying
    ``key=value`` overrides."""
    path = resolve_config_path(name_or_path)
    data = expand_env(read_config_file(path))
    return from_dict(cls, apply_overrides(data, list(overrides)), where=str(path))
