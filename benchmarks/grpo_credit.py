"""Step-level credit in GRPO, measured against outcome rewards on the toy domain (CPU).

Arms, each from the same toy policy on the same toy *train* problems, for ``--seeds`` seeds:

* ``outcome``    — TRL's GRPO with the outcome reward (1 for the right boxed answer);
* ``prm-scalar`` — GRPO with the PRM's min step score as the one reward (what ``prmfactory.rl`` gave so far);
* ``prm-sum``, ``prm-min``, ``prm-mix`` — :class:`prmfactory.grpo.StepCreditGRPOTrainer` with the PRM's step
  scores under each credit mode (``mix``: outcome advantage + 0.5 × the sum advantage);
* ``oracle-sum`` — the same trainer with the toy oracle's exact step truth as the step reward (1 before the
  first wrong step, 0 from it on): the upper bound of process supervision on this policy.

The oracle is used here as a measuring instrument and, in ``oracle-sum`` only, as the reward whose
bound is being measured; no stage of the factory sees it. Each run logs the outcome reward of its own
training samples per step (every arm logs it, whatever it is trained on) and the mean completion length;
after training, one sample per held-out *test* problem (T = 0.7) gives the accuracy and the share of
right answers reached through a wrong step ("process hallucination", exact by the oracle).
Everything goes to ``OUTPUT/grpo_credit.json`` and ``OUTPUT/grpo_credit.png``.

Usage: python benchmarks/grpo_credit.py --prm PRM_FOLDER --output runs/grpo-credit [--steps 40] [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from grpo_toy import outcome_reward  # noqa: E402  (the one outcome reward of both GRPO benchmarks)

ARMS = ("outcome", "prm-scalar", "prm-sum", "prm-min", "prm-mix", "oracle-sum")


class OracleSteps:
    """The toy oracle as a step reward source: 1 for each step before the first wrong one, 0 from it on."""

    def __init__(self, segmentation: str):
        from prmfactory.steps import Segmenter

        self.segmenter = Segmenter(segmentation)

    def scored_steps(self, prompts, responses):
        from prmfactory.credit import ScoredSteps
        from prmfactory.toy.oracle import first_error
        from prmfactory.toy.problems import parse_problem

        scored = []
        for prompt, response in zip(prompts, responses):
            spans = self.segmenter.spans(response)
            steps = [response[a:b] for a, b in spans]
            wrong = first_error(parse_problem(prompt), steps) if steps else 0
            scored.append(ScoredSteps(spans, [float(wrong == -1 or i < wrong) for i in range(len(steps))]))
        return scored


def evaluate(model, tokenizer, problems, segmentation: str, seed: int) -> dict:
    """One sample per problem (T = 0.7): accuracy, and right answers whose steps hold an error."""
    import torch

    from prmfactory.steps import Segmenter
    from prmfactory.toy.build import sample_texts
    from prmfactory.toy.oracle import final_answer_correct, first_error

    torch.manual_seed(seed)
    segmenter, right, hallucinated = Segmenter(segmentation), 0, 0
    model.eval()
    samples = sample_texts(model, tokenizer, problems, max_new_tokens=160, batch_size=50, do_sample=True,
                           temperature=0.7, top_p=1.0, top_k=0)
    model.train()
    for problem, (text, _) in zip(problems, samples):
        steps = segmenter.split(text)
        if final_answer_correct(problem, steps):
            right += 1
            hallucinated += first_error(problem, steps) != -1
    return {"accuracy": right / len(problems), "right": right, "hallucination": hallucinated / right if right else 0.0,
            "mean_tokens": sum(length for _, length in samples) / len(samples)}


def train(arm: str, seed: int, policy: str, prm, rows, args, output: Path) -> tuple[dict, object, object]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig

    from prmfactory.grpo import StepCreditGRPOTrainer
    from prmfactory.rl import GRPOReward

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(policy)
    tokenizer.padding_side = "left"
    scalar = arm == "prm-scalar"
    reward_funcs = [GRPOReward(prm, "min"), outcome_reward] if scalar else [outcome_reward]
    config = GRPOConfig(output_dir=str(output / f".{arm}-{seed}"), max_steps=args.steps, learning_rate=args.learning_rate,
                        per_device_train_batch_size=args.prompts * args.generations, num_generations=args.generations,
                        max_completion_length=160, temperature=1.0, beta=0.0, logging_steps=1, save_strategy="no",
                        report_to=[], bf16=False, seed=seed, disable_tqdm=True, use_cpu=True,
                        reward_weights=[1.0, 0.0] if scalar else None)
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": row["problem"]}], "answer": row["answer"]}
                                 for row in rows])
    credit = {"prm-sum": "sum", "prm-min": "min", "prm-mix": "mix", "oracle-sum": "sum"}.get(arm, "outcome")
    step_rewards = OracleSteps(prm.meta.segmentation) if arm.startswith("oracle") else prm
    model = AutoModelForCausalLM.from_pretrained(policy)
    trainer = StepCreditGRPOTrainer(model=model, reward_funcs=reward_funcs, args=config, train_dataset=dataset,
                                    processing_class=tokenizer, step_rewards=step_rewards, credit=credit,
                                    step_weight=0.5)
    started = time.monotonic()
    trainer.train()
    curve = [{"step": e["step"], "outcome": e["rewards/outcome_reward/mean"],
              "tokens": e.get("completions/mean_length")} for e in trainer.state.log_history
             if "rewards/outcome_reward/mean" in e]
    return {"seconds": round(time.monotonic() - started, 1), "curve": curve}, trainer.model, tokenizer


def _mean_se(values: list[float]) -> dict:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return {"mean": round(mean, 4), "se": round(se, 4), "runs": [round(v, 4) for v in values]}


def summarize(result: dict) -> dict:
    summary = {}
    for arm, runs in result["runs"].items():
        curves = [r["curve"] for r in runs]
        third = max(1, len(curves[0]) // 3)
        summary[arm] = {
            "accuracy_after": _mean_se([r["after"]["accuracy"] for r in runs]),
            "hallucination_after": _mean_se([r["after"]["hallucination"] for r in runs]),
            "tokens_after": _mean_se([r["after"]["mean_tokens"] for r in runs]),
            "train_outcome_first_third": _mean_se([statistics.fmean(p["outcome"] for p in c[:third]) for c in curves]),
            "train_outcome_last_third": _mean_se([statistics.fmean(p["outcome"] for p in c[-third:]) for c in curves]),
            "seconds": _mean_se([r["seconds"] for r in runs]),
        }
    return summary


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (curves, bars) = plt.subplots(1, 2, figsize=(10, 3.6))
    for arm, runs in result["runs"].items():
        steps = [p["step"] for p in runs[0]["curve"]]
        mean = [statistics.fmean(r["curve"][i]["outcome"] for r in runs) for i in range(len(steps))]
        curves.plot(steps, mean, label=arm)
    curves.set_xlabel("GRPO step")
    curves.set_ylabel("outcome reward of training samples")
    curves.legend(fontsize=7)
    arms = list(result["summary"])
    before = result["before"]
    for offset, key in enumerate(("accuracy_after", "hallucination_after")):
        values = [result["summary"][a][key]["mean"] for a in arms]
        errors = [result["summary"][a][key]["se"] for a in arms]
        bars.bar([i + (offset - 0.5) * 0.4 for i in range(len(arms))], values, 0.4, yerr=errors, capsize=2,
                 label=key.replace("_after", " after"))
    bars.axhline(before["accuracy"]["mean"], color="gray", linestyle="--", linewidth=0.8, label="accuracy before")
    bars.set_xticks(range(len(arms)), arms, rotation=20, fontsize=7)
    bars.set_ylim(0, 1)
    bars.legend(fontsize=7)
    figure.suptitle(f"GRPO credit on the toy policy ({result['steps']} steps, {len(result['seeds'])} seeds; "
                    "error bars: standard error over seeds)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(args) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prmfactory.models import resolve_model
    from prmfactory.prm import PRM
    from prmfactory.toy.problems import generate, to_input_row

    torch.set_num_threads(args.threads)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    policy = resolve_model("toy")
    prm = PRM.from_pretrained(args.prm)
    rows = [to_input_row(p) for p in generate(args.train_problems, "train", 21)]
    test = generate(args.test_problems, "test", 22)
    seeds = list(range(args.seeds))
    base, tokenizer = AutoModelForCausalLM.from_pretrained(policy), AutoTokenizer.from_pretrained(policy)
    tokenizer.padding_side = "left"
    before = [evaluate(base, tokenizer, test, prm.meta.segmentation, seed) for seed in seeds]
    result = {"policy": policy, "prm": args.prm, "steps": args.steps, "seeds": seeds, "prompts": args.prompts,
              "generations": args.generations, "learning_rate": args.learning_rate, "test_problems": len(test),
              "before": {"accuracy": _mean_se([b["accuracy"] for b in before]),
                         "hallucination": _mean_se([b["hallucination"] for b in before]),
                         "tokens": _mean_se([b["mean_tokens"] for b in before])},
              "runs": {}}
    started = time.monotonic()
    for arm in args.arms:
        for seed in seeds:
            run, model, tokenizer = train(arm, seed, policy, prm, rows, args, output)
            run["after"] = evaluate(model, tokenizer, test, prm.meta.segmentation, seed)
            result["runs"].setdefault(arm, []).append(run)
            print(json.dumps({"arm": arm, "seed": seed, "seconds": run["seconds"], **run["after"]}), flush=True)
    result["seconds"] = round(time.monotonic() - started, 1)
    result["summary"] = summarize(result)
    (output / "grpo_credit.json").write_text(json.dumps(result, indent=1))
    plot(result, output / "grpo_credit.png")
    return result


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prm", required=True)
    parser.add_argument("--output", default="runs/grpo-credit")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--prompts", type=int, default=4, help="prompts per GRPO step")
    parser.add_argument("--generations", type=int, default=8, help="completions per prompt (the GRPO group)")
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--train-problems", type=int, default=400)
    parser.add_argument("--test-problems", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    result = main(parser.parse_args())
    print(json.dumps({"before": result["before"], "summary": result["summary"], "seconds": result["seconds"]}, indent=1))
