"""PRM training speed and memory on a real-size base: full fine-tuning against LoRA, fp32 against bf16.

Each arm trains a discriminative PRM (train-prm, one epoch) on the same stepwise rows in its own
process, and reports training tokens per second (the rows' tokens as the trainer encodes them,
over train-prm's own training time, model load included) and the process's peak RSS.

Rows: toy solutions with one injected error, labelled by the oracle (conftest's recipe), written
as one step per line, so they are real text for the SmolLM2 tokenizer.

Usage: python benchmarks/prm_training_speed.py [--base smollm2] [--rows 64] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ARMS = {
    "full fp32": {"lora_r": 0, "training_args": {}},
    "full bf16": {"lora_r": 0, "training_args": {"bf16": True, "use_cpu": True}},
    "LoRA r=16 bf16": {"lora_r": 16, "lora_alpha": 32, "training_args": {"bf16": True, "use_cpu": True}},
}


def write_rows(path: Path, n: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from prmfactory.toy.critique import corrupt
    from prmfactory.toy.oracle import first_error
    from prmfactory.toy.problems import generate

    rng, rows = random.Random(0), []
    for problem in generate(n, "train", 0):
        _, steps = corrupt(problem, rng)
        error = first_error(problem, steps)
        rows.append({"prompt": problem.text, "completions": steps,
                     "labels": [error == -1 or i < error for i in range(len(steps))]})
    pq.write_table(pa.Table.from_pylist(rows), path)


def train_arm(args) -> None:
    """Child process: one arm; prints its JSON result."""
    from transformers import AutoTokenizer

    from prmfactory.models import resolve_model
    from prmfactory.stages import StageInput, execute
    from prmfactory.store import Run
    from prmfactory.train.config import TrainPrmConfig
    from prmfactory.prm.encoding import StepEncoder

    import pyarrow.parquet as pq

    config = TrainPrmConfig(base=args.base, segmentation="line", epochs=1, batch_size=args.batch_size,
                            max_length=args.max_length, learning_rate=1e-4, quiet=True, **ARMS[args.arm])
    encoder = StepEncoder(AutoTokenizer.from_pretrained(resolve_model(args.base)), "\n", args.max_length)
    tokens = sum(len(encoder.encode(row["prompt"], row["completions"]).input_ids)
                 for row in pq.read_table(args.data).to_pylist())
    report = execute("train-prm", Run(Path(args.output)), config, source=StageInput(Path(args.data))).details
    print(json.dumps({"arm": args.arm, "tokens": tokens, "seconds": report["seconds"],
                      "tokens_per_second": round(tokens / report["seconds"], 1), "steps": report["steps"],
                      "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="smollm2")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        train_arm(args)
        return
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "rows.parquet"
        write_rows(data, args.rows)
        for index, arm in enumerate(ARMS):
            child = subprocess.run([sys.executable, __file__, "--arm", arm, "--data", str(data), "--output",
                                    str(Path(scratch) / f"prm-{index}"), "--base", args.base, "--batch-size",
                                    str(args.batch_size), "--max-length", str(args.max_length)],
                                   capture_output=True, text=True, check=True)
            results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    print("| arm | tokens | seconds | tokens/s | optimizer steps | peak RSS (GB) |\n|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['arm']} | {r['tokens']} | {r['seconds']} | {r['tokens_per_second']} | {r['steps']} | {r['peak_rss_gb']} |")


if __name__ == "__main__":
    main()
