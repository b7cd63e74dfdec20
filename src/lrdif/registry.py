"""One registry per kind of swappable part; configs name a part by its registry key.

Registries are used only at the edges (config or command line -> object); code
inside the package imports classes directly.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> factory table for one kind of part (data sets, image encoders, models, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@DATASETS.register("ferplus")`` above a class or function."""

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise KeyError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def build(self, name: str, /, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)  # type: ignore[operator]

    def build_config(self, name: str, field: str, kwargs: dict[str, Any], /, **fixed: Any) -> Any:
        """``name`` built from a config's ``field`` kwargs plus the caller's ``fixed`` ones."""
        factory = self.get(name)
        try:  # a config mistake (unknown or missing kwarg) is reported as such
            inspect.signature(factory).bind(**fixed, **kwargs)  # type: ignore[arg-type]
        except TypeError as exc:
            raise ValueError(f"{field} {kwargs} do not fit {self.kind} {name!r}: {exc}") from None
        return factory(**fixed, **kwargs)  # type: ignore[operator]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


DATASETS: Registry[Any] = Registry("data set")
DISPLAYS: Registry[Any] = Registry("display")
IMAGE_ENCODERS: Registry[Any] = Registry("image encoder")
LABEL_ENCODERS: Registry[Any] = Registry("label encoder")
LANDMARKS: Registry[Any] = Registry("landmark source")
MODELS: Registry[Any] = Registry("model")
FACE_DETECTORS: Registry[Any] = Registry("face detector")
