"""Output tokens per second of the mcts stage against two references, on the same model and prompts.

* **prmfactory**: ``search_questions`` (the stage's loop) — every question a coroutine over one
  AsyncLLM, prefix caching on.
* **openr way**: the same search, one question at a time, each estimate a transformers
  ``generate`` call with ``num_return_sequences=k`` and no prefix cache.
* **engine ceiling**: every request the prmfactory run made, replayed at once into the same
  engine (one big batch, no search dependencies between requests).

Also reports tokens generated per step label (nodes with an MC estimate) for omegaprm and mc.

Usage: python benchmarks/mcts_throughput.py [--questions 32] [--openr-questions 4] [--policy toy]
       [--compile] [--max-num-seqs 256] [--dtype float32] [--strategies omegaprm,mc] [--max-model-len 512]
       (SmolLM2: --policy smollm2 --dtype bfloat16 --strategies omegaprm --max-model-len 1024)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from prmfactory.config import EngineConfig
from prmfactory.search.config import MctsConfig
from prmfactory.engines.base import Completion, EngineStats, Prompt, SamplingSpec, prompt_token_ids
from prmfactory.engines.vllm import VllmEngine
from prmfactory.search.stage import search_questions
from prmfactory.store import Run
from prmfactory.models import resolve_model
from prmfactory.toy.problems import generate, to_input_row


class RecordingEngine:
    """Passes requests to an engine and keeps them for the ceiling replay."""

    def __init__(self, engine):
        self.engine, self.model, self.requests = engine, engine.model, []
        self.stats = EngineStats()

    async def generate(self, prompt: Prompt, spec: SamplingSpec) -> list[Completion]:
        self.requests.append((prompt, spec))
        self.stats.begin(spec.n)
        out = await self.engine.generate(prompt, spec)
        self.stats.end(spec.n, sum(c.num_tokens for c in out))
        return out

    def metrics(self):
        return self.stats.summary()

    async def close(self):
        pass


class TransformersEngine:
    """The openr way: transformers generate, one request at a time, no prefix cache (benchmark only)."""

    def __init__(self, model_dir: str, tokenizer, dtype: str, max_model_len: int):
        import torch
        from transformers import AutoModelForCausalLM

        self.model = model_dir
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.net = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
        self.stats = EngineStats()

    async def generate(self, prompt: Prompt, spec: SamplingSpec) -> list[Completion]:
        import torch

        ids = prompt_token_ids(self.tokenizer, prompt)
        self.stats.begin(spec.n)
        with torch.no_grad():
            out = self.net.generate(torch.tensor([ids]), do_sample=True, temperature=spec.temperature,
                                    top_p=spec.top_p, max_new_tokens=min(spec.max_tokens, self.max_model_len - len(ids)),
                                    num_return_sequences=spec.n, pad_token_id=self.tokenizer.pad_token_id)
        completions = []
        for row in out[:, len(ids):]:
            tokens = row.tolist()
            if self.tokenizer.eos_token_id in tokens:
                tokens = tokens[: tokens.index(self.tokenizer.eos_token_id) + 1]
            completions.append(Completion(self.tokenizer.decode(tokens, skip_special_tokens=True), len(tokens), None))
        self.stats.end(spec.n, sum(c.num_tokens for c in completions))
        return completions

    def metrics(self):
        return self.stats.summary()

    async def close(self):
        pass


def problems_rows(n: int) -> list[dict]:
    return [dict(to_input_row(p), question_id=to_input_row(p)["id"]) for p in generate(n, "test", 123)]


async def timed_search(run_dir: Path, rows, config, engine) -> tuple[float, dict]:
    run = Run(run_dir)
    started = time.perf_counter()
    with run.writing():
        await search_questions(run.commit, rows, config, engine)
    seconds = time.perf_counter() - started
    nodes = run.read("nodes").to_pylist()
    labels = sum(1 for n in nodes if n["depth"] > 0 and n["num_rollouts"] > 0)
    return seconds, {"step_labels": labels}


async def main(args) -> dict:
    policy = resolve_model(args.policy)
    engine_config = EngineConfig(dtype=args.dtype, max_model_len=args.max_model_len, block_size=32,
                                 enforce_eager=not args.compile, max_num_seqs=args.max_num_seqs,
                                 kv_cache_gib=2.0 if args.max_model_len > 512 else 1.0)
    config = MctsConfig(policy=policy, rollouts=args.rollouts, budget=args.budget, max_new_tokens=256,
                        temperature=0.8, quiet=True, concurrency=args.questions, num_solutions=args.num_solutions,
                        engine=engine_config)
    rows = problems_rows(args.questions)
    result: dict = {"policy": args.policy, "questions": args.questions, "rollouts": args.rollouts,
                    "budget": args.budget, "compiled": args.compile, "max_num_seqs": args.max_num_seqs,
                    "dtype": args.dtype, "max_model_len": args.max_model_len}
    engine = VllmEngine(policy, seed=0, **engine_config.backend_options())
    with tempfile.TemporaryDirectory() as scratch:
        for strategy in args.strategies.split(","):
            recorder = RecordingEngine(engine)
            seconds, extra = await timed_search(Path(scratch) / strategy, rows,
                                                config.model_copy(update={"strategy": strategy}), recorder)
            tokens = recorder.stats.generated_tokens
            result[strategy] = {"seconds": round(seconds, 2), "tokens": tokens,
                                "tokens_per_second": round(tokens / seconds, 1),
                                "tokens_per_step_label": round(tokens / max(extra["step_labels"], 1), 1), **extra}
            if strategy == "omegaprm":
                requests = recorder.requests
        started = time.perf_counter()
        replay = await asyncio.gather(*(engine.generate(p, s) for p, s in requests))
        seconds = time.perf_counter() - started
        tokens = sum(c.num_tokens for out in replay for c in out)
        result["engine_ceiling"] = {"seconds": round(seconds, 2), "tokens": tokens,
                                    "tokens_per_second": round(tokens / seconds, 1)}
        result["prefix_cache_hit_rate"] = engine.metrics()["prefix_cache_hit_rate"]
        await engine.close()

        baseline = TransformersEngine(policy, engine.tokenizer, args.dtype, args.max_model_len)
        subset = rows[: args.openr_questions]
        openr_config = config.model_copy(update={"concurrency": 1})
        recorder = RecordingEngine(baseline)
        seconds, _ = await timed_search(Path(scratch) / "openr", subset, openr_config, recorder)
        tokens = recorder.stats.generated_tokens
        result["openr_way"] = {"questions": len(subset), "seconds": round(seconds, 2), "tokens": tokens,
                               "tokens_per_second": round(tokens / seconds, 1)}
    ours = result["omegaprm"]["tokens_per_second"]
    result["speedup_vs_openr_way"] = round(ours / result["openr_way"]["tokens_per_second"], 2)
    result["fraction_of_engine_ceiling"] = round(ours / result["engine_ceiling"]["tokens_per_second"], 3)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default="toy")
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--openr-questions", type=int, default=4)
    parser.add_argument("--rollouts", type=int, default=8)
    parser.add_argument("--budget", type=int, default=48)
    parser.add_argument("--num-solutions", type=int, default=2, help="mc: solutions per question")
    parser.add_argument("--compile", action="store_true", help="let vLLM compile the model (enforce_eager=False)")
    parser.add_argument("--max-num-seqs", type=int, default=256, help="the engine's batch limit")
    parser.add_argument("--dtype", default="float32", help="weights dtype of both engines (bfloat16 on AVX-512 BF16 CPUs)")
    parser.add_argument("--strategies", default="omegaprm,mc", help="comma-separated; omegaprm is always needed")
    parser.add_argument("--max-model-len", type=int, default=512)
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=1))
    sys.stdout.flush()
