"""Atomic writes (lrdif.io): all or nothing, no debris, the usual permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lrdif.io import TMP_SUFFIX, atomic_write, atomic_write_bytes, atomic_write_json


def test_writes_create_parents_and_replace_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "file.bin"
    atomic_write_bytes(target, b"first", fsync=False)
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    atomic_write_json(tmp_path / "a" / "x.json", {"k": [1, 2]})
    assert (tmp_path / "a" / "x.json").read_text() == '{\n  "k": [\n    1,\n    2\n  ]\n}\n'
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(TMP_SUFFIX)]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_debris(tmp_path: Path) -> None:
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target, "w") as handle:
        handle.write("half of the new")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_permissions_follow_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "f", b"x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o640


def test_portable_paths_carry_no_machine_layout(tmp_path: Path) -> None:
    from lrdif.io import portable_path, portable_paths, tree_sha256

    repo = tmp_path / "checkout" / "lrdif"
    assert portable_path(repo / "benchmarks" / "work" / "x", repo) == "benchmarks/work/x"
    assert portable_path(tmp_path / "checkout" / "shared" / "data" / "ferplus", repo) == (
        "../shared/data/ferplus")
    assert portable_path("/opt/venvs/fer/bin/python", repo) == "<external>/fer/bin/python"
    value = {"root": str(repo / "a"), "n": 3, "list": ["plain", str(repo)], "rel": "b/c"}
    assert portable_paths(value, repo) == {"root": "a", "n": 3, "list": ["plain", "."],
                                           "rel": "b/c"}
    (tmp_path / "d" / "s").mkdir(parents=True)
    (tmp_path / "d" / "s" / "label.csv").write_text("a,1\n")
    (tmp_path / "d" / "s" / "x.png").write_bytes(b"png")
    first = tree_sha256(tmp_path / "d")
    (tmp_path / "d" / "s" / "x.png").write_bytes(b"other")  # images are not hashed
    assert tree_sha256(tmp_path / "d") == first
    (tmp_path / "d" / "s" / "label.csv").write_text("a,2\n")
    assert tree_sha256(tmp_path / "d") != first
