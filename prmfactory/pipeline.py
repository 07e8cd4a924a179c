"""``prmfactory run``: the stages of a ``pipelines/*.yaml`` file, in order, on one run folder.

Each stage reads its own section of the file (as ``--config`` would) and runs through the one
stage runner (:func:`prmfactory.stages.execute`), so it is resumable by itself — mcts, verify
and judge skip the questions they have committed, filter finds its rows written — and rerunning
a pipeline after a crash continues at the first unfinished work; stages with nothing left to do
cost no engine start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from prmfactory.config import StageConfig, build_config, load_yaml_mapping
from prmfactory.errors import UsageError
from prmfactory.stages import REGISTRY, StageInput, StageReport, config_model, execute, get_stage


def load_pipeline(path: Path) -> list[tuple[str, StageConfig]]:
    """The pipeline's stages with their validated configs, before anything runs."""
    entries = load_yaml_mapping(path, "pipeline").get("stages")
    if not isinstance(entries, list) or not entries:
        raise UsageError(f"{path}: a pipeline file needs a non-empty 'stages' list")
    stages = []
    for index, entry in enumerate(entries):
        name = entry.get("stage") if isinstance(entry, dict) else None
        if name not in REGISTRY:
            raise UsageError(f"{path}: stage {index}: field 'stage': unknown stage {name!r} (known: {', '.join(REGISTRY)})")
        stages.append((name, build_config(config_model(name), name, path, {})))
    if stages[0][0] != "mcts":
        raise UsageError(f"{path}: a pipeline starts with the mcts stage, which reads --input")
    return stages


def run_pipeline(path: Path, source: StageInput, output: Path, *, force: bool = False,
                 on_stage: Callable[[str, StageReport, Path], None] | None = None) -> dict[str, StageReport]:
    """Run every stage of ``path`` in order on ``output``; returns each stage's report.

    ``on_stage(name, report, folder)`` is called after each stage with the folder it wrote
    (the run, or the PRM folder inside it for train-prm)."""
    reports = {}
    for name, config in load_pipeline(path):
        run, stage_source = get_stage(name).in_pipeline(output, source)
        reports[name] = execute(name, run, config, force=force, source=stage_source)
        if on_stage is not None:
            on_stage(name, reports[name], run.root)
    return reports
