"""Scorers: how a PRM folder of our own format is run, chosen by (kind, backend) from :data:`SCORERS`.

* ``transformers`` — discriminative PRMs (any head in :mod:`prmfactory.prm.heads`) and generative
  (critique) PRMs, in process.
* ``vllm`` — discriminative PRMs whose head vLLM's pooling runner can run (``token_classify``); any
  architecture vLLM maps from ``*ForTokenClassification`` works; the tests check
  LlamaForTokenClassification and Qwen2ForTokenClassification against transformers (within 1e-3).

All read the scores at the positions :mod:`prmfactory.prm.encoding` computes, so training and every
scorer agree on where a step's score is. A step cut off by the length limit scores NaN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from prmfactory.errors import UsageError
from prmfactory.prm.encoding import CritiqueEncoder, StepEncoder
from prmfactory.prm.folder import PRMMeta
from prmfactory.prm.heads import load_head
from prmfactory.prm.rewards import Item
from prmfactory.prm.scoring import nan_padded, score_encoded
from prmfactory.steps import Segmenter


class DiscriminativeTransformers:
    """Discriminative PRM in process: the model its head (:mod:`prmfactory.prm.heads`) saved, read the head's way."""

    def __init__(self, path: Path, meta: PRMMeta, batch_size: int = 16, dtype: str = "float32"):
        import torch
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
        self.encoder = StepEncoder(tokenizer, Segmenter(meta.segmentation).separator, meta.max_length)
        head = load_head(meta.head)
        self.model, self.read = head.from_folder(path, getattr(torch, dtype)).eval(), head.read
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.batch_size = batch_size

    def score_batch(self, items: Sequence[Item]) -> list[list[float]]:
        return score_encoded(self.model, [self.encoder.encode(problem, steps) for problem, steps in items],
                             self.pad_id, self.batch_size, self.read)


class DiscriminativeVllm:
    """Token-head PRM through vLLM's pooling runner (softmax rows at every token)."""

    def __init__(self, path: Path, meta: PRMMeta, kv_cache_gib: float = 0.5, dtype: str = "float32"):
        import os
        import weakref

        from transformers import AutoTokenizer

        # vLLM's per-start CPU notices (Triton, tcmalloc, eager mode) tell a user of the PRM nothing they can
        # act on; a VLLM_LOGGING_LEVEL the user set wins (`prmfactory --verbose` sets WARNING).
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        import prmfactory.engines.vllm  # noqa: F401  (sets vLLM's log stream before vllm loads)
        from vllm import LLM

        self.encoder = StepEncoder(AutoTokenizer.from_pretrained(path), Segmenter(meta.segmentation).separator,
                                   meta.max_length)
        self.llm = LLM(model=str(path), runner="pooling", dtype=dtype, max_model_len=meta.max_length,
                       enforce_eager=True, kv_cache_memory_bytes=int(kv_cache_gib * 2**30))
        # stopped in order at exit too, not found dead by vLLM's own cleanup ("engine core exited unexpectedly")
        self._stop = weakref.finalize(self, self.llm.llm_engine.engine_core.shutdown)

    def score_batch(self, items: Sequence[Item]) -> list[list[float]]:
        encoded = [self.encoder.encode(problem, steps) for problem, steps in items]
        outputs = self.llm.encode([{"prompt_token_ids": e.input_ids} for e in encoded],
                                  pooling_task="token_classify", use_tqdm=False)
        return [nan_padded(out.outputs.data[e.label_positions, 1].tolist(), e.steps_total)
                for out, e in zip(outputs, encoded)]

    def close(self) -> None:
        """Stop the engine's worker process now rather than at interpreter exit."""
        self._stop()


class GenerativeTransformers:
    """Critique PRM in process: writes each step's verification, then reads P(correct) at the verdict.

    ``samples`` > 1 samples the verifications (temperature 0.7) and averages the step scores.
    """

    def __init__(self, path: Path, meta: PRMMeta, samples: int = 1, max_verification_tokens: int = 64,
                 dtype: str = "float32"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.encoder = CritiqueEncoder(self.tokenizer, meta.max_length)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()
        self.samples = samples
        self.max_verification_tokens = max_verification_tokens

    def _verdict_stop(self):
        from transformers import StoppingCriteria

        tail = self.encoder.boxed_ids

        class EndsWithBoxed(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                import torch

                return torch.tensor([row[-len(tail):].tolist() == tail for row in input_ids])

        return EndsWithBoxed()

    def _transcript_scores(self, problem: str, steps: Sequence[str], sample: bool) -> list[float]:
        import torch

        ids = self.encoder.prompt_ids(problem)
        tokens = [self.encoder.verdict_token(True), self.encoder.verdict_token(False)]
        scores: list[float] = []
        pieces = [self.encoder.step_ids(index, step) for index, step in enumerate(steps)]
        for index, piece in enumerate(pieces):
            ids = ids + piece
            # The steps still to come keep their room, and each check gets a fair share of the rest,
            # so a verbose critique cannot starve later steps.
            later = sum(len(p) for p in pieces[index + 1:])
            fixed = len(self.encoder.boxed_ids) + max(len(v) for v in self.encoder.verdict_ids.values())
            room = min(self.max_verification_tokens,
                       (self.encoder.max_length - len(ids) - later) // (len(steps) - index) - fixed)
            if room < 1:
                break
            with torch.inference_mode():
                out = self.model.generate(torch.tensor([ids]), max_new_tokens=room,
                                          do_sample=sample, temperature=0.7 if sample else None, top_p=None, top_k=None,
                                          stopping_criteria=[self._verdict_stop()],
                                          pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
                ids = out[0].tolist()
                if ids[-len(self.encoder.boxed_ids):] != self.encoder.boxed_ids:
                    ids += self.encoder.boxed_ids
                logits = self.model(torch.tensor([ids])).logits[0, -1, tokens].float()
            p_correct = torch.softmax(logits, dim=-1)[0].item()
            scores.append(p_correct)
            ids += self.encoder.verdict_ids[p_correct >= 0.5]
        return nan_padded(scores, len(steps))

    def score_batch(self, items: Sequence[Item]) -> list[list[float]]:
        results = []
        for problem, steps in items:
            runs = [self._transcript_scores(problem, steps, sample=self.samples > 1) for _ in range(self.samples)]
            results.append([sum(column) / len(column) for column in zip(*runs)] if steps else [])
        return results


SCORING_DTYPES = ("float32", "bfloat16", "float16")
SCORERS: dict[tuple[str, str], Callable[..., Any]] = {
    ("discriminative", "transformers"): DiscriminativeTransformers,
    ("discriminative", "vllm"): DiscriminativeVllm,
    ("generative", "transformers"): GenerativeTransformers,
}


def check_dtype(dtype: str) -> None:
    if dtype not in SCORING_DTYPES:
        raise UsageError(f"dtype {dtype!r}: not one of {', '.join(SCORING_DTYPES)}")


def scorer_factory(kind: str, backend: str, dtype: str = "float32") -> Callable[..., Any]:
    """The scorer class for a PRM of ``kind`` on ``backend``; a UsageError for an unknown pair or dtype.

    Callable before the PRM exists (``prmfactory run --processbench`` checks its flags up front)."""
    check_dtype(dtype)
    factory = SCORERS.get((kind, backend))
    if factory is None:
        supported = ", ".join(b for k, b in SCORERS if k == kind)
        raise UsageError(f"a {kind} PRM cannot be scored with backend {backend!r} (supported: {supported})")
    return factory


def scorer_for(path: Path, meta: PRMMeta, backend: str, **options):
    """The scorer of the PRM folder ``path``: its kind's class on ``backend``, if its head runs there."""
    factory = scorer_factory(meta.kind, backend, options.get("dtype", "float32"))
    runs_on = load_head(meta.head).backends if meta.kind == "discriminative" else (backend,)
    if backend not in runs_on:
        raise UsageError(f"{path}: a PRM with the {meta.head} head is scored with backend "
                         f"{' or '.join(runs_on)}, not {backend}")
    return factory(path, meta, **options)
