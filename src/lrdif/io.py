"""Atomic file writes: a reader never sees a half-written file, and a crash keeps the old one."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TMP_SUFFIX = ".lrdif-tmp"  # marks temporary files; a killed writer's leftovers end in it


_NAMES = itertools.count()  # temporary names: process id + counter, unique among live writers


def _create_temporary(path: str) -> tuple[int, str]:
    """Open a new temporary file beside ``path`` (folders made on demand): ``(fd, name)``.

    The usual permissions (0666 less the umask) come from ``os.open`` itself; a name
    left by a killed process of the same id is skipped.
    """
    folder, name = os.path.split(path)
    while True:
        tmp = os.path.join(folder, f".{name}.{os.getpid()}-{next(_NAMES)}{TMP_SUFFIX}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
        except FileNotFoundError:
            os.makedirs(folder or ".", exist_ok=True)
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", *, fsync: bool = True) -> Iterator[IO[Any]]:
    """Write to a temporary file beside ``path``, then rename it over ``path``.

    ``fsync=False`` skips the flush to disk (a cost paid per file): still atomic for
    readers and for a killed process, but not across a power cut. Bulk writers that
    validate their outputs on restart (``lrdif synthesize``) use it.
    """
    path = os.fspath(path)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes, *, fsync: bool = True) -> None:
    with atomic_write(path, "wb", fsync=fsync) as handle:
        handle.write(data)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    with atomic_write(path, "w") as handle:
        json.dump(obj, handle, indent=2, sort_keys=True)
        handle.write("\n")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def portable_path(path: str | Path, repo: str | Path) -> str:
    """``path`` as it may appear in a committed file: relative to ``repo`` when inside it,
    ``../NAME/...`` beside it (the project's ``../shared/data`` convention), otherwise
    ``<external>/`` and its last three parts (no machine's absolute layout)."""
    path, repo = Path(os.path.abspath(path)), Path(os.path.abspath(repo))
    if path == repo:
        return "."
    if repo in path.parents:
        return path.relative_to(repo).as_posix()
    if repo.parent in path.parents:
        return "../" + path.relative_to(repo.parent).as_posix()
    return "<external>/" + "/".join(path.parts[-3:])


def portable_paths(value: Any, repo: str | Path) -> Any:
    """``value`` (JSON-like) with every absolute path string made :func:`portable_path`."""
    if isinstance(value, dict):
        return {k: portable_paths(v, repo) for k, v in value.items()}
    if isinstance(value, list):
        return [portable_paths(v, repo) for v in value]
    if isinstance(value, str) and os.path.isabs(value) and "\n" not in value:
        return portable_path(value, repo)
    return value


def tree_sha256(root: str | Path, suffixes: tuple[str, ...] = (".csv", ".json")) -> str:
    """Hex SHA-256 over the relative names and bytes of a data set's label/manifest files
    (``suffixes``, sorted by name): identifies a data set without its machine path."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in suffixes):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()
