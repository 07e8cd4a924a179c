"""The ``prmfactory`` command line: one thin command per stage (DESIGN.md §3.9).

Commands parse flags, build the stage config and call the stage; heavy libraries are imported
inside the commands so ``--help`` stays instant. Errors print one line and exit 2 (bad input or
usage) or 1 (failure).
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from prmfactory import cli_options as opt
from prmfactory.errors import PrmfactoryError

app = typer.Typer(
    name="prmfactory",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
toy_app = typer.Typer(help="The offline arithmetic toy domain: problems, oracle, tiny policy and judge.",
                      no_args_is_help=True)
app.add_typer(toy_app, name="toy", rich_help_panel=opt.HELP_PANELS["toy"])
models_app = typer.Typer(help="Model names: the toy models, GGUF aliases (smollm2) and the converted-GGUF cache.",
                         no_args_is_help=True)
app.add_typer(models_app, name="models", rich_help_panel=opt.HELP_PANELS["models"])


@app.callback()
def _options(debug: Annotated[bool, typer.Option("--debug", envvar="PRMFACTORY_DEBUG",
                                                 help="Show the Python stack of an error instead of one line.")] = False,
             no_verify: Annotated[bool, typer.Option("--no-verify", help="Skip checking shards against their "
                                                     "sha256 on read (for huge runs; see BENCHMARKS.md).")] = False,
             verbose: Annotated[bool, typer.Option("--verbose", help="Show the notices of vLLM, torch and "
                                                   "transformers too (kept out by default; --debug implies it).")] = False):
    """Process-reward-model data factory: search, verify, judge, filter, train, evaluate, serve, publish."""
    import os

    if debug:
        os.environ["PRMFACTORY_DEBUG"] = "1"
    if no_verify:
        os.environ["PRMFACTORY_NO_VERIFY"] = "1"
    if not (verbose or debug):
        from prmfactory.progress import quiet_third_party

        quiet_third_party()


def _fail(message: str, code: int) -> None:
    from rich.markup import escape

    from prmfactory.progress import console

    console.print(f"[red]error:[/red] {escape(message)}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


_BAD_PATH = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError)


def _unexpected(exc: Exception) -> tuple[str, int] | None:
    """One line and an exit code for the errors a damaged file or a bad path raises anywhere; None for bugs."""
    import pyarrow as pa

    if isinstance(exc, OSError) and not isinstance(exc, pa.ArrowException):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}", 2 if isinstance(exc, _BAD_PATH) else 1
    if isinstance(exc, UnicodeDecodeError):
        return f"not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})", 2
    if isinstance(exc, pa.ArrowException):
        return f"damaged or unreadable Parquet data: {str(exc).splitlines()[0]}", 1
    return None


def handled(fn: Callable) -> Callable:
    """Turn errors into a one-line message and an exit code: 2 bad input or usage, 1 failure.

    prmfactory's own errors name file, line and field; a remaining OSError, UnicodeDecodeError or
    Arrow error (a damaged file the reader did not expect) is one line too. ``--debug`` (or
    PRMFACTORY_DEBUG=1) shows the stack instead.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import os

        try:
            return fn(*args, **kwargs)
        except PrmfactoryError as exc:
            if os.environ.get("PRMFACTORY_DEBUG") == "1":
                raise
            _fail(str(exc), exc.exit_code)
        except Exception as exc:
            described = None if os.environ.get("PRMFACTORY_DEBUG") == "1" else _unexpected(exc)
            if described is None:
                raise
            _fail(*described)

    return wrapper


def _engine_flags(base_url: str | None) -> dict[str, Any]:
    return {"engine": {"backend": "openai", "base_url": base_url}} if base_url else {}


BaseUrlOpt = Annotated[Optional[str], typer.Option(help="Use an OpenAI-compatible server instead of in-process vLLM "
                                                         "(sets engine.backend=openai, engine.base_url).")]


@opt.stage_command(app, handled, "mcts", [
    opt.parameter("input", opt.InputOpt, inspect.Parameter.empty), opt.parameter("output", opt.OutputLocationOpt, inspect.Parameter.empty),
    opt.parameter("input_format", opt.FormatOpt, "auto"), opt.parameter("skip_invalid", opt.SkipInvalidOpt, False),
    opt.parameter("base_url", BaseUrlOpt), opt.parameter("force", opt.ForceOpt, False), *opt.cluster_parameters()],
    "Search solution trees with a policy LLM and estimate per-step Monte-Carlo values.")
def _mcts(given: dict[str, Any], build: Callable) -> None:
    from prmfactory.stages import StageInput, execute
    from prmfactory.store import Run

    _check_format(given["input_format"])
    config = build({**_engine_flags(given["base_url"]), **opt.cluster_values(given)})
    source = StageInput(given["input"], given["input_format"], given["skip_invalid"])
    _print_report(given["output"], execute("mcts", Run(given["output"]), config, force=given["force"], source=source))


def _check_format(value: str) -> None:
    from prmfactory.errors import UsageError
    from prmfactory.inputs import FORMATS

    if value not in FORMATS:
        raise UsageError(f"--format: expected one of {', '.join(FORMATS)}, got {value!r}")


def _print_report(run: Path | str, report) -> None:
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


@opt.stage_command(app, handled, "verify", [
    opt.parameter("run", VerifyRunOpt), opt.parameter("processbench", ProcessBenchOpt), opt.parameter("output", VerifyOutputOpt),
    opt.parameter("force", opt.ForceOpt, False), *opt.cluster_parameters()],
    "Check each step's arithmetic and algebra exactly (sympy) and final answers (math-verify).")
def _verify(given: dict[str, Any], build: Callable) -> None:
    from prmfactory.errors import UsageError

    run, processbench, output = given["run"], given["processbench"], given["output"]
    if (run is None) == (processbench is None):
        raise UsageError("give exactly one of --run RUN or --processbench FILE_OR_DIR")
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

    report = execute(stage, _existing_run(run), config, force=force)
    _print_report(run, report)
    return report


@opt.stage_command(app, handled, "judge", [
    opt.parameter("run", opt.RunLocationOpt, inspect.Parameter.empty), opt.parameter("base_url", BaseUrlOpt),
    opt.parameter("force", opt.ForceOpt, False), *opt.cluster_parameters()],
    "Grade each complete solution with an LLM judge, with majority votes over samples.")
def _judge(given: dict[str, Any], build: Callable) -> None:
    config = build({**_engine_flags(given["base_url"]), **opt.cluster_values(given)})
    _run_stage("judge", given["run"], config, given["force"])


@opt.stage_command(app, handled, "filter", [
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


@opt.stage_command(app, handled, "train-prm", [
    opt.parameter("data", TrainDataOpt, inspect.Parameter.empty), opt.parameter("output", TrainOutputOpt, inspect.Parameter.empty),
    opt.parameter("force", TrainForceOpt, False)],
    "Train a discriminative or generative PRM on stepwise shards.")
def _train_prm(given: dict[str, Any], build: Callable) -> None:
    from prmfactory.stages import StageInput, execute
    from prmfactory.store import Run

    output, config = given["output"], build({})
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


@app.command("import", rich_help_panel=opt.HELP_PANELS["import"])
@handled
def import_data(
    dataset: Annotated[str, typer.Argument(help="math-shepherd, prm800k, processbench or prmbench.")],
    input: Annotated[Path, typer.Option("--input", "-i", help="The dataset's file, or a folder of its files.", exists=True)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for part-*.parquet, rejects.jsonl, import.json, log.txt.")],
    neutral_is_correct: Annotated[bool, typer.Option(help="PRM800K: a neutral (0) rating counts as correct "
                                                          "(TRL's conversion counts it wrong).")] = False,
    force: Annotated[bool, typer.Option(help="Replace an earlier import in --output.")] = False,
    quiet: opt.QuietOpt = False,
) -> None:
    """A public PRM dataset as TRL stepwise Parquet for `train-prm --data DIR`; unmappable records go to rejects.jsonl."""
    from prmfactory.public_data import import_dataset

    report = import_dataset(dataset, input, output, neutral_is_correct=neutral_is_correct, force=force, quiet=quiet)
    print(f"{report['rows']} rows ({report['steps']} steps, {report['positive_steps']} labelled correct), "
          f"{report['rejected']} rejected" + "".join(f"; {n} {r}" for r, n in report["rejected_by_reason"].items()))
    print(f"written to {output}; train with `prmfactory train-prm --data {output}`")


eval_app = typer.Typer(help="Evaluate a PRM on ProcessBench, PRMBench or by Best-of-N reranking.", no_args_is_help=True)
app.add_typer(eval_app, name="eval", rich_help_panel=opt.HELP_PANELS["eval"])


PrmOpt = Annotated[Optional[Path], typer.Option(help="A PRM folder (from `prmfactory train-prm`, or of --prm-format).", exists=True, file_okay=False)]
BackendOpt = Annotated[str, typer.Option(help="PRM scorer: transformers, or vllm (discriminative PRMs).")]
PrmFormatOpt = Annotated[str, typer.Option(
    "--prm-format", help="The PRM folder's format: auto (prmfactory's prm.json, or Qwen2.5-Math-PRM by its "
                         "architecture), prmfactory, qwen2.5-math-prm, math-shepherd or rlhflow.")]
PrmDtypeOpt = Annotated[str, typer.Option(
    "--dtype", help="PRM weights dtype for scoring: float32, or bfloat16 (about 2x faster on CPUs with AVX-512 BF16).")]
EvalForceOpt = Annotated[bool, typer.Option("--force", help="Replace an earlier output of the same evaluation in "
                                                           "--output (any other folder is refused).")]


@eval_app.command("processbench")
@handled
def eval_processbench(
    data: Annotated[Path, typer.Option(help="ProcessBench file or folder (one split per file).", exists=True)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for metrics.json, metrics.md, metrics.png.")],
    prm: PrmOpt = None,
    predictions: Annotated[Optional[Path], typer.Option(help="JSONL of {id, step_scores} or {id, prediction}.", exists=True, dir_okay=False)] = None,
    threshold: Annotated[str, typer.Option(help="A step scored below it is the predicted first error: a number in "
                                                "[0, 1], or `auto` to choose it on --calibrate-on.")] = "0.5",
    calibrate_on: Annotated[Optional[str], typer.Option(help="With --threshold auto: the split (e.g. gsm8k) the "
                                                             "threshold is chosen on; the others are reported with it "
                                                             "and --prm keeps it for serve and RL.")] = None,
    backend: BackendOpt = "transformers",
    prm_format: PrmFormatOpt = "auto",
    dtype: PrmDtypeOpt = "float32",
    on_too_long: Annotated[str, typer.Option(help="A solution longer than the PRM's context: truncate (score the "
                                                  "steps that fit; the rest are never the first error), skip (leave "
                                                  "it out of the metrics) or error. What was not scored is always "
                                                  "printed and written to metrics.json / metrics.md.")] = "truncate",
    force: EvalForceOpt = False,
    quiet: opt.QuietOpt = False,
) -> None:
    """The ProcessBench protocol: per split accuracy on erroneous and correct samples, F1, average F1."""
    from prmfactory.errors import UsageError
    from prmfactory.eval.processbench import (calibrated_metrics, evaluate_prm, load_splits, markdown_table, metrics,
                                              read_predictions, write_results)
    from prmfactory.prm.public import OWN_FORMAT

    if (prm is None) == (predictions is None):
        raise UsageError("give exactly one of --prm DIR or --predictions FILE")
    fixed = _threshold_value(threshold, calibrate_on)
    if prm is not None:
        result = evaluate_prm(prm, data, output, threshold=fixed if fixed is not None else 0.5, backend=backend,
                              dtype=dtype, quiet=quiet, calibrate_on=calibrate_on, prm_format=prm_format, force=force,
                              on_too_long=on_too_long)
    else:
        from prmfactory.eval.output import eval_output

        splits = load_splits(data)
        with eval_output(output, "processbench", force=force) as folder:
            result = calibrated_metrics(splits, predictions, calibrate_on) if calibrate_on is not None else \
                metrics(splits, read_predictions(predictions, splits, fixed))
            write_results(result, folder, f"ProcessBench: {predictions.name}")
    if calibrate_on is not None:
        print(f"threshold {result['threshold']} chosen on {calibrate_on} (average F1 there "
              f"{result['calibration']['average_f1']}); the other splits reported with it"
              + (f"; kept in {prm}/prm.json" if result.get("prm_format") == OWN_FORMAT else ""))
    print(markdown_table(result), end="")
    print(f"results in {output}")


@eval_app.command("prmbench")
@handled
def eval_prmbench(
    data: Annotated[list[Path], typer.Option(help="PRMBench JSONL file or folder of them (repeatable).", exists=True)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for metrics.json, metrics.md, metrics.png.")],
    prm: PrmOpt = None,
    predictions: Annotated[Optional[Path], typer.Option(help="JSONL of {idx, step_scores} or {idx, step_labels}.", exists=True, dir_okay=False)] = None,
    threshold: Annotated[float, typer.Option(min=0.0, max=1.0, help="A step scored above it is valid (PRMBench: 0.5).")] = 0.5,
    backend: BackendOpt = "transformers",
    prm_format: PrmFormatOpt = "auto",
    dtype: PrmDtypeOpt = "float32",
    force: EvalForceOpt = False,
    quiet: opt.QuietOpt = False,
) -> None:
    """The PRMBench protocol: PRMScore (half F1 on valid steps, half on erroneous ones) per error category."""
    from prmfactory.errors import UsageError
    from prmfactory.eval.prmbench import evaluate, markdown_table

    if (prm is None) == (predictions is None):
        raise UsageError("give exactly one of --prm DIR or --predictions FILE")
    result = evaluate(data, output, prm_path=prm, predictions=predictions, threshold=threshold, backend=backend,
                      dtype=dtype, prm_format=prm_format, quiet=quiet, force=force)
    print(markdown_table(result), end="")
    print(f"results in {output}")


def _threshold_value(threshold: str, calibrate_on: Optional[str]) -> Optional[float]:
    """``--threshold`` as a number, or None for ``auto`` (which needs ``--calibrate-on``)."""
    from prmfactory.errors import UsageError

    if threshold == "auto":
        if calibrate_on is None:
            raise UsageError("--threshold auto needs --calibrate-on SPLIT (the split the threshold is chosen on)")
        return None
    if calibrate_on is not None:
        raise UsageError("--calibrate-on goes with --threshold auto")
    try:
        value = float(threshold)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise UsageError(f"--threshold: expected a number in [0, 1] or auto, got {threshold!r}")
    return value


@eval_app.command("bon")
@handled
def eval_bon(
    prm: Annotated[Path, typer.Option(help="A PRM folder (from `prmfactory train-prm`, or of --prm-format).", exists=True, file_okay=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for bon.json, bon.md, bon.png and candidates.jsonl.")],
    input: Annotated[Optional[Path], typer.Option("--input", "-i", help="Problems JSONL (with reference answers).", exists=True, dir_okay=False)] = None,
    candidates: Annotated[Optional[Path], typer.Option(help="candidates.jsonl of an earlier bon run: rerank it instead of sampling.", exists=True, dir_okay=False)] = None,
    samples: Annotated[int, typer.Option(min=1, help="N: solutions sampled per problem.")] = 16,
    policy: Annotated[str, typer.Option(help="Policy model id or local path (`toy` for the toy policy).")] = "toy",
    temperature: Annotated[float, opt.TemperatureOption] = 0.8,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Longest solution in tokens.")] = 512,
    backend: BackendOpt = "transformers",
    prm_format: PrmFormatOpt = "auto",
    input_format: opt.FormatOpt = "auto",
    limit: opt.LimitOpt = None,
    seed: Annotated[int, typer.Option(help="Engine seed.")] = 0,
    force: EvalForceOpt = False,
    quiet: opt.QuietOpt = False,
) -> None:
    """Best-of-N reranking with a PRM against majority vote and pass@N."""
    from prmfactory.errors import UsageError
    from prmfactory.eval.best_of_n import evaluate_bon, markdown_table

    if (input is None) == (candidates is None):
        raise UsageError("give exactly one of --input PROBLEMS or --candidates FILE")
    problems = None
    if input is not None:
        from prmfactory.inputs import load_problems

        _check_format(input_format)
        problems, _ = load_problems(input, input_format, skip_invalid=False)
    result = evaluate_bon(prm, output, problems=problems, candidates=candidates, samples=samples, policy=policy,
                          temperature=temperature, max_tokens=max_new_tokens, backend=backend, limit=limit, seed=seed,
                          quiet=quiet, prm_format=prm_format, force=force)
    print(markdown_table(result), end="")
    print(f"results in {output}")


@app.command(rich_help_panel=opt.HELP_PANELS["serve"])
@handled
def serve(
    prm: Annotated[Path, typer.Option(help="A PRM folder (from `prmfactory train-prm`, or of --prm-format).", exists=True, file_okay=False)],
    host: Annotated[str, typer.Option(help="Interface to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    api_key: Annotated[Optional[str], typer.Option(envvar="PRMFACTORY_API_KEY", show_envvar=True, help="Require `Authorization: Bearer KEY` on every request.")] = None,
    aggregate: Annotated[str, typer.Option(help="Reward of /get_reward: min, last, prod or mean of the step scores.")] = "min",
    backend: BackendOpt = "transformers",
    prm_format: PrmFormatOpt = "auto",
    max_batch: Annotated[int, typer.Option(min=1, help="Most solutions scored in one model call.")] = 64,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body (MB); larger ones get 413.")] = 4.0,
    max_items: Annotated[int, typer.Option(min=1, help="Most solutions (or queries) in one request; more get 413.")] = 1024,
    max_steps: Annotated[int, typer.Option(min=1, help="Most steps in one solution; more get 422.")] = 512,
    threshold: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="A step scored below it is the first "
                                                   "error (first_error; reported by /v1/models). Default: the PRM's "
                                                   "calibrated threshold (eval processbench --threshold auto), else 0.5.")] = None,
    policy_template: Annotated[Optional[str], typer.Option(help="OpenRLHF /get_reward: the policy's tokenizer (name or "
                                                               "path) whose chat template wraps OpenRLHF's prompts; it "
                                                               "is stripped so the PRM sees the raw problem.")] = None,
    question_from: Annotated[str, typer.Option(help="OpenRLHF /get_reward: the problem is the `prompt` (template "
                                                    "stripped) or the `label` (a raw-question label column).")] = "prompt",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No request log (one line per request otherwise).")] = False,
) -> None:
    """Serve a PRM over HTTP for online RL: /v1/prm/score, OpenRLHF's /get_reward, /v1/models, /health."""
    import uvicorn

    from prmfactory.errors import UsageError
    from prmfactory.progress import console
    from prmfactory.prm import AGGREGATIONS, PRM
    from prmfactory.serve.app import create_app

    if aggregate not in AGGREGATIONS:
        raise UsageError(f"--aggregate: expected one of {', '.join(AGGREGATIONS)}, got {aggregate!r}")
    if api_key is not None and not api_key.strip():
        raise UsageError("--api-key: empty; give a key, or leave it unset for a loopback-only server")
    if not max_body_mb > 0:
        raise UsageError(f"--max-body-mb: must be above 0, got {max_body_mb}")
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        console.print(f"[yellow]warning:[/yellow] serving on {host} without --api-key: anyone who reaches it can use it")
    from prmfactory.rl import OpenRLHFQueries

    openrlhf = OpenRLHFQueries(policy_template, question_from)  # checks --question-from before the PRM loads
    loaded = PRM.from_pretrained(prm, backend=backend, format=prm_format)
    app_ = create_app(loaded, api_key=api_key, max_body_bytes=int(max_body_mb * 1e6),
                      max_batch=max_batch, reward_aggregate=aggregate, threshold=threshold, openrlhf=openrlhf,
                      max_items=max_items, max_steps=max_steps)
    where = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    console.print(f"serving {prm} ({loaded.format}, first-error threshold "
                  f"{loaded.threshold if threshold is None else threshold}) on {where}: POST /v1/prm/score, "
                  f"POST /get_reward, GET /v1/models, GET /health{' (bearer token required)' if api_key else ''}",
                  highlight=False, soft_wrap=True)
    uvicorn.run(app_, host=host, port=port, log_level="warning" if quiet else "info", access_log=not quiet)


@app.command(rich_help_panel=opt.HELP_PANELS["publish"])
@handled
def publish(
    run: opt.RunOpt,
    repo_id: Annotated[str, typer.Option(help="Hub dataset repo, ORG/NAME.")],
    private: Annotated[bool, typer.Option(help="Create the repo private.")] = False,
    revision: Annotated[Optional[str], typer.Option(help="Branch to push to.")] = None,
    create_pr: Annotated[bool, typer.Option(help="Open a pull request instead of pushing to the branch.")] = False,
    license: Annotated[str, typer.Option(help="License id for the card (e.g. apache-2.0, cc-by-4.0).")] = "unknown",
    dry_run: Annotated[Optional[Path], typer.Option(help="Write exactly what would be uploaded into this folder; upload nothing.")] = None,
) -> None:
    """Push a run's shards with a data card to the Hugging Face Hub (token from HF_TOKEN or `hf auth login`)."""
    import tempfile

    from prmfactory.hub import build_folder, upload

    from prmfactory.hub import check_repo_id

    check_repo_id(repo_id)
    source = _existing_run(run)
    if dry_run is not None:
        built = build_folder(source, dry_run, repo_id, license)
        print(json.dumps(built, indent=1))
        print(f"dataset folder written to {dry_run} (nothing uploaded)")
        return
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    with tempfile.TemporaryDirectory(prefix="prmfactory-publish-") as folder:
        build_folder(source, Path(folder) / "dataset", repo_id, license)
        try:
            result = upload(Path(folder) / "dataset", repo_id, private=private, revision=revision, create_pr=create_pr)
        except (HfHubHTTPError, LocalTokenNotFoundError) as exc:
            raise PrmfactoryError(f"publish to {repo_id} failed: {str(exc).splitlines()[0]}") from exc
    print(json.dumps(result, indent=1))
    print(f"published https://huggingface.co/datasets/{repo_id}")


@app.command(name="run", rich_help_panel=opt.HELP_PANELS["run"])
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
    prm_backend: Annotated[str, typer.Option(help="ProcessBench: the PRM scorer, transformers or vllm.")] = "transformers",
    dtype: PrmDtypeOpt = "float32",
) -> None:
    """Run the stages of a pipeline file in order on one run folder; a rerun continues where it stopped."""
    from prmfactory.errors import UsageError
    from prmfactory.pipeline import load_pipeline
    from prmfactory.pipeline import run_pipeline as run_stages
    from prmfactory.progress import console
    from prmfactory.stages import StageInput

    _check_format(input_format)
    if processbench is not None:
        from prmfactory.prm.scorers import scorer_factory

        kinds = {config.kind for name, config in load_pipeline(pipeline) if name == "train-prm"}
        if not kinds:
            raise UsageError(f"{pipeline}: --processbench evaluates the pipeline's PRM, but it has no train-prm stage")
        for kind in kinds:
            scorer_factory(kind, prm_backend, dtype)
    run_stages(pipeline, StageInput(input, input_format), output, force=force,
               on_stage=lambda name, report, folder: _print_report(folder, report))
    console.print(f"pipeline {pipeline} done; inspect with `prmfactory stats {output}`")
    if processbench is not None:
        from prmfactory.eval.processbench import evaluate_prm, markdown_table
        from prmfactory.train.stage import PIPELINE_PRM_FOLDER

        result = evaluate_prm(output / PIPELINE_PRM_FOLDER, processbench, output / "eval-processbench",
                              threshold=threshold, backend=prm_backend, dtype=dtype, force=True)  # the run's own
        print(markdown_table(result), end="")
        print(f"results in {output / 'eval-processbench'}")


@app.command(rich_help_panel=opt.HELP_PANELS["demo"])
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
                      on_stage=lambda name, stage_report, folder: _print_report(folder, stage_report))
    console.print_json(json.dumps(report["headline"]))
    for name, path in report["artefacts"].items():
        console.print(f"{name}: {path}")
    console.print(f"[bold]report:[/bold] {output / 'report.md'}")


@app.command(rich_help_panel=opt.HELP_PANELS["stats"])
@handled
def stats(run: opt.RunArg,
          as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
          check: Annotated[bool, typer.Option("--check", help="Re-hash every shard against the manifest, read it "
                                                             "against its schema and check its lineage.")] = False) -> None:
    """Counts per dataset and label distributions of a run folder (--check: verify the whole run)."""
    from rich.console import Console
    from rich.table import Table

    from prmfactory.runstats import check_run, run_stats

    if check:
        checked, problems = check_run(_existing_run(run))
        for problem in problems:
            print(problem)
        found = f"{len(problems)} fault{'s' if len(problems) > 1 else ''} found" if problems else "sound"
        print(f"{run}: {checked} shards checked: {found}")
        raise typer.Exit(1 if problems else 0)

    result = run_stats(_existing_run(run))
    if as_json:
        print(json.dumps(result, indent=1))
        return
    out = Console()
    table = Table(title=f"run {run}")
    for column in ("dataset", "shards", "rows", "questions"):
        table.add_column(column, justify="left" if column == "dataset" else "right")
    for name, entry in result["datasets"].items():
        table.add_row(name, str(entry["shards"]), str(entry["rows"]), str(entry["questions"]))
    out.print(table)
    dist = Table(title="distributions")
    for column in ("column", "value", "count"):
        dist.add_column(column, justify="right" if column == "count" else "left")
    for name, entry in result["datasets"].items():
        for column, counts in entry["distributions"].items():
            for value, count in counts.items():
                dist.add_row(f"{name}.{column}", value, str(count))
    out.print(dist)
    if "rejected_input_lines" in result:
        out.print(f"rejected input lines: {result['rejected_input_lines']} (see {run / 'rejects.jsonl'})")


@app.command(rich_help_panel=opt.HELP_PANELS["sql"])
@handled
def sql(run: opt.RunArg, query: Annotated[str, typer.Argument(help="SQL over views named after the datasets.")],
        output_format: Annotated[str, typer.Option("--format", help="table, csv or json")] = "table") -> None:
    """Run duckdb SQL over a run's shards (views: problems, nodes, questions, verdicts, judgements, steps, rejected)."""
    from prmfactory.runstats import run_sql

    table = run_sql(_existing_run(run), query)
    if output_format == "json":
        for row in table.to_pylist():
            print(json.dumps(row, default=str, ensure_ascii=False))
    elif output_format == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, sys.stdout.buffer)
    elif output_format == "table":
        from rich.console import Console
        from rich.table import Table

        view = Table()
        for name in table.column_names:
            view.add_column(name)
        for row in table.to_pylist():
            view.add_row(*(str(v) for v in row.values()))
        Console().print(view)
    else:
        from prmfactory.errors import UsageError

        raise UsageError(f"--format: expected table, csv or json, got {output_format!r}")


def _existing_run(path: Path | str):
    from prmfactory.errors import UsageError
    from prmfactory.store import Run

    run = Run(path)
    if not run.exists():
        raise UsageError(f"{path}: not a run folder (no manifest.json)")
    return run


@toy_app.command("problems")
@handled
def toy_problems(
    n: Annotated[int, typer.Option("--n", min=1, help="How many problems.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL file to write.")],
    split: Annotated[str, typer.Option(help="train or test (disjoint by construction).")] = "test",
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 0,
) -> None:
    """Write toy arithmetic problems as JSONL in the `mcts --input` format."""
    from prmfactory.errors import UsageError
    from prmfactory.fileio import atomic_write_text
    from prmfactory.toy.problems import generate, to_input_row

    if split not in ("train", "test"):
        raise UsageError(f"--split: expected train or test, got {split!r}")
    rows = [to_input_row(p) for p in generate(n, split, seed)]
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, "".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} {split} problems to {output}")


@toy_app.command("processbench")
@handled
def toy_processbench(
    n: Annotated[int, typer.Option("--n", min=1, help="How many solutions (one per problem).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL file of ProcessBench records to write.")],
    split: Annotated[str, typer.Option(help="Problems from the train or test split.")] = "test",
    policy: Annotated[str, typer.Option(help="Policy that writes the solutions.")] = "toy",
    temperature: Annotated[float, opt.TemperatureOption] = 1.0,
    seed: Annotated[int, typer.Option(help="Problem generator and engine seed.")] = 0,
    quiet: opt.QuietOpt = False,
) -> None:
    """Policy solutions to toy problems labelled by the oracle, as a ProcessBench split (id, problem, steps, label)."""
    from prmfactory.errors import UsageError
    from prmfactory.toy.bench import write_processbench

    if split not in ("train", "test"):
        raise UsageError(f"--split: expected train or test, got {split!r}")
    summary = write_processbench(output, n, split=split, policy=policy, temperature=temperature, seed=seed, quiet=quiet)
    print(f"wrote {summary['solutions']} solutions to {output} ({summary['with_error']} with an error, "
          f"{summary['all_right']} all right; final-answer accuracy {summary['final_answer_accuracy']})")


@toy_app.command("build")
@handled
def toy_build(
    retrain: Annotated[bool, typer.Option(help="Retrain the three models from the recipe (about 70 minutes, one core).")] = False,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Recipe YAML.", exists=True, dir_okay=False)] = None,
) -> None:
    """Print the local paths of the toy policy, judge and PRM base (rebuild them with --retrain)."""
    from prmfactory.config import build_config
    from prmfactory.errors import PrmfactoryError
    from prmfactory.resources import resource_dir
    from prmfactory.models import TOY_MODELS, TOY_MODELS_DIR

    if retrain:
        from prmfactory.toy.build import ToyBuildConfig, build

        recipe = config or resource_dir("pipelines") / "toy_build.yaml"
        report = build(build_config(ToyBuildConfig, "toy_build", recipe, {}), TOY_MODELS_DIR)
        print(json.dumps({k: v for k, v in report.items() if k != "config"}, indent=1))
    for name, path in TOY_MODELS.items():
        if not (path / "config.json").exists():
            raise PrmfactoryError(f"toy model {name!r} missing at {path}; run `prmfactory toy build --retrain`")
        print(f"{name}\t{path}")


@toy_app.command("check")
@handled
def toy_check(
    input: Annotated[Path, typer.Option("--input", "-i", help="JSONL of solutions: id, problem, steps.", exists=True, dir_okay=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL of {id, first_error}.")],
) -> None:
    """Run the ground-truth oracle over toy solutions: the first wrong step of each (-1 if none)."""
    from prmfactory.fileio import atomic_write_text
    from prmfactory.toy.oracle import check_file

    lines, problems = check_file(input)
    atomic_write_text(output, "".join(json.dumps(line) + "\n" for line in lines))
    print(f"checked {len(lines) - problems} solutions, {problems} not toy problems (see 'error'); wrote {output}")


@models_app.command("list")
@handled
def models_list() -> None:
    """Every model alias, where it lives, and the GGUF conversions in the cache ($PRMFACTORY_MODEL_CACHE)."""
    from rich.table import Table

    from prmfactory.models import model_cache_dir, model_table
    from prmfactory.progress import console

    table = Table("name", "kind", "source", "path", title=f"models (cache {model_cache_dir()})")
    for row in model_table():
        table.add_row(row["name"], row["kind"], row["source"], row["path"])
    console.print(table)


@models_app.command("prepare")
@handled
def models_prepare(name: Annotated[str, typer.Argument(help="An alias (smollm2, toy, ...) or a .gguf file.")]) -> None:
    """Convert a GGUF alias or file into the cache once (a lock guards concurrent runs) and print its folder."""
    from prmfactory.models import GGUF_MODELS, TOY_MODELS, require_model

    if name not in TOY_MODELS and name not in GGUF_MODELS and not name.lower().endswith(".gguf"):
        from prmfactory.errors import UsageError

        raise UsageError(f"models prepare: {name!r} is not an alias ({', '.join([*TOY_MODELS, *GGUF_MODELS])}) or a "
                         ".gguf file; a model folder or Hub id needs no preparing (`prmfactory models list`)")
    print(require_model(name))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
