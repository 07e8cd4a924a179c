"""Best-of-N reranking: the PRM picks one of N sampled solutions; compared with majority vote and pass@N.

For each n in 1, 2, 4, … N (the first n candidates of every problem): ``pass@n`` (any candidate is
right — the ceiling), ``majority@n`` (self-consistency, Wang et al. 2023, arXiv:2203.11171: the most
frequent extracted answer, ties to the earliest) and ``prm_<agg>@n`` for each aggregation of the
step scores (min / last / prod / mean), as in Lightman et al. 2023 (arXiv:2305.20050); and
``prm_vote@n``, majority vote weighted by each candidate's min step score (Math-Shepherd's
self-consistency + PRM, Wang et al. 2024, arXiv:2312.08935).
"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from prmfactory.eval.sampling import Candidate
from prmfactory.prm import AGGREGATIONS, aggregate


def majority_correct(candidates: Sequence[Candidate], weights: Sequence[float] | None = None) -> bool:
    """Whether the answer with the most votes (whitespace-insensitive; ties to the earliest) is right.

    Each candidate votes 1, or its weight when ``weights`` are given (a PRM-weighted vote).
    """
    weights = [1.0] * len(candidates) if weights is None else weights
    keyed = [("".join(c.answer.split()), c, w) for c, w in zip(candidates, weights) if c.answer is not None]
    if not keyed:
        return False
    votes: collections.Counter[str] = collections.Counter()
    for key, _, weight in keyed:
        votes[key] += weight
    top = max(votes.values())
    return next(c.correct for key, c, _ in keyed if votes[key] == top)


def sizes(samples: int) -> list[int]:
    """1, 2, 4, … up to and including ``samples``."""
    result = [1]
    while result[-1] * 2 < samples:
        result.append(result[-1] * 2)
    return sorted(set(result + [samples]))


def bon_metrics(candidates: Sequence[Sequence[Candidate]], scores: Sequence[Sequence[Sequence[float]]]) -> dict[str, Any]:
    """Accuracy of every method at every n, over the problems."""
    samples = min(len(c) for c in candidates)
    curves: dict[str, dict[int, float]] = collections.defaultdict(dict)
    for n in sizes(samples):
        hits: dict[str, int] = collections.Counter()
        for problem_candidates, problem_scores in zip(candidates, scores):
            first = problem_candidates[:n]
            hits["pass"] += any(c.correct for c in first)
            hits["majority"] += majority_correct(first)
            for how in AGGREGATIONS:
                values = [aggregate(s, how) for s in problem_scores[:n]]
                hits[f"prm_{how}"] += first[values.index(max(values))].correct
            hits["prm_vote"] += majority_correct(first, [aggregate(s, "min") for s in problem_scores[:n]])
        for method, count in hits.items():
            curves[method][n] = round(count / len(candidates), 4)
    return {"problems": len(candidates), "samples": samples, "curves": dict(curves)}


def markdown_table(result: Mapping[str, Any]) -> str:
    ns = sizes(result["samples"])
    lines = ["| method | " + " | ".join(f"@{n}" for n in ns) + " |", "|---|" + "---:|" * len(ns)]
    for method, curve in result["curves"].items():
        lines.append(f"| {method} | " + " | ".join(f"{curve[n]:.3f}" for n in ns) + " |")
    return "\n".join(lines) + "\n"


def write_results(result: Mapping[str, Any], output: Path, title: str) -> None:
    """bon.json, bon.md and bon.png (accuracy against n for every method)."""
    from prmfactory.eval.plots import figure, write_json_and_markdown

    write_json_and_markdown(output, "bon", result,
                            f"# {title}\n\n{result['problems']} problems\n\n" + markdown_table(result))
    with figure(output / "bon.png", (5, 3.4)) as axis:
        for method, curve in result["curves"].items():
            ns = sorted(curve)
            axis.plot(ns, [curve[n] for n in ns], marker="o", label=method, linestyle="--" if method == "pass" else "-")
        axis.set_xscale("log", base=2)
        axis.set_xlabel("N (samples per problem)")
        axis.set_ylabel("accuracy")
        axis.set_title(title, fontsize=9)
        axis.legend(fontsize=7)


def write_candidates(path: Path, problems: Sequence[Mapping[str, Any]], candidates: Sequence[Sequence[Candidate]],
                     scores: Sequence[Sequence[Sequence[float]]] | None = None) -> None:
    """JSONL, one problem per line: its id, reference answer and candidates (with step scores when given)."""
    from prmfactory.fileio import atomic_write_text

    lines = []
    for index, (problem, group) in enumerate(zip(problems, candidates)):
        items = [c.to_json() | ({"step_scores": scores[index][j]} if scores else {}) for j, c in enumerate(group)]
        lines.append(json.dumps({"id": problem["question_id"], "problem": problem["problem"],
                                 "answer": problem["answer"], "candidates": items}))
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_candidates(path: Path) -> tuple[list[dict[str, Any]], list[list[Candidate]]]:
    """Problems and candidates from a file :func:`write_candidates` wrote (to rerank them with another PRM)."""
    from prmfactory.errors import UsageError
    from prmfactory.inputs import jsonl_records

    problems, candidates = [], []
    for where, record in jsonl_records(path):
        try:
            group = [Candidate(c["text"], c["steps"], c["answer"], c["correct"]) for c in record["candidates"]]
            problems.append({"question_id": record["id"], "problem": record["problem"], "answer": record["answer"]})
        except (KeyError, TypeError) as exc:
            raise UsageError(f"{where}: not a candidates line ({exc})") from exc
        candidates.append(group)
    return problems, candidates


def evaluate_bon(prm_path: Path, output: Path, *, problems: Sequence[Mapping[str, Any]] | None = None,
                 candidates: Path | None = None, samples: int = 16, policy: str = "toy", temperature: float = 0.8,
                 max_tokens: int = 512, backend: str = "transformers", limit: int | None = None, seed: int = 0,
                 quiet: bool = False, prm_format: str = "auto", force: bool = False) -> dict[str, Any]:
    """Sample (or reread) candidates, rerank them with the PRM, write results and record them in its card
    (a PRM of a public format has no card of ours: its folder is left as it is). ``output``: new, empty or,
    with ``force``, an earlier Best-of-N output (:mod:`prmfactory.eval.output`), written whole or not at all."""
    from prmfactory.eval.output import check_output, eval_output
    from prmfactory.prm import PRM, score_with_progress
    from prmfactory.prm.folder import record_eval
    from prmfactory.prm.public import OWN_FORMAT, step_segmentation

    check_output(output, "bon", force)  # before minutes of sampling
    if candidates is not None:
        problems, sampled = read_candidates(candidates)
        problems, sampled = problems[:limit], sampled[:limit]
    else:
        from prmfactory.eval.sampling import sample_candidates

        problems = list(problems or [])[:limit]
        sampled, _ = sample_candidates(problems, policy=policy, samples=samples, temperature=temperature,
                                       max_tokens=max_tokens, seed=seed,
                                       segmentation=step_segmentation(prm_path, prm_format),
                                       quiet=quiet)
    prm = PRM.from_pretrained(prm_path, backend=backend, format=prm_format)
    try:
        flat = score_with_progress(prm, [(p["problem"], c.steps) for p, group in zip(problems, sampled) for c in group],
                                   quiet=quiet)
    finally:
        prm.close()
    scores, position = [], 0
    for group in sampled:
        scores.append(flat[position:position + len(group)])
        position += len(group)
    result = bon_metrics(sampled, scores)
    with eval_output(output, "bon", force=force) as folder:
        write_candidates(folder / "candidates.jsonl", problems, sampled, scores)
        write_results(result, folder, f"Best-of-N: {prm_path.name}")
    n = result["samples"]
    if prm.format == OWN_FORMAT:
        record_eval(prm_path, f"best_of_{n}", {method: curve[n] for method, curve in result["curves"].items()})
    return result
