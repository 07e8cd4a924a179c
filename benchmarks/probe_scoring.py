"""How fast a PRM scores ProcessBench: solutions, tokens and seconds per split, and the unscored share.

Times the in-process scorer (model load excluded, reported apart) on the first ``--limit`` records of
each split, so two checkouts can be compared on the same records: run this file from each with
``PYTHONPATH=<checkout>`` (the package imported is the first on the path) and compare the
``tokens/s`` lines. With ``--output`` the numbers are also written as JSON.

    .venv/bin/python benchmarks/probe_scoring.py --prm runs/real-text/prm \
        --data ../shared/data/processbench --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prm", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="ProcessBench folder (one JSON file per split).")
    parser.add_argument("--splits", default="gsm8k,math,olympiadbench,omnimath")
    parser.add_argument("--limit", type=int, default=0, help="Records per split (0: all).")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--floor", action="store_true",
                        help="Also time the base model's body alone on the same batches: what any head pays.")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    import prmfactory
    from prmfactory.eval.processbench import load_splits
    from prmfactory.prm import PRM, score_with_progress

    started = time.monotonic()
    prm = PRM.from_pretrained(args.prm, dtype=args.dtype, batch_size=args.batch_size)
    load_s = time.monotonic() - started
    splits = {name: records for name, records in load_splits(args.data).items() if name in args.splits.split(",")}
    result = {"package": str(Path(prmfactory.__file__).parent), "prm": str(args.prm), "dtype": args.dtype,
              "batch_size": args.batch_size, "load_s": round(load_s, 1), "splits": {}}
    print(f"package {result['package']}; PRM loaded in {load_s:.1f} s")
    for name, records in splits.items():
        records = records[:args.limit] if args.limit else records
        items = [(r["problem"], r["steps"]) for r in records]
        encoded = [prm.scorer.encoder.encode(*item) for item in items]
        tokens = sum(len(e.input_ids) for e in encoded)
        started = time.monotonic()
        scores = score_with_progress(prm, items, quiet=True)
        seconds = time.monotonic() - started
        unscored = sum(map(math.isnan, (s for row in scores for s in row)))
        steps = sum(len(row) for row in scores)
        result["splits"][name] = {"solutions": len(items), "tokens": tokens, "seconds": round(seconds, 1),
                                  "tokens_per_s": round(tokens / seconds), "steps": steps, "unscored_steps": unscored}
        print(f"{name}: {len(items)} solutions, {tokens:,} tokens in {seconds:.1f} s = {tokens / seconds:,.0f} tokens/s; "
              f"{unscored} of {steps} steps unscored ({unscored / max(steps, 1):.1%})", flush=True)
        if args.floor:
            body_s = _body_seconds(prm, encoded, args.batch_size)
            result["splits"][name]["body_only_seconds"] = round(body_s, 1)
            print(f"{name}: the base model's body alone on the same batches: {body_s:.1f} s = "
                  f"{tokens / body_s:,.0f} tokens/s", flush=True)
    total = {k: sum(s[k] for s in result["splits"].values()) for k in ("solutions", "tokens", "seconds", "steps",
                                                                       "unscored_steps")}
    result["total"] = {**total, "tokens_per_s": round(total["tokens"] / total["seconds"])}
    result["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    print(f"all: {total['solutions']} solutions in {total['seconds']:.0f} s ({total['seconds'] / 60:.1f} min), "
          f"{result['total']['tokens_per_s']:,} tokens/s; peak RSS {result['peak_rss_gb']} GB")
    if args.output:
        args.output.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


def _body_seconds(prm, encoded, batch_size: int) -> float:
    """Seconds the base model's transformer body (no head, no LM head) takes on the scorer's own batches
    (:func:`~prmfactory.prm.scoring.score_encoded`'s length-sorted batching, with nothing read)."""
    from types import SimpleNamespace

    from prmfactory.prm.scoring import score_encoded

    scorer = prm.scorer
    body = getattr(scorer.model, "lm", scorer.model).base_model  # the probe wraps the causal LM

    def run_body(**batch):
        body(**batch)
        return SimpleNamespace(logits=[None] * len(batch["input_ids"]))

    started = time.monotonic()
    score_encoded(run_body, encoded, scorer.pad_id, batch_size, read=lambda logits, item: [])
    return time.monotonic() - started


if __name__ == "__main__":
    main()
