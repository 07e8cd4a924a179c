"""What the stage runner (:func:`prmfactory.stages.execute`) records around a stage in its run.

The run store (:mod:`prmfactory.store`) keeps shards, the manifest and lineage; this module keeps
the stage's effective config in ``run.yaml`` (refusing a rerun that would mix two configs in one
dataset), where its work ran, its report (``RUN/reports/<stage>.json``) and its log
(``RUN/log.txt``), as DESIGN.md §3.13 gives them to the runner.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from datetime import datetime, timezone
from typing import Any, Iterator, Mapping, Sequence

from prmfactory import schemas
from prmfactory.config import StageConfig, dump_yaml
from prmfactory.errors import UsageError
from prmfactory.store import Run, tool_versions

LOG = logging.getLogger("prmfactory")


def begin_stage(run: Run, stage: str, config: StageConfig, outputs: Sequence[str], *, force: bool,
                downstream: Sequence[str] = ()) -> dict[str, int]:
    """Record ``config`` as the stage's effective config, refusing a conflicting rerun.

    A rerun whose output-affecting fields differ from the recorded ones would mix two
    configurations in one dataset, so it is refused unless ``force`` is set. ``force`` sets the
    stage's outputs and every ``downstream`` dataset (computed from them) aside before the stage
    starts afresh (:meth:`Run.set_aside`); returns what it set aside (shards per dataset).
    """
    run.require_writer()
    data = run.run_yaml()
    stages = data.setdefault("stages", {})
    previous = stages.get(stage)
    discarded: dict[str, int] = {}
    if force:
        discarded = run.set_aside([*outputs, *downstream])
    elif previous and any(run.shards(d) for d in outputs):
        old = previous.get("output_config", {})
        new = config.output_affecting()
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if changed:
            details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
            also = [d for d in downstream if run.shards(d)]
            raise UsageError(
                f"{run.location('run.yaml')}: stage {stage!r} already ran with a different config ({details}); "
                f"rerun with --force to discard its outputs{' and ' + ', '.join(also) if also else ''} "
                "and start again")
    stages[stage] = {
        "config": config.model_dump(mode="json"),
        "output_config": config.output_affecting(),
        "outputs": list(outputs),
        "schema_versions": {d: schemas.load(d).version for d in outputs},
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    data["tool_versions"] = tool_versions()
    run.write_text("run.yaml", dump_yaml(data))
    return discarded


def record_cluster(run: Run, stage: str, cluster: Mapping[str, Any]) -> None:
    """Keep where a stage's work ran (Ray address, nodes, resources, workers) beside its config in run.yaml."""
    run.require_writer()
    data = run.run_yaml()
    data.setdefault("stages", {}).setdefault(stage, {})["cluster"] = dict(cluster)
    run.write_text("run.yaml", dump_yaml(data))


def write_report(run: Run, stage: str, report: Mapping[str, Any]) -> str:
    """Keep a stage's counters and metrics in ``RUN/reports/<stage>.json``; where it is."""
    run.write_text(f"reports/{stage}.json", json.dumps(report, indent=1, default=str))
    return run.location(f"reports/{stage}.json")


@contextlib.contextmanager
def stage_log(run: Run, stage: str) -> Iterator[logging.Logger]:
    """Append the ``prmfactory`` logger's records to ``RUN/log.txt`` while a stage runs.

    Where the run's storage appends (a local disk), each record lands as it is logged; elsewhere
    (an object store) the stage's records are kept in memory and added when the stage ends,
    however it ends.
    """
    formatter = logging.Formatter(f"%(asctime)s %(levelname)s [{stage}] %(message)s")
    log_file = run.files.appendable("log.txt")
    buffer = io.StringIO()
    handler = logging.FileHandler(log_file, encoding="utf-8") if log_file else logging.StreamHandler(buffer)
    handler.setFormatter(formatter)
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    try:
        yield LOG
    finally:
        LOG.removeHandler(handler)
        handler.close()
        if buffer.getvalue():
            run.files.write_text("log.txt", (run.files.read_text("log.txt") or "") + buffer.getvalue())
