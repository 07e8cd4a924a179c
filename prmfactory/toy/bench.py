"""Toy ProcessBench sets: policy solutions to toy problems, labelled by the oracle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_processbench(output: Path, n: int, *, split: str = "test", policy: str = "toy", temperature: float = 1.0,
                       seed: int = 0, quiet: bool = False) -> dict[str, Any]:
    """One policy solution for each of ``n`` toy problems as ProcessBench records (id, problem, steps, label)."""
    from prmfactory.eval.sampling import sample_candidates
    from prmfactory.fileio import atomic_write_text
    from prmfactory.toy.oracle import first_error
    from prmfactory.toy.problems import generate, to_input_row

    problems = generate(n, split, seed)
    rows = [to_input_row(p) for p in problems]
    candidates, _ = sample_candidates(rows, policy=policy, samples=1, temperature=temperature, max_tokens=300,
                                      seed=seed, quiet=quiet)
    records = [{"id": row["id"], "problem": row["problem"], "steps": group[0].steps,
                "label": first_error(problem, group[0].steps), "final_answer_correct": group[0].correct}
               for problem, row, group in zip(problems, rows, candidates)]
    atomic_write_text(output, "".join(json.dumps(r) + "\n" for r in records))
    wrong = sum(r["label"] != -1 for r in records)
    return {"solutions": len(records), "with_error": wrong, "all_right": len(records) - wrong,
            "final_answer_accuracy": round(sum(r["final_answer_correct"] for r in records) / len(records), 4)}
