"""Which problem set suits SmolLM2-135M-Instruct as an OmegaPRM policy.

For each candidate set, ``--problems`` problems × ``--samples`` solutions through the in-process
vLLM engine (one engine, one batch), checked with math-verify on the extracted final answer:

* per-sample accuracy and pass@k;
* the share OmegaPRM's pre-filter keeps (k initial rollouts neither all right nor all wrong), the
  figure the set is chosen by;
* how the model lays out its steps (blank lines, one per line, ``Step k:`` headers, numbered
  lists) and states its answer (``\\boxed{}``, ``####``, "the answer is"), which picks the
  segmentation and shows what answer extraction must read.

Sets: GSM8K test (seeded sample), GSM8K train's shortest problems, MATH-500 level 1, and the toy
problems in free text. Results go to docs/benchmarks/smollm2_problem_sets.json.

``--write-input FILE`` writes the chosen set instead, as the input of pipelines/smollm2.yaml:
MATH-500 level 1 without the problems that ProcessBench's math split also poses (the PRM is
evaluated there; GSM8K test is out for the same reason: 202 of ProcessBench's 207 GSM8K problems
come from it).

Usage: python benchmarks/smollm2_problem_sets.py [--problems 32] [--samples 8] [--dtype bfloat16]
       python benchmarks/smollm2_problem_sets.py --write-input runs/math500_level1.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from pathlib import Path

from prmfactory.answers import extract_boxed
from prmfactory.config import EngineConfig
from prmfactory.engines.base import DEFAULT_SYSTEM_PROMPT
from prmfactory.eval.sampling import sample_candidates
from prmfactory.inputs import read_problems

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"  # ../shared/data beside the checkout
LAYOUTS = {
    "blank_lines": re.compile(r"\n[ \t]*\n"),
    "single_line_breaks": re.compile(r"[^\n]\n[^\n]"),
    "step_k_headers": re.compile(r"(?m)^\s*(?:\*\*)?Step\s+\d+"),
    "numbered_list": re.compile(r"(?m)^\s*\d+[.)]\s"),
}
ANSWER_FORMS = {"boxed": lambda t: extract_boxed(t) is not None,
                "hash_line": lambda t: re.search(r"(?m)^\s*####", t) is not None,
                "answer_is": lambda t: re.search(r"(?i)\banswer\s+is", t) is not None}


def problem_sets(data: Path, n: int, seed: int) -> dict[str, list[dict]]:
    from prmfactory.toy.problems import generate, to_input_row

    gsm8k_test, _ = read_problems(data / "gsm8k" / "test.jsonl")
    gsm8k_train, _ = read_problems(data / "gsm8k" / "train.jsonl")
    math500, _ = read_problems(data / "math500" / "test.jsonl")
    toy = [{"question_id": row.pop("id"), **row} for row in map(to_input_row, generate(n, "test", seed))]
    return {
        "gsm8k_test": random.Random(seed).sample(gsm8k_test, n),
        "gsm8k_train_shortest": sorted(gsm8k_train, key=lambda p: len(p["problem"]))[:n],
        "math500_level1": [p for p in math500 if str(p.get("level")) == "1"][:n],
        "toy_free_text": toy,
    }


def chosen_input(data: Path) -> list[dict]:
    """MATH-500 level 1, less the problems ProcessBench (dev half) evaluates on, as mcts input lines."""
    posed = {row["problem"].strip() for row in json.loads((data / "processbench" / "math.json").read_text())}
    math500, _ = read_problems(data / "math500" / "test.jsonl")
    return [{"id": p["question_id"], "problem": p["problem"], "answer": p["answer"]} for p in math500
            if str(p.get("level")) == "1" and p["problem"].strip() not in posed]


def summarise(problems, candidates, samples: int) -> dict:
    texts = [c.text for group in candidates for c in group]
    right = [sum(c.correct for c in group) for group in candidates]
    share = lambda flags: round(sum(flags) / len(flags), 3)  # noqa: E731
    return {
        "problems": len(candidates),
        "per_sample_accuracy": round(sum(right) / (len(candidates) * samples), 4),
        f"pass@{samples}": share([r > 0 for r in right]),
        "pass@4": share([any(c.correct for c in group[:4]) for group in candidates]),
        "omegaprm_prefilter_kept": share([0 < r < samples for r in right]),
        "no_answer_found": share([c.answer is None for group in candidates for c in group]),
        "layout": {name: share([bool(p.search(t)) for t in texts]) for name, p in LAYOUTS.items()},
        "answer_form": {name: share([test(t) for t in texts]) for name, test in ANSWER_FORMS.items()},
        "mean_chars": round(sum(map(len, texts)) / len(texts)),
        "right_per_problem": {p["question_id"]: r for p, r in zip(problems, right) if r},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=32)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--policy", default="smollm2")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-tokens", type=int, default=320)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks/smollm2_problem_sets.json"))
    parser.add_argument("--write-input", type=Path, help="Write the chosen problem set as JSONL here and stop.")
    parser.add_argument("--data", type=Path, default=DATA, help="The shared data folder (gsm8k/, math500/, processbench/).")
    args = parser.parse_args()
    if not (args.data / "math500").is_dir() or not (args.data / "processbench").is_dir():
        parser.error(f"--data {args.data}: no math500/ and processbench/ there; give the shared data folder "
                     "(the one holding math500/, gsm8k/ and processbench/)")
    if args.write_input:
        rows = chosen_input(args.data)
        args.write_input.parent.mkdir(parents=True, exist_ok=True)
        args.write_input.write_text("".join(json.dumps(row) + "\n" for row in rows))
        print(f"{len(rows)} problems (MATH-500 level 1, not in ProcessBench) -> {args.write_input}")
        return

    sets = problem_sets(args.data, args.problems, args.seed)
    everything = [p for problems in sets.values() for p in problems]
    started = time.monotonic()
    candidates, metrics = sample_candidates(
        everything, policy=args.policy, samples=args.samples, temperature=args.temperature, max_tokens=args.max_tokens,
        seed=args.seed, segmentation="line",
        engine_config=EngineConfig(dtype=args.dtype, max_model_len=1024, kv_cache_gib=2.0))
    seconds = time.monotonic() - started
    result = {"config": vars(args) | {"output": str(args.output), "system_prompt": DEFAULT_SYSTEM_PROMPT},
              "seconds": round(seconds, 1), "generated_tokens": metrics.get("generated_tokens"),
              "tokens_per_s": round((metrics.get("generated_tokens") or 0) / seconds, 1), "sets": {}}
    start = 0
    for name, problems in sets.items():
        result["sets"][name] = summarise(problems, candidates[start:start + len(problems)], args.samples)
        start += len(problems)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    header = ["set", "per-sample acc", f"pass@{args.samples}", "pass@4", "OmegaPRM kept", "no answer", "blank lines",
              "line breaks", "Step k:", "numbered", "boxed", "####", "answer is"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name, row in result["sets"].items():
        cells = [row["per_sample_accuracy"], row[f"pass@{args.samples}"], row["pass@4"], row["omegaprm_prefilter_kept"],
                 row["no_answer_found"], *row["layout"].values(), *row["answer_form"].values()]
        print(f"| {name} | " + " | ".join(str(c) for c in cells) + " |")
    print(f"{result['generated_tokens']} tokens in {result['seconds']} s ({result['tokens_per_s']} tok/s)")


if __name__ == "__main__":
    main()
