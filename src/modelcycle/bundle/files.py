"""Crash-safe file operations: temp directories beside their target, fsync, atomic rename, sha256, and the
cleanup of temp directories left by processes that died mid-write."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from modelcycle.errors import BundleError

TEMP_PREFIX = ".tmp-"
# A temp directory older than this is garbage whoever made it (a writer on another host sharing the folder).
STALE_AFTER_SECONDS = 24 * 3600


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_files(root: Path, *, exclude: tuple[str, ...]) -> dict[str, str]:
    """sha256 of every file under ``root`` by POSIX relative path, leaving out the top-level names in
    ``exclude``."""
    hashes = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and relative.parts[0] not in exclude:
            hashes[relative.as_posix()] = sha256_file(path)
    return hashes


def fsync_path(path: Path) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_tree(root: Path) -> None:
    for directory, _, files in os.walk(root):
        for name in files:
            fsync_path(Path(directory, name))
        fsync_path(Path(directory))


def temp_path(parent: Path, purpose: str = "new") -> Path:
    """A unique name in ``parent`` saying which process owns it: ``.tmp-<pid>@<host>-<purpose>-<id>``."""
    return parent / f"{TEMP_PREFIX}{os.getpid()}@{socket.gethostname()}-{purpose}-{uuid.uuid4().hex}"


def new_temp_directory(parent: Path) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path(parent)
    temp.mkdir()
    return temp


def publish(temp: Path, target: Path) -> None:
    """Rename the written and fsynced ``temp`` to ``target`` (atomic on POSIX) and persist the rename."""
    if target.exists():
        raise BundleError(f"{target}: already exists; bundles are immutable")
    os.rename(temp, target)
    fsync_path(target.parent)


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield an empty temp directory beside ``target``; on success it is fsynced and published as ``target``.

    On any exception (or a killed process) the target does not appear; a crashed process leaves only a
    ``.tmp-*`` directory, which readers ignore and ``sweep_stale_temporaries`` removes.
    """
    if target.exists():
        raise BundleError(f"{target}: already exists; bundles are immutable")
    temp = new_temp_directory(target.parent)
    try:
        yield temp
        fsync_tree(temp)
        publish(temp, target)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def remove_tree(path: Path) -> None:
    """Delete a directory so that it vanishes at once: renamed aside first, then removed."""
    if path.exists():
        trash = temp_path(path.parent, "removed")
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)


def sweep_stale_temporaries(parent: Path, *, keep: Path | None = None) -> None:
    """Remove ``.tmp-*`` entries of ``parent`` whose owning process on this host is gone, or that are older
    than a day (an owner on another host sharing the folder)."""
    host = socket.gethostname()
    for entry in parent.glob(f"{TEMP_PREFIX}*"):
        if entry == keep:
            continue
        owner = entry.name.removeprefix(TEMP_PREFIX).rsplit("-", 2)[0]
        pid, _, owner_host = owner.partition("@")
        dead_here = owner_host == host and pid.isascii() and pid.isdigit() and not _process_alive(int(pid))
        try:
            stale = time.time() - entry.stat().st_mtime > STALE_AFTER_SECONDS
        except FileNotFoundError:
            continue
        if dead_here or stale:
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to ``path`` so that readers see either the old file or the whole new one."""
    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a fsynced temp file and a rename: the old file or the whole new one."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a fsynced temp file and a rename: the old file or the whole new one."""
    temp = temp_path(path.parent, path.name)
    try:
        with temp.open("wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
        fsync_path(path.parent)
    finally:
        temp.unlink(missing_ok=True)
