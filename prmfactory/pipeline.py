"""``prmfactory run``: the stages of a ``pipelines/*.yaml`` file, in order, on one run folder.

Each stage reads its own section of the file (as ``--config`` would) and runs through the one
stage runner (:func:`prmfactory.stages.execute`), so it is resumable by itself — mcts, verify
and judge skip the questions they have committed, filter finds its rows written — and rerunning
a pipeline after a crash continues at the first unfinished work; stages with nothing left to do
cost no engine start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

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


@dataclass(frozen=True)
class ProcessBenchAfter:
    """``run --processbench``: evaluate the pipeline's PRM on these ProcessBench files once it is trained."""

    data: Path
    threshold: float = 0.5
    backend: str = "transformers"
    dtype: str = "float32"

    def check(self, stages: list[tuple[str, StageConfig]], path: Path) -> None:
        """Refuse, before anything runs, a pipeline without a PRM or a PRM this scorer cannot run."""
        from prmfactory.prm.scorers import scorer_factory

        kinds = {config.kind for name, config in stages if name == "train-prm"}
        if not kinds:
            raise UsageError(f"{path}: --processbench evaluates the pipeline's PRM, but it has no train-prm stage")
        for kind in kinds:
            scorer_factory(kind, self.backend, self.dtype)


@dataclass
class PipelineResult:
    """Each stage's report, and the ProcessBench metrics when asked for."""

    reports: dict[str, StageReport] = field(default_factory=dict)
    processbench: dict[str, Any] | None = None


def run_pipeline(path: Path, source: StageInput, output: Path, *, force: bool = False,
                 processbench: ProcessBenchAfter | None = None,
                 on_stage: Callable[[str, StageReport, Path], None] | None = None) -> PipelineResult:
    """Run every stage of ``path`` in order on ``output``, then ``processbench`` if given (into
    ``RUN/eval-processbench``).

    ``on_stage(name, report, folder)`` is called after each stage with the folder it wrote
    (the run, or the PRM folder inside it for train-prm)."""
    stages = load_pipeline(path)
    if processbench is not None:
        processbench.check(stages, path)
    result = PipelineResult()
    for name, config in stages:
        run, stage_source = get_stage(name).in_pipeline(output, source)
        result.reports[name] = execute(name, run, config, force=force, source=stage_source)
        if on_stage is not None:
            on_stage(name, result.reports[name], run.root)
    if processbench is not None:
        from prmfactory.eval.processbench import evaluate_prm
        from prmfactory.train.stage import PIPELINE_PRM_FOLDER

        result.processbench = evaluate_prm(output / PIPELINE_PRM_FOLDER, processbench.data, output / "eval-processbench",
                                           threshold=processbench.threshold, backend=processbench.backend,
                                           dtype=processbench.dtype, force=True)  # the run's own folder
    return result
