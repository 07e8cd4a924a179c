"""Where a run folder's files live: a local folder, or any fsspec filesystem (S3, GCS, memory://, file://).

:class:`prmfactory.store.Run` reads and writes only through these few operations. Locally,
"readers see the old or the new file, never half" comes from writing a temporary file, fsyncing
it and renaming it into place; an object store has no rename, but a PUT is whole, so a file is
written once under its final name (shards get unique names, and the manifest decides what is
visible). ``create_exclusive`` is the one primitive the commit log needs: fsspec's ``mode="xb"``,
which s3fs turns into a conditional PUT (``If-None-Match: *``) and a local disk into ``O_EXCL``;
a filesystem that accepts ``"xb"`` without enforcing it would let two writers commit, so
:meth:`FsspecFiles.check_exclusive_create` tries it once before a run there is written.
Hand-written: fsspec gives the filesystems; these are the run's semantics over them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from prmfactory.errors import UsageError
from prmfactory.fileio import atomic_write_text, fsync_dir, sha256_file


_EXCLUSIVE_CHECKED: set[tuple[str, str]] = set()


def is_url(location: str | Path) -> bool:
    """A run location with a scheme (``s3://``, ``gs://``, ``memory://``, ``file://``) rather than a local path."""
    return isinstance(location, str) and "://" in location


class PathOutsideRun(UsageError):
    """A path taken from a run's own files (a manifest, a set-aside record) that would leave the run folder."""


class RunFiles(ABC):
    """The file operations of a run folder, by path relative to its root (``nodes/part-00000.parquet``).

    Every relative path comes from the run's own files, which may come from anyone: each operation
    refuses one that is absolute, climbs with ``..`` or (on a local disk) runs through a symlink out
    of the run, before it reads, moves or deletes anything (:class:`PathOutsideRun`).
    """

    local: bool  # a folder on this machine (its files have paths)
    renames: bool  # files are renamed into place and the writer can lock; else written once under unique names

    def _check_relative(self, rel: str) -> None:
        parts = rel.replace("\\", "/").split("/")
        if rel.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", rel) or ".." in parts or "\0" in rel:
            raise PathOutsideRun(f"{self.show()}: {rel!r} leads out of the run folder; refused (the run's files "
                                 "may have been edited: nothing was read, moved or deleted)")

    @abstractmethod
    def show(self, rel: str = "") -> str:
        """Where ``rel`` is, for messages."""

    @abstractmethod
    def read_bytes(self, rel: str) -> bytes:
        """The file's bytes; FileNotFoundError when it is absent."""

    @abstractmethod
    def write_text(self, rel: str, text: str) -> None:
        """Replace the file; readers see the old or the new text, never half."""

    @abstractmethod
    def create_exclusive(self, rel: str, text: str) -> None:
        """Create the file; FileExistsError if it exists (whoever created it first wins)."""

    @abstractmethod
    def write_table(self, rel: str, table: pa.Table) -> str:
        """Write a Parquet shard that is visible only whole, under ``rel``; its sha256."""

    @abstractmethod
    def read_table(self, rel: str) -> pa.Table: ...

    @abstractmethod
    def exists(self, rel: str) -> bool: ...

    @abstractmethod
    def names(self, rel: str) -> list[str]:
        """Names in a folder ([] when it does not exist)."""

    @abstractmethod
    def remove(self, rel: str) -> None:
        """Delete a file; nothing if it is already gone."""

    @abstractmethod
    def remove_tree(self, rel: str) -> None:
        """Delete a folder and everything in it; nothing if it is gone."""

    @abstractmethod
    def move(self, rel: str, to: str) -> None:
        """Move a file; FileNotFoundError if it is gone."""

    @abstractmethod
    def fingerprint(self, rel: str) -> tuple[Any, ...]:
        """What changes when the file changes (size, mtime): the key of a verified checksum."""

    def sha256(self, rel: str) -> str:
        return hashlib.sha256(self.read_bytes(rel)).hexdigest()

    def readable(self, rel: str) -> Path | str:
        """What a reader (pyarrow, duckdb) opens for ``rel``: its path, or its URL."""
        return self.show(rel)

    def appendable(self, rel: str) -> Path | None:
        """A path a log can append to as it goes, or None where files are written whole only."""
        return None

    def require_folder(self) -> None:
        """Refuse a root that exists and is not a folder (object stores have no such thing)."""

    def read_text(self, rel: str) -> str | None:
        """The file's text, or None if it does not exist."""
        try:
            return self.read_bytes(rel).decode("utf-8")
        except FileNotFoundError:
            return None


class LocalFiles(RunFiles):
    """A folder on this machine: temporary file, fsync, rename."""

    local = True
    renames = True

    def __init__(self, root: Path):
        self.root = Path(root)

    def readable(self, rel: str) -> Path:
        return self.path(rel)

    def appendable(self, rel: str) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        return self.path(rel)

    def require_folder(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"{self.root}: not a folder")

    def show(self, rel: str = "") -> str:
        return str(self.root / rel) if rel else str(self.root)

    def path(self, rel: str) -> Path:
        """``rel``'s path, once it is known to stay inside the run (symlinks followed)."""
        self._check_relative(rel)
        path = self.root / rel
        if rel:
            resolved, root = path.resolve(), self.root.resolve()
            if resolved != root and root not in resolved.parents:
                raise PathOutsideRun(f"{path}: leads out of the run folder (to {resolved}); refused: nothing was "
                                     "read, moved or deleted")
        return path

    def read_bytes(self, rel: str) -> bytes:
        return self.path(rel).read_bytes()

    def write_text(self, rel: str, text: str) -> None:
        atomic_write_text(self.path(rel), text)

    def create_exclusive(self, rel: str, text: str) -> None:
        path = self.path(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "x", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        fsync_dir(path.parent)

    def write_table(self, rel: str, table: pa.Table) -> str:
        path = self.path(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        pq.write_table(table, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
        return sha256_file(path)

    def read_table(self, rel: str) -> pa.Table:
        return pq.read_table(self.path(rel))

    def exists(self, rel: str) -> bool:
        return self.path(rel).exists()

    def names(self, rel: str) -> list[str]:
        folder = self.path(rel)
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def remove(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(rel).unlink()

    def remove_tree(self, rel: str) -> None:
        shutil.rmtree(self.path(rel), ignore_errors=True)

    def move(self, rel: str, to: str) -> None:
        source, target = self.path(rel), self.path(to)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)

    def fingerprint(self, rel: str) -> tuple[Any, ...]:
        stat = self.path(rel).stat()
        return stat.st_size, stat.st_mtime_ns

    def sha256(self, rel: str) -> str:
        return sha256_file(self.path(rel))


class FsspecFiles(RunFiles):
    """Any fsspec filesystem; each file is written whole under its final name (no rename)."""

    local = False
    renames = False

    def __init__(self, url: str):
        import fsspec

        try:
            self.fs, self.base = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as exc:
            raise UsageError(f"{url}: {exc} (object-store runs need the filesystem's fsspec package, e.g. "
                             "pip install 'prmfactory[s3]')") from exc
        self.url = url.rstrip("/")
        self.base = self.base.rstrip("/")
        if hasattr(self.fs, "auto_mkdir"):  # a local disk through fsspec: folders are made as files are written
            self.fs.auto_mkdir = True

    def _path(self, rel: str) -> str:
        self._check_relative(rel)
        path = f"{self.base}/{rel}" if rel else self.base
        if rel and getattr(self.fs, "local_file", False):  # file://: a symlink could still lead out
            resolved, root = os.path.realpath(path), os.path.realpath(self.base)
            if resolved != root and not resolved.startswith(root + os.sep):
                raise PathOutsideRun(f"{self.show(rel)}: leads out of the run folder (to {resolved}); refused: "
                                     "nothing was read, moved or deleted")
        return path

    def show(self, rel: str = "") -> str:
        return f"{self.url}/{rel}" if rel else self.url

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self._path(rel))

    def write_text(self, rel: str, text: str) -> None:
        self.fs.pipe_file(self._path(rel), text.encode("utf-8"))

    def create_exclusive(self, rel: str, text: str) -> None:
        with self.fs.open(self._path(rel), "xb") as handle:
            handle.write(text.encode("utf-8"))

    def check_exclusive_create(self, folder: str) -> None:
        """Refuse a filesystem where creating an existing file in ``folder`` succeeds (once per process and place)."""
        if (self.url, folder) in _EXCLUSIVE_CHECKED:
            return
        import uuid

        probe = f"{folder}/.probe-{uuid.uuid4().hex}"
        self.create_exclusive(probe, "probe")  # not empty: s3fs writes an empty file without the condition
        try:
            self.create_exclusive(probe, "probe")
            enforced = False
        except FileExistsError:
            enforced = True
        finally:
            self.remove(probe)
        if not enforced:
            raise UsageError(f"{self.url}: this filesystem lets a file be created twice (mode 'xb' is not enforced), so "
                             "two writers could both commit; use a local folder or a store with conditional writes")
        _EXCLUSIVE_CHECKED.add((self.url, folder))

    def write_table(self, rel: str, table: pa.Table) -> str:
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        data = buffer.getvalue()
        self.fs.pipe_file(self._path(rel), data)
        return hashlib.sha256(data).hexdigest()

    def read_table(self, rel: str) -> pa.Table:
        return pq.read_table(io.BytesIO(self.read_bytes(rel)))

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self._path(rel))

    def names(self, rel: str) -> list[str]:
        try:
            entries = self.fs.ls(self._path(rel), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def remove(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(rel))

    def remove_tree(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self._path(rel), recursive=True)

    def move(self, rel: str, to: str) -> None:
        self.fs.mv(self._path(rel), self._path(to))

    def fingerprint(self, rel: str) -> tuple[Any, ...]:
        info = self.fs.info(self._path(rel), refresh=True)
        return info.get("size"), info.get("ETag") or info.get("mtime") or info.get("created")


def run_files(location: str | Path) -> RunFiles:
    """The files of the run at ``location``: a URL goes through fsspec, a path stays local."""
    return FsspecFiles(location) if is_url(location) else LocalFiles(Path(location))
