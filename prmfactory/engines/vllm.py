"""In-process vLLM engine (AsyncLLM): prefix caching on, ``n`` samples per prompt, token-id prompts.

Prompts are tokenized here: the model's chat template (when it has one) renders the messages
with the generation prompt, and the assistant prefix is appended as its own tokens, so a step
prefix continues exactly after the template. Memory is bounded by an explicit KV-cache size
(``kv_cache_gib``), which on CPU machines is the reliable bound, or on GPUs by
``gpu_memory_utilization``; ``tensor_parallel_size`` shards the model, and any other vLLM
engine argument passes through ``engine_args``. Sampling is seeded once, on
the engine: per-request seeds crash the CPU engine (shared/notes/vllm_cpu.md).
"""

from __future__ import annotations

import itertools
import os
from typing import Any

from prmfactory.engines.base import (Completion, EngineFailure, EngineStats, Prompt, SamplingSpec, prompt_token_ids,
                                     replicate)
from prmfactory.errors import PrmfactoryError, PromptTooLong, UsageError


# vLLM logs every request at INFO, to stdout; keep the stage's progress readable and stdout for
# results, unless the user asks otherwise.
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")


# Engine arguments this module sets itself, from EngineConfig's own fields or always.
_OWN_ARGS = {"model", "seed", "dtype", "max_model_len", "enforce_eager", "enable_prefix_caching", "kv_cache_memory_bytes",
             "gpu_memory_utilization", "tensor_parallel_size", "max_num_seqs", "block_size", "disable_log_stats"}


def check_engine_args(engine_args: dict[str, Any]) -> None:
    """Refuse an ``engine_args`` name vLLM's ``AsyncEngineArgs`` does not have, or one prmfactory sets itself."""
    import dataclasses

    from vllm.engine.arg_utils import AsyncEngineArgs

    from prmfactory.config import BACKEND_OPTIONS

    known = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    for name in sorted(engine_args):
        if name in _OWN_ARGS:
            source = f"engine.{name}" if name in BACKEND_OPTIONS["vllm"] else {"model": "the stage's model option",
                                                                 "seed": "the stage's seed"}.get(name, "always")
            raise UsageError(f"engine.engine_args.{name}: prmfactory sets this argument itself (from {source})")
        if name not in known:
            import difflib

            close = difflib.get_close_matches(name, known, n=1)
            raise UsageError(f"engine.engine_args.{name}: not a vLLM engine argument"
                             + (f" (did you mean {close[0]!r}?)" if close else ""))


def vllm_engine_kwargs(options: dict[str, Any], seed: int) -> dict[str, Any]:
    """vLLM ``AsyncEngineArgs`` keywords (all but the model) from EngineConfig's vLLM options.

    On CPU the KV cache is bounded in bytes (``kv_cache_gib``); on GPU ``gpu_memory_utilization``
    replaces that bound when it is set. ``engine_args`` are checked (:func:`check_engine_args`) and
    passed as they are.
    """
    check_engine_args(options["engine_args"])
    memory = ({"gpu_memory_utilization": options["gpu_memory_utilization"]} if options["gpu_memory_utilization"]
              else {"kv_cache_memory_bytes": int(options["kv_cache_gib"] * 2**30)})
    return dict(dtype=options["dtype"], max_model_len=options["max_model_len"], seed=seed,
                enforce_eager=options["enforce_eager"], enable_prefix_caching=True,
                max_num_seqs=options["max_num_seqs"], tensor_parallel_size=options["tensor_parallel_size"],
                disable_log_stats=False, **memory,
                **({"block_size": options["block_size"]} if options["block_size"] else {}), **options["engine_args"])


class VllmEngine:
    """An AsyncLLM over a local path or model id."""

    def __init__(self, model: str, *, seed: int = 0, dtype: str = "auto", max_model_len: int | None = None,
                 kv_cache_gib: float = 1.0, gpu_memory_utilization: float | None = None, tensor_parallel_size: int = 1,
                 enforce_eager: bool = True, block_size: int | None = None, max_num_seqs: int = 256,
                 engine_args: dict[str, Any] | None = None):
        from transformers import AutoTokenizer
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.model = model
        args = AsyncEngineArgs(model=model, **vllm_engine_kwargs({
            "dtype": dtype, "max_model_len": max_model_len, "kv_cache_gib": kv_cache_gib,
            "gpu_memory_utilization": gpu_memory_utilization, "tensor_parallel_size": tensor_parallel_size,
            "enforce_eager": enforce_eager, "block_size": block_size, "max_num_seqs": max_num_seqs,
            "engine_args": engine_args or {}}, seed))
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        try:
            self._engine = AsyncLLM.from_engine_args(args)
        except Exception as exc:  # vLLM raises many types at start-up; surface one line
            raise PrmfactoryError(f"vLLM could not start {model}: {str(exc).splitlines()[0]}") from exc
        self.max_model_len = self._engine.model_config.max_model_len
        self._ids = itertools.count()
        self.stats = EngineStats()

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        return prompt_token_ids(self.tokenizer, prompt)

    async def generate(self, prompt: Prompt, spec: SamplingSpec) -> list[Completion]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.exceptions import EngineDeadError

        ids = self.prompt_ids(prompt)
        room = self.max_model_len - len(ids)
        if room <= 0:
            raise PromptTooLong(f"prompt of {len(ids)} tokens leaves no room in max_model_len {self.max_model_len}")
        params = SamplingParams(n=spec.distinct_samples, temperature=spec.temperature, top_p=spec.top_p,
                                max_tokens=min(spec.max_tokens, room), stop=list(spec.stop) or None,
                                include_stop_str_in_output=bool(spec.stop), output_kind=RequestOutputKind.FINAL_ONLY)
        self.stats.begin(spec.n)
        final = None
        tokens = 0
        try:
            async for output in self._engine.generate(TokensPrompt(prompt_token_ids=ids), params,
                                                      request_id=f"prmfactory-{next(self._ids)}"):
                final = output
            assert final is not None
            completions = [Completion(o.text, len(o.token_ids), o.finish_reason)
                           for o in sorted(final.outputs, key=lambda o: o.index)]
            tokens = sum(c.num_tokens for c in completions)
            return replicate(completions, spec)
        except EngineDeadError as exc:
            raise EngineFailure(f"vLLM engine for {self.model} died: {str(exc).splitlines()[0] if str(exc) else 'no reason given'}") from exc
        finally:
            self.stats.end(spec.n, tokens)

    def metrics(self) -> dict[str, float]:
        from vllm.v1.metrics.reader import Counter, get_metrics_snapshot

        counters: dict[str, float] = {}
        for metric in get_metrics_snapshot():
            if isinstance(metric, Counter) and metric.name in ("vllm:prefix_cache_queries", "vllm:prefix_cache_hits"):
                counters[metric.name] = counters.get(metric.name, 0) + metric.value
        queries = counters.get("vllm:prefix_cache_queries", 0)
        hit_rate = counters.get("vllm:prefix_cache_hits", 0) / queries if queries else 0.0
        return {**self.stats.summary(), "prefix_cache_queries": queries, "prefix_cache_hit_rate": round(hit_rate, 4)}

    async def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.shutdown()
            del engine  # let AsyncLLM.__del__ run now, not at interpreter exit
