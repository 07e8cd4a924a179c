"""mcts questions/s in one process and over 1 and 2 Ray workers, and the driver's cost per question.

Each configuration runs the real command (``prmfactory mcts --policy toy``, the demo's engine
settings) on the same toy problems into a fresh run folder:

* ``in-process``: today's path, one vLLM CPU engine using every core;
* ``ray-1`` / ``ray-2``: ``--ray-address local --workers N``, one engine per worker, each bound
  to its own core(s) (``--cpus-per-worker``).

Reported per configuration: the stage's wall time (Ray start-up and engine start-up included),
the *working* time (from the last worker being ready to the end: engines up, questions flowing)
and questions/s over it, generated tokens/s, and the driver's commit time and CPU time per
committed question — the cost of "only the driver commits". On a 2-core machine two workers
share the cores that one in-process engine already uses, so the ratio is bounded by the cores,
not by the pool; the figure to carry to a cluster is the driver's cost per question.

Usage: python benchmarks/ray_scaling.py [--questions 400] [--configs in-process,ray-1,ray-2]
Results: docs/benchmarks/ray_scaling.json (and the table in BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from prmfactory.cli import main; main()"]
ENGINE = "engine: {dtype: float32, max_model_len: 512, block_size: 32, kv_cache_gib: 0.5}\n"


def run_config(name: str, problems: Path, folder: Path, args) -> dict:
    config = folder / "engine.yaml"
    config.write_text(ENGINE)
    command = CLI + ["mcts", "--input", str(problems), "--output", str(folder / name), "--policy", "toy",
                     "--rollouts", str(args.rollouts), "--budget", str(args.budget), "--max-new-tokens", "256",
                     "--temperature", "0.8", "--config", str(config), "--quiet"]
    if name.startswith("ray-"):
        workers = int(name.split("-")[1])
        command += ["--ray-address", "local", "--workers", str(workers),
                    "--cpus-per-worker", str(max(1, (os.cpu_count() or 2) // workers))]
    subprocess.run(command, check=True, capture_output=True, text=True)
    report = json.loads((folder / name / "reports" / "mcts.json").read_text())
    questions = report["rows_in"]
    cluster = report["details"].get("cluster")
    result = {"questions": questions, "stage_seconds": report["seconds"],
              "generated_tokens": report["engine"].get("generated_tokens")}
    if cluster:
        ready = max(s["ready_after_s"] for s in cluster["worker_starts"])
        working = cluster["wall_seconds"] - ready
        result.update(workers=cluster["workers"], engines_ready_after_s=ready, working_seconds=round(working, 2),
                      driver_commit_ms_per_question=round(1000 * cluster["driver_commit_seconds"] / questions, 3),
                      driver_cpu_ms_per_question=round(1000 * cluster["driver_cpu_seconds"] / questions, 3),
                      workers_lost=report["counts"].get("workers_lost", 0))
    else:
        working = report["engine"]["wall_seconds"]  # the engine's own life: start-up excluded
        result.update(workers=0, working_seconds=round(working, 2))
    result["questions_per_second"] = round(questions / working, 2)
    result["tokens_per_second"] = round(result["generated_tokens"] / working, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=400)
    parser.add_argument("--rollouts", type=int, default=4)
    parser.add_argument("--budget", type=int, default=12)
    parser.add_argument("--configs", default="in-process,ray-1,ray-2")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks" / "ray_scaling.json")
    args = parser.parse_args()
    results: dict = {"questions": args.questions, "rollouts": args.rollouts, "budget": args.budget,
                     "cpu_count": os.cpu_count(), "configs": {}}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        problems = folder / "problems.jsonl"
        subprocess.run(CLI + ["toy", "problems", "--n", str(args.questions), "--output", str(problems)], check=True,
                       capture_output=True)
        for name in args.configs.split(","):
            results["configs"][name] = run_config(name, problems, folder, args)
            print(name, json.dumps(results["configs"][name]), flush=True)
    configs = results["configs"]
    if "ray-1" in configs and "ray-2" in configs:
        results["ray_2_over_ray_1"] = round(configs["ray-2"]["questions_per_second"]
                                            / configs["ray-1"]["questions_per_second"], 2)
    if "in-process" in configs and "ray-2" in configs:
        results["ray_2_over_in_process"] = round(configs["ray-2"]["questions_per_second"]
                                                 / configs["in-process"]["questions_per_second"], 2)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "configs"}))


if __name__ == "__main__":
    main()
