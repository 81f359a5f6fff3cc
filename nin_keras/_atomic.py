"""Files appear whole or not at all: write to a temporary name in the same folder, then rename.

`os.replace` within one filesystem is atomic, so a crash or kill leaves either the old file or the new
one, never a half-written file that looks valid.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _normal_mode(path: Path) -> None:
    """mkstemp/mkdtemp create owner-only entries; give the result the modes a plain open()/mkdir() would."""
    base = 0o777 if path.is_dir() else 0o666
    os.chmod(path, base & ~_umask())


@contextlib.contextmanager
def atomic_path(path, *, suffix: str | None = None):
    """Yields a temporary path beside `path`; renames it onto `path` only if the block succeeds.

    Use for writers that take a path (keras' `model.save`, matplotlib's `savefig`, converters).
    `suffix` defaults to `path`'s own, since some writers pick the format from the extension.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    # The temporary name ends with the real suffix: some writers pick the format from it.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        _normal_mode(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path):
    """Yields a temporary folder beside `path`; on success it replaces `path` (an old one is removed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _normal_mode(tmp)
        swap_dir(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def swap_dir(new, target) -> None:
    """Moves folder `new` to `target`, replacing an existing `target` (same filesystem).

    A folder cannot be renamed over a non-empty one, so the old folder is first renamed aside: two renames
    keep the window without a valid folder as short as the filesystem allows.
    """
    new, target = Path(new), Path(target)
    if not target.exists():
        os.replace(new, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    os.rmdir(old)
    os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def write_bytes(path, data: bytes) -> Path:
    """Writes `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path, text: str) -> Path:
    """Writes `text` (UTF-8) to `path` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path, obj) -> Path:
    """Writes `obj` as indented JSON to `path` atomically."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def folder_size(path) -> int:
    """Bytes of every file below `path` (a file's own size when `path` is a file)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
