"""Files appear whole or not at all: write to a temporary name in the same folder, then rename.

`os.replace` within one filesystem is atomic, so a crash or kill leaves either the old file or the new
one, never a half-written file that looks valid.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
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
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)  # the second rename failed: the old folder goes back
        raise
    shutil.rmtree(old, ignore_errors=True)


def staging_dir(target, *, kind: str = "staging") -> Path:
    """A new hidden folder beside `target` in which to build what will replace it: `.<name>.<pid>.<random>.<kind>`.

    It gets the mode a plain mkdir gives (mkdtemp's is owner-only, and a staging folder renamed into place keeps
    its mode). The process id in the name lets `remove_stale_staging` tell a killed process's leftovers from a
    folder another process is still filling.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=f".{kind}", dir=target.parent))
    _normal_mode(path)
    return path


def _process_alive(pid: int) -> bool:
    if os.name == "nt" or pid == os.getpid():
        return True  # on Windows os.kill(pid, 0) would end the process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def remove_stale_staging(target, *, own_process: bool = False) -> list[Path]:
    """Removes what killed writers of `target` left beside it; returns the folders removed.

    That is `staging_dir` folders of `target` whose process no longer runs (with `own_process`, also this
    process's: for a writer that knows no other call of its own is filling one), and `swap_dir`'s set-aside
    old folder once `target` exists again (a kill during its clean-up). Nothing else is touched: other
    names, files, symlinks, and the staging folders of other processes still running.
    """
    target = Path(target)
    staged = re.compile(rf"^\.{re.escape(target.name)}\.(\d+)\.[a-z0-9_]{{8}}\.(staging|work)$")
    set_aside = re.compile(rf"^\.{re.escape(target.name)}\.[a-z0-9_]{{8}}\.old$")
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return []
    removed = []
    for entry in entries:
        match = staged.match(entry.name)
        if match is not None:
            pid = int(match.group(1))
            stale = (own_process and pid == os.getpid()) or not _process_alive(pid)
        else:
            stale = set_aside.match(entry.name) is not None and target.exists()
        if stale and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


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
