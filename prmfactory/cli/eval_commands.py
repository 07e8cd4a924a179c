"""``prmfactory eval``: ProcessBench, PRMBench and Best-of-N, each one call of :mod:`prmfactory.eval`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from prmfactory.cli import options as opt
from prmfactory.cli.typer_app import command, eval_app, handled


@command(eval_app, "processbench")
@handled
def eval_processbench(
    data: Annotated[Path, typer.Option(help="ProcessBench file or folder (one split per file).", exists=True)],
    output: opt.EvalOutputOpt,
    prm: opt.PrmOpt = None,
    predictions: Annotated[Optional[Path], typer.Option(help="JSONL of {id, step_scores} or {id, prediction}.", exists=True, dir_okay=False)] = None,
    threshold: Annotated[str, typer.Option(help="A step scored below it is the predicted first error: a number in "
                                                "[0, 1], or `auto` to choose it on --calibrate-on.")] = "0.5",
    calibrate_on: Annotated[Optional[str], typer.Option(help="With --threshold auto: the split (e.g. gsm8k) the "
                                                             "threshold is chosen on; the others are reported with it "
                                                             "and --prm keeps it for serve and RL.")] = None,
    backend: opt.BackendOpt = "transformers",
    prm_format: opt.PrmFormatOpt = "auto",
    dtype: opt.PrmDtypeOpt = "float32",
    on_too_long: Annotated[Literal["truncate", "skip", "error"], typer.Option(help="A solution longer than the PRM's context: truncate (score the "
                                                  "steps that fit; the rest are never the first error), skip (leave "
                                                  "it out of the metrics) or error. What was not scored is always "
                                                  "printed and written to metrics.json / metrics.md.")] = "truncate",
    force: opt.EvalForceOpt = False,
    quiet: opt.QuietOpt = False,
) -> None:
    """The ProcessBench protocol: per split accuracy on erroneous and correct samples, F1, average F1."""
    from prmfactory.eval.processbench import (calibrated_metrics, evaluate_prm, load_splits, markdown_table, metrics,
                                              parse_threshold, read_predictions, write_results)
    from prmfactory.prm.public import OWN_FORMAT

    opt.exactly_one(prm="--prm DIR", predictions="--predictions FILE", given={"prm": prm, "predictions": predictions})
    fixed = parse_threshold(threshold, calibrate_on)
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


@command(eval_app, "prmbench")
@handled
def eval_prmbench(
    data: Annotated[list[Path], typer.Option(help="PRMBench JSONL file or folder of them (repeatable).", exists=True)],
    output: opt.EvalOutputOpt,
    prm: opt.PrmOpt = None,
    predictions: Annotated[Optional[Path], typer.Option(help="JSONL of {idx, step_scores} or {idx, step_labels}.", exists=True, dir_okay=False)] = None,
    threshold: Annotated[float, typer.Option(min=0.0, max=1.0, help="A step scored above it is valid (PRMBench: 0.5).")] = 0.5,
    backend: opt.BackendOpt = "transformers",
    prm_format: opt.PrmFormatOpt = "auto",
    dtype: opt.PrmDtypeOpt = "float32",
    force: opt.EvalForceOpt = False,
    quiet: opt.QuietOpt = False,
) -> None:
    """The PRMBench protocol: PRMScore (half F1 on valid steps, half on erroneous ones) per error category."""
    from prmfactory.eval.prmbench import evaluate, markdown_table

    opt.exactly_one(prm="--prm DIR", predictions="--predictions FILE", given={"prm": prm, "predictions": predictions})
    result = evaluate(data, output, prm_path=prm, predictions=predictions, threshold=threshold, backend=backend,
                      dtype=dtype, prm_format=prm_format, quiet=quiet, force=force)
    print(markdown_table(result), end="")
    print(f"results in {output}")


@command(eval_app, "bon")
@handled
def eval_bon(
    prm: opt.PrmRequiredOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for bon.json, bon.md, bon.png and candidates.jsonl.")],
    input: Annotated[Optional[Path], typer.Option("--input", "-i", help="Problems JSONL (with reference answers).", exists=True, dir_okay=False)] = None,
    candidates: Annotated[Optional[Path], typer.Option(help="candidates.jsonl of an earlier bon run: rerank it instead of sampling.", exists=True, dir_okay=False)] = None,
    samples: Annotated[int, typer.Option(min=1, help="N: solutions sampled per problem.")] = 16,
    policy: Annotated[str, typer.Option(help="Policy model id or local path (`toy` for the toy policy).")] = "toy",
    temperature: Annotated[float, opt.TemperatureOption] = 0.8,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Longest solution in tokens.")] = 512,
    backend: opt.BackendOpt = "transformers",
    prm_format: opt.PrmFormatOpt = "auto",
    input_format: opt.FormatOpt = "auto",
    limit: opt.LimitOpt = None,
    seed: opt.SeedOpt = 0,
    force: opt.EvalForceOpt = False,
    quiet: opt.QuietOpt = False,
) -> None:
    """Best-of-N reranking with a PRM against majority vote and pass@N."""
    from prmfactory.eval.best_of_n import evaluate_bon, markdown_table

    opt.exactly_one(input="--input PROBLEMS", candidates="--candidates FILE",
                    given={"input": input, "candidates": candidates})
    problems = None
    if input is not None:
        from prmfactory.inputs import load_problems

        problems, _ = load_problems(input, input_format, skip_invalid=False)
    result = evaluate_bon(prm, output, problems=problems, candidates=candidates, samples=samples, policy=policy,
                          temperature=temperature, max_tokens=max_new_tokens, backend=backend, limit=limit, seed=seed,
                          quiet=quiet, prm_format=prm_format, force=force)
    print(markdown_table(result), end="")
    print(f"results in {output}")
