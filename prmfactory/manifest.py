"""The shape of a run's manifest, checked on every read: a run folder may come from anyone.

A manifest (``manifest.json``, a commit-log entry, or the ``--force`` set-aside record) names the
files prmfactory reads, moves and deletes, so a wrong shape or a path that leaves the run must stop
the command before it touches anything. Every shard's ``file`` must be
``<dataset>/part-NNNNN[-xxxxxxxxxxxx].parquet`` under the dataset it is listed in, for a dataset
``schemas/`` defines: no ``..``, no absolute path, no other folder. (That a listed file is not a
symlink out of the run is checked where files are opened, in :mod:`prmfactory.runfiles`.)
"""

from __future__ import annotations

import re
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from prmfactory.errors import PrmfactoryError

SHARD_NAME = re.compile(r"^part-(\d{5,})(-[0-9a-f]{12})?\.parquet$")
SHA256 = r"^[0-9a-f]{64}$"


class CorruptManifest(PrmfactoryError):
    """A manifest that is not JSON, or not of the shape prmfactory writes."""


class ShardRecord(BaseModel):
    """One committed shard. Lineage fields are absent on shards written before lineage was recorded."""

    model_config = ConfigDict(extra="allow", strict=True)

    file: str
    rows: int = Field(ge=0)
    question_ids: list[str]
    sha256: str = Field(pattern=SHA256)
    stage: Optional[str] = None
    config_sha256: Optional[str] = None
    inputs: Optional[dict[str, list[str]]] = None
    whole_run: bool = False

    @model_validator(mode="after")
    def _lineage_whole(self) -> "ShardRecord":
        if self.inputs is not None and (self.stage is None or self.config_sha256 is None):
            raise ValueError("a shard with 'inputs' also names its 'stage' and 'config_sha256'")
        return self


class DatasetEntry(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    shards: list[ShardRecord]


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    datasets: dict[str, DatasetEntry]

    @model_validator(mode="after")
    def _files_stay_in_their_dataset(self) -> "Manifest":
        from prmfactory import schemas

        known = set(schemas.names())
        for name, entry in self.datasets.items():
            if name not in known:
                raise ValueError(f"datasets.{name}: not a dataset prmfactory writes ({', '.join(sorted(known))})")
            for index, shard in enumerate(entry.shards):
                folder, _, leaf = shard.file.partition("/")
                if folder != name or not SHARD_NAME.match(leaf):
                    raise ValueError(f"datasets.{name}.shards.{index}.file: {shard.file!r} is not a shard of "
                                     f"{name} ({name}/part-NNNNN.parquet inside the run)")
        return self


class AsideRecord(BaseModel):
    """What ``--force`` set aside (``RUN/.aside/manifest.json``): datasets as in a manifest, and run.yaml."""

    model_config = ConfigDict(extra="forbid", strict=True)

    datasets: dict[str, DatasetEntry]
    run_yaml: Optional[str]

    @model_validator(mode="after")
    def _files_stay_in_their_dataset(self) -> "AsideRecord":
        Manifest(datasets=self.datasets)
        return self


def _reason(exc: ValidationError) -> str:
    first = exc.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if ": " in message and not location:
        return message
    return f"field {location!r}: {message}" if location else message


def check(data: Any, where: str, model: type[BaseModel] = Manifest) -> dict[str, Any]:
    """``data`` as read, once it has the shape of ``model``; else a one-line :class:`CorruptManifest`."""
    if not isinstance(data, dict):
        raise CorruptManifest(f"{where}: corrupt manifest: expected an object, got {type(data).__name__}")
    try:
        model.model_validate(data)
    except ValidationError as exc:
        raise CorruptManifest(f"{where}: corrupt manifest: {_reason(exc)}") from exc
    return data
