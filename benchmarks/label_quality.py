"""Accuracy of the factory's step labels against the toy oracle, for each label rule.

Runs the real stages on toy test problems — mcts (toy policy, in-process vLLM), verify, judge
(toy judge) — then, for each rule, the filter with its default SQL filters, and scores every
produced row against the oracle on the steps it keeps: the row's predicted first error is its
first False label (−1 if none), the truth is the oracle's first wrong step among those steps.
ProcessBench-style: accuracy on rows with an error, on rows without, and their harmonic mean.
Also the keep-rate (the share of complete solutions whose labels reach the training rows: a
copy that dedupe drops counts as kept), the distinct rate (rows out / complete solutions) and
labels per 1,000 generated tokens (policy and judge tokens together).

Usage: python benchmarks/label_quality.py --output runs/label-quality [--problems 64]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from typing import get_args

from prmfactory.demo import rule_accuracy
from prmfactory.filter.config import FilterConfig
from prmfactory.store import Run

RULES = get_args(FilterConfig.model_fields["rule"].annotation)  # every rule, the judge's too

CLI = [sys.executable, "-c", "from prmfactory.cli import main; main()"]


def stage(*args: str) -> None:
    subprocess.run(CLI + list(args), check=True)


def score_rule(run_dir: Path, rule: str) -> dict:
    return rule_accuracy(Run(run_dir), rule, run_dir.parent / f"{run_dir.name}-{rule}")


def main(args) -> dict:
    out = Path(args.output)
    problems = out.parent / f"{out.name}-problems.jsonl"
    stage("toy", "problems", "--n", str(args.problems), "--split", "test", "--seed", "7", "--output", str(problems))
    stage("mcts", "--input", str(problems), "--output", str(out), "--config", "pipelines/toy.yaml", "--quiet")
    stage("verify", "--run", str(out), "--quiet")
    stage("judge", "--run", str(out), "--votes", str(args.votes), "--config", "pipelines/toy.yaml", "--quiet")
    run = Run(out)
    tokens = sum(run.read("questions").column("generated_tokens").to_pylist())
    tokens += (run.read_report("judge") or {}).get("engine", {}).get("generated_tokens", 0)
    result = {"problems": args.problems, "generated_tokens": tokens, "rules": {}}
    for rule in RULES:
        scored = score_rule(out, rule)
        scored["labels_per_1k_tokens"] = round(1000 * scored["labels"] / max(tokens, 1), 2)
        result["rules"][rule] = scored
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="runs/label-quality")
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--votes", type=int, default=3)
    print(json.dumps(main(parser.parse_args()), indent=1))
