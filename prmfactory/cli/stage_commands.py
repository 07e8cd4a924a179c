"""The stage commands (mcts, verify, judge, filter, train-prm), ``run`` (a pipeline file) and ``demo``.

A stage command's options are generated from its config model (:func:`prmfactory.cli.options.stage_command`);
each builds the config and calls the one stage runner, :func:`prmfactory.stages.execute`.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from prmfactory.cli import options as opt
from prmfactory.cli.typer_app import app, command, handled


def _register(name: str, panel: str, epilog: str) -> Callable:
    return command(app, name, rich_help_panel=panel, epilog=epilog)


def _engine_flags(base_url: str | None) -> dict[str, Any]:
    return {"engine": {"backend": "openai", "base_url": base_url}} if base_url else {}


@opt.stage_command(_register, handled, "mcts", [
    opt.parameter("input", opt.InputOpt, inspect.Parameter.empty), opt.parameter("output", opt.OutputLocationOpt, inspect.Parameter.empty),
    opt.parameter("input_format", opt.FormatOpt, "auto"), opt.parameter("skip_invalid", opt.SkipInvalidOpt, False),
    opt.parameter("base_url", opt.BaseUrlOpt), opt.parameter("force", opt.ForceOpt, False), *opt.cluster_parameters()],
    "Search solution trees with a policy LLM and estimate per-step Monte-Carlo values.")
def _mcts(given: dict[str, Any], build: Callable) -> None:
    from prmfactory.stages import StageInput, execute
    from prmfactory.store import Run

    config = build({**_engine_flags(given["base_url"]), **opt.cluster_values(given)})
    source = StageInput(given["input"], given["input_format"], given["skip_invalid"])
    print_report(given["output"], execute("mcts", Run(given["output"]), config, force=given["force"], source=source))


def print_report(run: Path | str, report) -> None:
    """One or two lines about a finished stage: counts, drops, engine throughput, where the report is."""
    from prmfactory.progress import console

    trained = "the PRM was already trained on" if report.already_done else "trained a PRM on"
    parts = [f"{trained} {report.rows_in} rows" if report.stage == "train-prm" else
             f"{report.rows_in} in ({report.skipped_done} already done), {report.rows_out} rows out"]
    parts += [f"{k} {v}" for k, v in report.counts.items()]
    parts += [f"dropped {k} {v}" for k, v in report.dropped.items()]
    if report.discarded:
        parts.append("discarded " + ", ".join(f"{d} ({n} shards)" for d, n in report.discarded.items()))
    console.print(f"[bold]{report.stage}[/bold] done in {report.seconds} s: " + "; ".join(parts), highlight=False)
    engine = report.engine
    if engine:
        console.print(f"engine: {engine.get('generated_tokens')} tokens, {engine.get('tokens_per_second')} tok/s, "
                      f"busy {engine.get('busy_fraction')}, prefix-cache hit rate "
                      f"{engine.get('prefix_cache_hit_rate', 'n/a')}")
    console.print(f"run folder: {run} (report: {str(run).rstrip('/')}/reports/{report.stage}.json)")


VerifyRunOpt = Annotated[Optional[str], typer.Option("--run", help="Run folder with mcts shards (writes verdicts/): "
                                                                 "a path, or a URL such as s3://bucket/run.")]
ProcessBenchOpt = Annotated[Optional[Path], typer.Option(help="ProcessBench-format file or folder to verify standalone.", exists=True)]
VerifyOutputOpt = Annotated[Optional[Path], typer.Option("--output", "-o", help="Output folder for --processbench.")]


@opt.stage_command(_register, handled, "verify", [
    opt.parameter("run", VerifyRunOpt), opt.parameter("processbench", ProcessBenchOpt), opt.parameter("output", VerifyOutputOpt),
    opt.parameter("force", opt.ForceOpt, False), *opt.cluster_parameters()],
    "Check each step's arithmetic and algebra exactly (sympy) and final answers (math-verify).")
def _verify(given: dict[str, Any], build: Callable) -> None:
    from prmfactory.errors import UsageError

    run, processbench, output = given["run"], given["processbench"], given["output"]
    opt.exactly_one(given, run="--run RUN", processbench="--processbench FILE_OR_DIR")
    config = build(opt.cluster_values(given))
    if processbench is not None:
        from prmfactory.eval.verify_processbench import verify_processbench

        if output is None:
            raise UsageError("--processbench needs --output DIR")
        result = verify_processbench(processbench, output, seconds_per_claim=config.seconds_per_claim,
                                     quiet=config.quiet, force=given["force"])
        print(json.dumps({k: v for k, v in result.items() if k != "flag_statistics"}, indent=1))
        print(f"predictions and metrics in {output}")
        return
    _run_stage("verify", run, config, given["force"])


def _run_stage(stage: str, run: Path | str, config, force: bool):
    from prmfactory.stages import execute

    from prmfactory.store import Run

    report = execute(stage, Run.existing(run), config, force=force)
    print_report(run, report)
    return report


@opt.stage_command(_register, handled, "judge", [
    opt.parameter("run", opt.RunLocationOpt, inspect.Parameter.empty), opt.parameter("base_url", opt.BaseUrlOpt),
    opt.parameter("force", opt.ForceOpt, False), *opt.cluster_parameters()],
    "Grade each complete solution with an LLM judge, with majority votes over samples.")
def _judge(given: dict[str, Any], build: Callable) -> None:
    config = build({**_engine_flags(given["base_url"]), **opt.cluster_values(given)})
    _run_stage("judge", given["run"], config, given["force"])


@opt.stage_command(_register, handled, "filter", [
    opt.parameter("run", opt.RunLocationOpt, inspect.Parameter.empty), opt.parameter("force", opt.ForceOpt, False)],
    "Fuse MC values, tool verdicts and judge votes into step labels; filter with SQL; write training shards.")
def _filter(given: dict[str, Any], build: Callable) -> None:
    from prmfactory.progress import console

    run = given["run"]
    report = _run_stage("filter", run, build({}), given["force"])
    if report.already_done:
        console.print(f"filter: {run}/steps already written from these inputs with this config (--force redoes it)")
        return
    for entry in report.details["filters"]:
        console.print(f"  {entry['filter']}: {entry['rows_in']} -> {entry['rows_out']} rows "
                      f"({entry['rows_removed']} removed, {entry['steps_removed']} steps removed)")
    console.print(f"steps ({report.details['rule']}): {report.rows_out} rows, {report.counts['positive_steps']} correct / "
                  f"{report.counts['negative_steps']} wrong steps, keep-rate {report.details['keep_rate']} "
                  f"(distinct rows / candidates {report.details['distinct_rate']}); every "
                  f"dropped row is in {str(run).rstrip('/')}/rejected")


TrainDataOpt = Annotated[Path, typer.Option(help="Run folder (its steps/) or Parquet shards in TRL's stepwise format.", exists=True)]
TrainOutputOpt = Annotated[Path, typer.Option("--output", "-o", help="Folder for the trained PRM.")]
TrainForceOpt = Annotated[bool, typer.Option("--force", help="Replace a PRM in --output trained with another config or data.")]
TrainMixOpt = Annotated[Optional[list[str]], typer.Option(
    "--mix", metavar="DATA=WEIGHT", help="More training data mixed into --data (a run folder or Parquet shards), each "
                                         "row taken WEIGHT times (0.5: a seeded half); repeatable.")]


def parse_mix(values: list[str]) -> dict[str, float]:
    """``--mix DATA=WEIGHT`` flags as the config's ``mix`` mapping."""
    from prmfactory.errors import UsageError

    mix = {}
    for value in values:
        path, _, weight = value.rpartition("=")
        try:
            if not path:
                raise ValueError(value)
            mix[path] = float(weight)
        except ValueError:
            raise UsageError(f"--mix {value!r}: expected DATA=WEIGHT, e.g. runs/toy=0.5") from None
    return mix


@opt.stage_command(_register, handled, "train-prm", [
    opt.parameter("data", TrainDataOpt, inspect.Parameter.empty), opt.parameter("output", TrainOutputOpt, inspect.Parameter.empty),
    opt.parameter("force", TrainForceOpt, False), opt.parameter("mix", TrainMixOpt, None)],
    "Train a discriminative or generative PRM on stepwise shards.")
def _train_prm(given: dict[str, Any], build: Callable) -> None:
    from prmfactory.stages import StageInput, execute
    from prmfactory.store import Run

    output, config = given["output"], build({"mix": parse_mix(given["mix"])} if given["mix"] else {})
    if "base" not in config.model_fields_set:
        from prmfactory.progress import console

        console.print("[yellow]note:[/yellow] no --base given: training on `toy`, the offline arithmetic domain's "
                      "tiny policy, which reads only toy problems; for real text give --base (a Hub id, a model "
                      "folder, or smollm2)", highlight=False, soft_wrap=True)
    report = execute("train-prm", Run(output), config, force=given["force"], source=StageInput(given["data"]))
    if report.already_done:
        print(f"{output} already holds this PRM (same config and data); --force retrains it")
        return
    print(json.dumps(report.details, indent=1))
    print(f"PRM saved in {output} (model card: {output / 'README.md'})")


@command(app, name="run", rich_help_panel=opt.HELP_PANELS["run"])
@handled
def run_pipeline(
    pipeline: Annotated[Path, typer.Argument(help="A pipeline file, e.g. pipelines/toy.yaml.", exists=True, dir_okay=False)],
    input: opt.InputOpt,
    output: opt.OutputRunOpt,
    input_format: opt.FormatOpt = "auto",
    force: opt.ForceOpt = False,
    processbench: Annotated[Optional[Path], typer.Option(
        help="Then evaluate the pipeline's PRM on these ProcessBench files (a file or a folder of splits); "
             "metrics in RUN/eval-processbench.", exists=True)] = None,
    threshold: Annotated[float, typer.Option(min=0.0, max=1.0, help="ProcessBench: a step scored below it is the "
                                                                    "predicted first error.")] = 0.5,
    prm_backend: Annotated[opt.ScoringBackend, typer.Option(help="ProcessBench: the PRM scorer.")] = "transformers",
    dtype: opt.PrmDtypeOpt = "float32",
) -> None:
    """Run the stages of a pipeline file in order on one run folder; a rerun continues where it stopped."""
    from prmfactory.pipeline import ProcessBenchAfter
    from prmfactory.pipeline import run_pipeline as run_stages
    from prmfactory.progress import console
    from prmfactory.stages import StageInput

    after = None if processbench is None else ProcessBenchAfter(processbench, threshold, prm_backend, dtype)
    result = run_stages(pipeline, StageInput(input, input_format), output, force=force, processbench=after,
                        on_stage=lambda name, report, folder: print_report(folder, report))
    console.print(f"pipeline {pipeline} done; inspect with `prmfactory stats {output}`")
    if after is not None:
        from prmfactory.eval.processbench import markdown_table

        print(markdown_table(result.processbench), end="")
        print(f"results in {output / 'eval-processbench'}")


@command(app, rich_help_panel=opt.HELP_PANELS["demo"])
@handled
def demo(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the run, the PRM, the evaluations and the report.")] = Path("runs/demo"),
    quick: Annotated[bool, typer.Option(help="A reduced setting (a dozen problems) that checks the whole path in a few minutes.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Rerun every stage, replacing outputs made with another "
                                                        "config (e.g. by an older pipelines/demo.yaml).")] = False,
    quiet: opt.QuietOpt = False,
) -> None:
    """Run the whole factory end to end on the offline toy domain and write report.md / report.json."""
    from prmfactory.demo import SIZES, run_demo
    from prmfactory.progress import console

    report = run_demo(output, SIZES["quick" if quick else "full"], quiet=quiet, force=force,
                      on_stage=lambda name, stage_report, folder: print_report(folder, stage_report))
    console.print_json(json.dumps(report["headline"]))
    for name, path in report["artefacts"].items():
        console.print(f"{name}: {path}")
    console.print(f"[bold]report:[/bold] {output / 'report.md'}")
