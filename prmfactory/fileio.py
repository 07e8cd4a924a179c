"""Crash-safe file helpers shared by every module that writes a file (no run-folder knowledge here)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (creating its folder) so that readers see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def replace_folder(new: Path, target: Path, replacing: bool) -> None:
    """Make the finished folder ``new`` (beside ``target``) the ``target``, by renames.

    ``replacing``: ``target`` holds an earlier output, checked by the caller to hold only files that
    its command wrote; it is renamed away first and deleted only once ``new`` is in place (put back if
    that fails). Otherwise ``target`` is absent or an empty folder.
    """
    old = target.with_name(f".{target.name}.replaced-{os.getpid()}") if replacing else None
    if old is not None:
        os.replace(target, old)
    elif target.exists():
        target.rmdir()
    try:
        os.replace(new, target)
    except OSError:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old)


def output_folder_names(output: Path) -> list[str]:
    """The names in an ``--output`` folder ([] when it is new or empty); a one-line error when it is not a folder.

    Commands that replace an earlier output of their own (import, eval) check the names against what
    they wrote before anything is written."""
    from prmfactory.errors import UsageError

    if not output.exists():
        return []
    if not output.is_dir():
        raise UsageError(f"--output {output}: exists and is not a folder")
    return sorted(p.name for p in output.iterdir())
