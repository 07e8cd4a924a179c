"""PRMs trained on the factory's own labels, scored against the toy oracle.

1. Label: toy *train* problems through the real stages — mcts (toy policy, in-process vLLM),
   verify, judge (toy judge) — and the filter with ``--rule RULE``.
2. Train: a discriminative PRM with hard labels, one with soft labels (the MC values), and a
   generative (critique) PRM, all from the toy policy.
3. ProcessBench protocol on held-out *test* problems: one policy solution each (T=1.0), labelled
   by the oracle (``prmfactory toy processbench``).
4. Best-of-N on other test problems: N policy samples each, reranked by every PRM (min / last /
   prod / mean) against majority@N and pass@N; the same candidates for every PRM.

Usage: python benchmarks/prm_quality.py --output runs/prm-quality [--train-problems 300]
       [--test-solutions 500] [--bon-problems 100] [--samples 16] [--generative-bon-problems 40]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-c", "from prmfactory.cli import main; main()"]
PRMS = {"discriminative-hard": ["--kind", "discriminative", "--hard-labels"],
        "discriminative-soft": ["--kind", "discriminative", "--soft-labels"],
        "generative": ["--kind", "generative"]}


def stage(*args: str) -> None:
    subprocess.run(CLI + [str(a) for a in args], check=True)


def main(args) -> dict:
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    run = out / "labels"
    stage("toy", "problems", "--n", args.train_problems, "--split", "train", "--seed", 3, "--output", out / "train.jsonl")
    stage("mcts", "--input", out / "train.jsonl", "--output", run, "--config", "pipelines/toy.yaml", "--quiet")
    stage("verify", "--run", run, "--quiet")
    stage("judge", "--run", run, "--config", "pipelines/toy.yaml", "--quiet")
    stage("filter", "--run", run, "--rule", args.rule, "--quiet", "--force")
    stage("toy", "processbench", "--n", args.test_solutions, "--seed", 11, "--output", out / "processbench" / "toy.jsonl",
          "--quiet")
    stage("toy", "problems", "--n", args.bon_problems, "--split", "test", "--seed", 12, "--output", out / "bon.jsonl")
    result: dict = {"rule": args.rule, "train_problems": args.train_problems, "prms": {}}
    candidates = None
    for name, flags in PRMS.items():
        prm = out / name
        stage("train-prm", "--data", run, "--output", prm, *flags, "--threads", 1, "--quiet",
              *(["--learning-rate", 1e-3] if name == "generative" else []))
        stage("eval", "processbench", "--prm", prm, "--data", out / "processbench", "--output", out / f"{name}-pb", "-q")
        bon_output = out / f"{name}-bon"
        source = ["--candidates", candidates] if candidates else ["--input", out / "bon.jsonl", "--samples", args.samples]
        limit = ["--limit", args.generative_bon_problems] if name == "generative" else []
        stage("eval", "bon", "--prm", prm, "--output", bon_output, *source, *limit, "-q")
        candidates = candidates or bon_output / "candidates.jsonl"
        meta = json.loads((prm / "prm.json").read_text())
        result["prms"][name] = {"training": meta["training"],
                                "processbench": json.loads((out / f"{name}-pb" / "metrics.json").read_text()),
                                "bon": json.loads((bon_output / "bon.json").read_text())}
    (out / "result.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="runs/prm-quality")
    parser.add_argument("--rule", default="mc")
    parser.add_argument("--train-problems", type=int, default=300)
    parser.add_argument("--test-solutions", type=int, default=500)
    parser.add_argument("--bon-problems", type=int, default=100)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--generative-bon-problems", type=int, default=40)
    print(json.dumps(main(parser.parse_args()), indent=1))
