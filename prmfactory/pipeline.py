"""``prmfactory run``: the stages of a ``pipelines/*.yaml`` file, in order, on one run folder.

Each stage reads its own section of the file (as ``--config`` would) and is resumable by itself —
mcts, verify and judge skip the questions they have committed, filter finds its rows written — so
rerunning a pipeline after a crash continues at the first unfinished work, and stages with
nothing left to do cost no engine start.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from prmfactory.config import StageConfig, build_config
from prmfactory.errors import UsageError
from prmfactory.inputs import InputFormat
from prmfactory.store import Run

PRM_FOLDER = "prm"  # where a pipeline's train-prm stage saves the PRM, inside the run folder


@dataclass(frozen=True)
class PipelineInput:
    path: Path
    format: InputFormat
    force: bool


def _stages() -> dict[str, tuple[type[StageConfig], Callable[[Run, Any, PipelineInput], dict[str, Any]]]]:
    """Stage name -> (config model, runner); imported lazily so `--help` stays fast."""
    from prmfactory.config import MctsConfig
    from prmfactory.filter.stage import FilterConfig, run_filter
    from prmfactory.judge.stage import JudgeConfig, run_judge
    from prmfactory.search.stage import run_mcts
    from prmfactory.train.stage import TrainPrmConfig, run_train_prm
    from prmfactory.verify.stage import VerifyConfig, run_verify

    return {
        "mcts": (MctsConfig, lambda run, c, i: run_mcts(run, c, i.path, input_format=i.format, force=i.force)),
        "verify": (VerifyConfig, lambda run, c, i: run_verify(run, c, force=i.force)),
        "judge": (JudgeConfig, lambda run, c, i: run_judge(run, c, force=i.force)),
        "filter": (FilterConfig, lambda run, c, i: run_filter(run, c, force=i.force)),
        "train-prm": (TrainPrmConfig, lambda run, c, i: run_train_prm(c, run.root, run.root / PRM_FOLDER, force=i.force)),
    }


def load_pipeline(path: Path) -> list[tuple[str, StageConfig]]:
    """The pipeline's stages with their validated configs, before anything runs."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"{path}: cannot read pipeline: {str(exc).splitlines()[0]}") from exc
    entries = data.get("stages") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise UsageError(f"{path}: a pipeline file needs a non-empty 'stages' list")
    known = _stages()
    stages = []
    for index, entry in enumerate(entries):
        name = entry.get("stage") if isinstance(entry, dict) else None
        if name not in known:
            raise UsageError(f"{path}: stage {index}: field 'stage': unknown stage {name!r} (known: {', '.join(known)})")
        stages.append((name, build_config(known[name][0], name, path, {})))
    if stages[0][0] != "mcts":
        raise UsageError(f"{path}: a pipeline starts with the mcts stage, which reads --input")
    return stages


def run_pipeline(path: Path, source: PipelineInput, output: Path,
                 on_stage: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, dict[str, Any]]:
    """Run every stage of ``path`` in order on ``output``; returns each stage's report."""
    stages = load_pipeline(path)
    runners = _stages()
    run = Run(output)
    reports = {}
    for name, config in stages:
        reports[name] = runners[name][1](run, config, source)
        if on_stage is not None:
            on_stage(name, reports[name])
    return reports
