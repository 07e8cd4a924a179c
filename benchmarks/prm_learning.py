"""What limits the toy PRM: its labels, the amount of labelled data, or the model.

From one labelled run (toy *train* problems through mcts → verify → filter, e.g. the demo's
pipeline), PRMs are trained on growing subsets of its rows — with the factory's own labels and
with the *oracle's* labels for the very same solutions (the ceiling any factory label can reach
with that model and data) — and each is measured the way the demo measures:

* the toy ProcessBench protocol on held-out *test* solutions, at 0.5 and at the threshold chosen
  on a dev set of solutions to *train* problems (never on the test set);
* Best-of-N (min over steps) on held-out test problems against majority@N, the same candidates
  for every PRM; and the same on *train* problems the PRMs never saw (``best_of_n_dev``), the
  figure to choose a recipe by.

The oracle is used only to relabel the training rows of the ceiling arm and to label the
evaluation sets; it never feeds a factory stage.

Usage: python benchmarks/prm_learning.py --run RUN --output OUT [--sizes 300,1000,3000]
       [--labels factory,oracle] [--base toy] [--epochs 3] [--learning-rate 1e-3]
       [--test-solutions 400] [--bon-problems 100] [--samples 8]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

CLI = [sys.executable, "-c", "from prmfactory.cli import main; main()"]


def oracle_rows(rows: list[dict]) -> list[dict]:
    """The same solutions, labelled by the oracle and cut after its first error (as the filter cuts)."""
    from prmfactory.toy.oracle import first_error
    from prmfactory.toy.problems import parse_problem

    relabelled = []
    for row in rows:
        error = first_error(parse_problem(row["prompt"]), row["completions"])
        n = len(row["completions"]) if error == -1 else error + 1
        labels = [i != error for i in range(n)]
        relabelled.append({**row, "completions": row["completions"][:n], "labels": labels,
                           "soft_labels": [float(label) for label in labels]})
    return relabelled


def subset(rows: list[dict], size: int, seed: int) -> list[dict]:
    """``size`` rows drawn by whole questions (so a smaller subset has fewer problems, as a smaller run would)."""
    questions = sorted({r["question_id"] for r in rows})
    random.Random(seed).shuffle(questions)
    chosen: list[dict] = []
    by_question: dict[str, list[dict]] = {}
    for row in rows:
        by_question.setdefault(row["question_id"], []).append(row)
    for question in questions:
        if len(chosen) >= size:
            break
        chosen += by_question[question]
    return chosen[:size]


def write_rows(rows: list[dict], folder: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    columns = ("prompt", "completions", "labels", "soft_labels", "question_id", "segmentation")
    pq.write_table(pa.table({c: [r[c] for r in rows] for c in columns}), folder / "rows.parquet")


def evaluate(prm: Path, out: Path, bench: Path, dev: Path, candidates: dict[str, Path]) -> dict:
    from prmfactory.eval.best_of_n import evaluate_bon
    from prmfactory.eval.processbench import calibrate_threshold, evaluate_prm, load_splits, metrics, read_predictions

    test = evaluate_prm(prm, bench.parent, out / "pb-test", quiet=True, force=True)
    evaluate_prm(prm, dev.parent, out / "pb-dev", quiet=True, force=True)
    threshold, dev_f1 = calibrate_threshold(load_splits(dev.parent), out / "pb-dev" / "predictions.jsonl")
    splits = load_splits(bench.parent)
    calibrated = metrics(splits, read_predictions(out / "pb-test" / "predictions.jsonl", splits, threshold))
    bon = {name: evaluate_bon(prm, out / f"bon-{name}", candidates=path, quiet=True, force=True) for name, path in candidates.items()}
    n = bon["test"]["samples"]
    split = next(iter(test["splits"]))
    return {"f1_at_0.5": test["splits"][split]["f1"], "dev_threshold": threshold, "dev_f1": dev_f1,
            "f1_dev_threshold": calibrated["splits"][split]["f1"],
            "acc_err": calibrated["splits"][split]["acc_err"], "acc_cor": calibrated["splits"][split]["acc_cor"],
            "best_of_n": {k: v[n] for k, v in bon["test"]["curves"].items()},
            "best_of_n_dev": {k: v[n] for k, v in bon["dev"]["curves"].items()}}


def main(args) -> dict:
    from prmfactory.store import Run
    from prmfactory.toy.bench import write_processbench
    from prmfactory.toy.problems import generate, to_input_row

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    rows = Run(Path(args.run)).read("steps").to_pylist()
    bench, dev = out / "processbench" / "toy.jsonl", out / "processbench-dev" / "toy-dev.jsonl"
    if not bench.exists():
        write_processbench(bench, args.test_solutions, seed=11, quiet=True)
    if not dev.exists():
        write_processbench(dev, args.test_solutions, split="train", seed=13, quiet=True)
    # BoN candidates: test problems (reported) and train problems of another seed (dev, to choose by)
    candidates = {name: out / f"bon-candidates-{name}" / "candidates.jsonl" for name in ("test", "dev")}
    bon_problems = {"test": ("test", 12), "dev": ("train", 14)}
    results_file = out / "result.json"
    result = json.loads(results_file.read_text()) if results_file.exists() else {"run": args.run, "arms": {}}
    sizes = [min(int(s), len(rows)) for s in args.sizes.split(",")]
    for size in sizes:
        chosen = subset(rows, size, args.seed)
        for labels in args.labels.split(","):
            name = f"{labels}-{size}-{Path(args.base).name}-e{args.epochs}-lr{args.learning_rate}"
            if name in result["arms"]:
                continue
            arm = out / name
            write_rows(oracle_rows(chosen) if labels == "oracle" else chosen, arm / "data")
            started = time.monotonic()
            subprocess.run(CLI + ["train-prm", "--data", str(arm / "data"), "--output", str(arm / "prm"),
                                  "--base", args.base, "--epochs", str(args.epochs),
                                  "--learning-rate", str(args.learning_rate), "--threads", str(args.threads),
                                  "--quiet", "--force", *sum((["--set", s] for s in args.set), [])], check=True)
            seconds = round(time.monotonic() - started, 1)
            for split, path in candidates.items():
                if not path.exists():
                    from prmfactory.eval.best_of_n import evaluate_bon

                    problems = [{**r, "question_id": r["id"]}
                                for r in map(to_input_row, generate(args.bon_problems, *bon_problems[split]))]
                    evaluate_bon(arm / "prm", path.parent, problems=problems, samples=args.samples, temperature=0.8,
                                 max_tokens=300, quiet=True, force=True)
            steps = sum(len(r["completions"]) for r in chosen)
            result["arms"][name] = {"labels": labels, "rows": len(chosen), "steps": steps,
                                    "questions": len({r["question_id"] for r in chosen}), "base": args.base,
                                    "epochs": args.epochs, "learning_rate": args.learning_rate, "train_seconds": seconds,
                                    **evaluate(arm / "prm", arm, bench, dev, candidates)}
            print(name, json.dumps(result["arms"][name]), flush=True)
            results_file.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="A labelled run folder (with steps/).")
    parser.add_argument("--output", default="runs/prm-learning")
    parser.add_argument("--sizes", default="300,1000,3000", help="Training rows per arm, comma-separated.")
    parser.add_argument("--labels", default="factory,oracle")
    parser.add_argument("--base", default="toy")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], help="Further train-prm KEY=VALUE settings.")
    parser.add_argument("--seed", type=int, default=0, help="Which questions make up each subset.")
    parser.add_argument("--test-solutions", type=int, default=400)
    parser.add_argument("--bon-problems", type=int, default=100)
    parser.add_argument("--samples", type=int, default=8)
    main(parser.parse_args())
