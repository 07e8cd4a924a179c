"""The PRM as the reward of online RL: TRL GRPO on the toy policy, on the CPU.

Three runs of ``trl.GRPOTrainer`` from the same toy policy on the same toy *train* problems:

* ``prm``         — reward = the PRM's min step score, in process (``prmfactory.rl.grpo_reward(PRM)``);
* ``prm-server``  — the same reward through ``prmfactory serve`` (``grpo_reward(url=...)``);
* ``outcome``     — reward = 1 if the boxed answer is right (math-verify), else 0.

Each run logs its reward curve and the policy's final-answer accuracy on held-out *test*
problems before and after (one sample per problem, T=0.7, in-process vLLM). Everything goes to
``OUTPUT/grpo.json`` and ``OUTPUT/grpo.png``.

Usage: python benchmarks/grpo_toy.py --prm runs/prm-quality/discriminative-hard --output runs/grpo
       [--steps 30] [--test-problems 300]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

def accuracy(policy: str, problems: list[dict], seed: int) -> float:
    from prmfactory.eval.sampling import sample_candidates

    candidates, _ = sample_candidates(problems, policy=policy, samples=1, temperature=0.7, max_tokens=300, seed=seed,
                                      quiet=True)
    return round(sum(group[0].correct for group in candidates) / len(problems), 4)


def outcome_reward(prompts, completions, answer, **kwargs) -> list[float]:
    """1 when the completion's boxed answer equals the reference (math-verify), else 0."""
    from prmfactory.answers import AnswerChecker
    from prmfactory.rl import completion_text

    with AnswerChecker() as checker:
        return [float(checker.check(ref, [completion_text(c)])[0].correct) for ref, c in zip(answer, completions)]


def train(name: str, reward, policy: str, rows: list[dict], args, output: Path) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(policy)
    tokenizer.padding_side = "left"
    config = GRPOConfig(output_dir=str(output / f".{name}"), max_steps=args.steps, learning_rate=args.learning_rate,
                        per_device_train_batch_size=args.prompts * args.generations, num_generations=args.generations,
                        max_completion_length=160, temperature=1.0, beta=0.0, logging_steps=1, save_strategy="no",
                        report_to=[], bf16=False, seed=args.seed, disable_tqdm=True)
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": row["problem"]}], "answer": row["answer"]}
                                 for row in rows])
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(policy), reward_funcs=[reward], args=config,
                          train_dataset=dataset, processing_class=tokenizer)
    started = time.monotonic()
    trainer.train()
    trainer.save_model(str(output / name))
    tokenizer.save_pretrained(str(output / name))
    curve = [{"step": e["step"], "reward": e["reward"]} for e in trainer.state.log_history if "reward" in e]
    return {"seconds": round(time.monotonic() - started, 1), "reward_curve": curve}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 3.4))
    for name, run in result["runs"].items():
        curve = run["reward_curve"]
        axis.plot([p["step"] for p in curve], [p["reward"] for p in curve],
                  label=f"{name} (test acc {run['accuracy_before']:.2f} → {run['accuracy_after']:.2f})")
    axis.set_xlabel("GRPO step")
    axis.set_ylabel("mean reward (own reward)")
    axis.set_title("GRPO on the toy policy: PRM reward vs outcome reward", fontsize=9)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(args) -> dict:
    import torch

    from prmfactory.rl import grpo_reward
    from prmfactory.serve.client import running_server
    from prmfactory.models import resolve_model
    from prmfactory.toy.problems import generate, to_input_row

    torch.set_num_threads(1)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    policy = resolve_model("toy")
    train_rows = [to_input_row(p) for p in generate(args.train_problems, "train", 21)]
    test_rows = [to_input_row(p) for p in generate(args.test_problems, "test", 22)]
    for row in train_rows + test_rows:
        row["question_id"] = row["id"]
    before = accuracy(policy, test_rows, args.seed)
    result = {"policy": policy, "prm": args.prm, "steps": args.steps, "accuracy_before": before, "runs": {}}
    with running_server(args.prm) as url:
        rewards = {"prm": grpo_reward(args.prm), "prm-server": grpo_reward(url=url), "outcome": outcome_reward}
        for name, reward in rewards.items():
            run = train(name, reward, policy, train_rows, args, output)
            run["accuracy_before"] = before
            run["accuracy_after"] = accuracy(str(output / name), test_rows, args.seed)
            result["runs"][name] = run
            print(json.dumps({name: {k: v for k, v in run.items() if k != "reward_curve"}}), flush=True)
    (output / "grpo.json").write_text(json.dumps(result, indent=1))
    plot(result, output / "grpo.png")
    return result


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prm", required=True)
    parser.add_argument("--output", default="runs/grpo")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--prompts", type=int, default=4, help="prompts per GRPO step")
    parser.add_argument("--generations", type=int, default=8, help="completions per prompt (the GRPO group)")
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--train-problems", type=int, default=400)
    parser.add_argument("--test-problems", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    result = main(parser.parse_args())
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
