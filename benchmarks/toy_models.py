"""Quality of the committed toy models, measured with the oracle on held-out test problems.

* Policy: final-answer accuracy and the distribution of first-error positions, one sample per
  problem at each temperature, through the in-process vLLM engine.
* Judge: exact first-error accuracy on solutions sampled from the policy (T=1.0), greedy
  decoding, against the majority-label baseline (always answering the most common label).

Usage: python benchmarks/toy_models.py [--problems 500] [--policy toy] [--judge toy-judge]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import re

from prmfactory.engines.base import Message, Prompt, SamplingSpec, chat_messages
from prmfactory.engines.vllm import VllmEngine
from prmfactory.steps import Segmenter
from prmfactory.models import resolve_model
from prmfactory.toy.critique import judge_prompt
from prmfactory.toy.oracle import final_answer_correct, first_error
from prmfactory.toy.problems import generate

_BOXED_INT = re.compile(r"\\boxed\{\s*(-?\d+)\s*\}")


async def sample(engine, problems, temperature: float) -> list[list[str]]:
    spec = SamplingSpec(n=1, temperature=temperature, max_tokens=300)
    outputs = await asyncio.gather(*(engine.generate(Prompt(chat_messages(p.text, None)), spec) for p in problems))
    return [Segmenter().split(out[0].text) for out in outputs]


def policy_stats(problems, solutions) -> dict:
    errors = [first_error(p, s) for p, s in zip(problems, solutions)]
    correct = [final_answer_correct(p, s) for p, s in zip(problems, solutions)]
    return {"final_answer_accuracy": round(sum(correct) / len(problems), 3),
            "all_steps_correct": round(errors.count(-1) / len(problems), 3),
            "right_answer_with_a_wrong_step": sum(c and e != -1 for c, e in zip(correct, errors)),
            "first_error_histogram": dict(sorted(collections.Counter(errors).items()))}


async def main(args) -> dict:
    problems = generate(args.problems, "test", args.seed)
    result: dict = {"problems": len(problems), "policy": {}}
    policy = VllmEngine(resolve_model(args.policy), seed=args.seed, dtype="float32", max_model_len=512, block_size=32)
    for temperature in (0.7, 0.8, 1.0):
        solutions = await sample(policy, problems, temperature)
        result["policy"][f"T={temperature}"] = policy_stats(problems, solutions)
    judged = [s for s in solutions if s]  # the T=1.0 samples
    await policy.close()
    if args.policy_only:
        return result
    judge = VllmEngine(resolve_model(args.judge), seed=args.seed, dtype="float32", max_model_len=512, block_size=32)
    spec = SamplingSpec(n=1, temperature=0.0, max_tokens=200)
    pairs = [(p, s) for p, s in zip(problems, solutions) if s]
    outputs = await asyncio.gather(*(judge.generate(Prompt((Message("user", judge_prompt(p.text, s)),)), spec)
                                     for p, s in pairs))
    await judge.close()
    truth = [first_error(p, s) for p, s in pairs]
    predictions = [int(m[-1]) if (m := _BOXED_INT.findall(o[0].text)) else None for o in outputs]
    majority_label, majority_count = collections.Counter(truth).most_common(1)[0]
    result["judge"] = {
        "solutions": len(judged),
        "exact_match": round(sum(p == t for p, t in zip(predictions, truth)) / len(truth), 3),
        "majority_baseline": round(majority_count / len(truth), 3), "majority_label": majority_label,
        "right_vs_wrong_accuracy": round(sum((p == -1) == (t == -1) for p, t in zip(predictions, truth) if p is not None)
                                         / len(truth), 3),
        "malformed": predictions.count(None),
        "label_histogram": dict(sorted(collections.Counter(truth).items())),
    }
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--policy", default="toy", help="the policy to measure (a path, or toy)")
    parser.add_argument("--judge", default="toy-judge", help="the judge to measure (a path, or toy-judge)")
    parser.add_argument("--policy-only", action="store_true", help="measure the policy only")
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=1))
