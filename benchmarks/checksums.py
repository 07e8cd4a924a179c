"""What checking every shard against its sha256 costs a stage that reads a run (issue: checksums are checked).

Builds a run of about ``--gib`` GiB (``nodes`` shards whose rollouts are random text, so Parquet
cannot compress them away), then times, each in a fresh process (the check runs once per process
per shard): reading every shard with the check (the default) and without it
(``PRMFACTORY_NO_VERIFY=1``, the ``--no-verify`` escape hatch), and ``prmfactory stats --check``
(which always re-hashes). The ratio is the figure that matters; the page cache is warmed first
so both read from memory, the case where hashing is most visible.

Usage: python benchmarks/checksums.py --output /tmp/checksum-run [--gib 1]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import string
import subprocess
import sys
import time
from pathlib import Path

from prmfactory.store import Run

READ = "import sys; from prmfactory.store import Run; Run(sys.argv[1]).read('nodes')"


def build(root: Path, gib: float) -> dict:
    run = Run(root)
    if run.exists():
        return {"bytes": sum((root / s["file"]).stat().st_size for s in run.shards("nodes"))}
    rng = random.Random(0)
    alphabet = string.ascii_letters + string.digits + " +-=."
    block = "".join(rng.choice(alphabet) for _ in range(1 << 20))
    shard_bytes, written, index = 128 << 20, 0, 0
    with run.writing():
        while written < gib * (1 << 30):
            nodes = []
            for n in range(shard_bytes // (32 << 10)):
                start = rng.randrange(len(block) - (32 << 10))
                nodes.append({"question_id": f"q{index}", "node_id": str(n), "parent_id": None, "depth": 1,
                              "steps": ["s"], "mc_value": 0.5, "num_rollouts": 1, "num_correct": 0, "visits": 0,
                              "complete": True, "strategy": "mc", "segmentation": "blank_line",
                              "rollouts": [{"text": block[start:start + (32 << 10)], "answer": None,
                                            "correct": False, "num_tokens": 1}]})
            run.commit({"nodes": nodes})
            written = sum((root / s["file"]).stat().st_size for s in run.shards("nodes"))
            index += 1
    return {"bytes": written}


def timed(command: list[str], env: dict[str, str], repeats: int) -> float:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, check=True, env=env, capture_output=True)
        seconds.append(time.perf_counter() - started)
    return round(min(seconds), 2)


def main(args) -> dict:
    root = Path(args.output)
    size = build(root, args.gib)
    shards = [root / s["file"] for s in Run(root).shards("nodes")]
    for path in shards:  # warm the page cache
        path.read_bytes()
    env = dict(os.environ)
    env.pop("PRMFACTORY_NO_VERIFY", None)
    baseline = timed([sys.executable, "-c", "import prmfactory.store"], env, args.repeats)
    checked = timed([sys.executable, "-c", READ, str(root)], env, args.repeats)
    unchecked = timed([sys.executable, "-c", READ, str(root)], {**env, "PRMFACTORY_NO_VERIFY": "1"}, args.repeats)
    check = timed([sys.executable, "-c", "from prmfactory.cli import main; main()", "stats", str(root), "--check"],
                  env, args.repeats)
    return {"gib": round(size["bytes"] / (1 << 30), 3), "shards": len(shards), "import_seconds": baseline,
            "read_checked_seconds": checked, "read_unchecked_seconds": unchecked,
            "check_overhead_seconds": round(checked - unchecked, 2),
            "checked_over_unchecked": round((checked - baseline) / max(unchecked - baseline, 1e-9), 2),
            "stats_check_seconds": check}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="/tmp/checksum-run")
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    print(json.dumps(main(parser.parse_args()), indent=1))
