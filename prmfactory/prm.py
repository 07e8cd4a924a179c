"""``PRM.from_pretrained(path).score(problem, steps)``: step scores from a model train-prm saved.

A PRM folder holds the model, its tokenizer, ``prm.json`` (kind, step segmentation, max length,
lineage) and a model card. Scorers are chosen by name from :data:`SCORERS`:

* ``transformers`` — discriminative (token classification) and generative (critique) PRMs, in process.
* ``vllm`` — discriminative PRMs through vLLM's pooling runner (``token_classify``); any
  architecture vLLM maps from ``*ForTokenClassification`` works; the tests check
  LlamaForTokenClassification and Qwen2ForTokenClassification against transformers (within 1e-3).

Both read the scores at the positions :mod:`prmfactory.train.formats` computes, so training and
every scorer agree on where a step's score is. A step cut off by the length limit scores NaN.
Public PRM folders (Qwen2.5-Math-PRM, Math-Shepherd, RLHFlow) are scored with their own conventions
by :mod:`prmfactory.prm_formats` behind the same class (``format=``).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

from prmfactory.errors import UsageError
from prmfactory.prm_folder import PRMMeta
from prmfactory.steps import Segmenter

if TYPE_CHECKING:
    from prmfactory.credit import ScoredSteps
    from prmfactory.train.formats import EncodedSolution

Kind = Literal["discriminative", "generative"]
Item = tuple[str, Sequence[str]]


def aggregate(scores: Sequence[float], how: str) -> float:
    """One solution score from its step scores: ``min``, ``last``, ``prod`` or ``mean`` (NaN steps skipped; none → 0)."""
    known = [s for s in scores if not math.isnan(s)]
    if not known:
        return 0.0
    return AGGREGATIONS[how](known)


AGGREGATIONS: dict[str, Callable[[list[float]], float]] = {
    "min": min, "last": lambda s: s[-1], "prod": math.prod, "mean": lambda s: sum(s) / len(s)}


@dataclass(frozen=True)
class StepReward:
    """What a consumer of the PRM gets per solution: step scores, predicted first error, one reward."""

    step_scores: list[float]
    first_error: int
    reward: float


def first_below(scores: Sequence[float | None], threshold: float = 0.5) -> int:
    """The ProcessBench prediction from step scores: the first step scored below the threshold, else −1.

    An unscored step (None, or NaN: cut off by the length limit) is never the first error."""
    return next((i for i, score in enumerate(scores) if score is not None and score < threshold), -1)


def step_reward(scores: Sequence[float], how: str = "min", threshold: float = 0.5) -> StepReward:
    """Step scores → the ProcessBench first error (first score below ``threshold``) and the aggregate reward."""
    return StepReward(list(scores), first_below(scores, threshold), aggregate(scores, how))


def _nan_padded(scores: list[float], total: int) -> list[float]:
    return scores + [math.nan] * (total - len(scores))


class DiscriminativeTransformers:
    """Discriminative PRM in process: P(class 1) at each step's label position (``token`` head), or
    the probe's pooled step score on the frozen base (``probe`` head, :mod:`prmfactory.likelihood_probe`)."""

    def __init__(self, path: Path, meta: PRMMeta, batch_size: int = 16, dtype: str = "float32"):
        import torch
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        from prmfactory.train.formats import StepEncoder

        tokenizer = AutoTokenizer.from_pretrained(path)
        self.encoder = StepEncoder(tokenizer, Segmenter(meta.segmentation).separator, meta.max_length)
        if meta.head == "probe":
            from prmfactory.likelihood_probe import LikelihoodProbe, probe_step_scores

            self.model, self.read = LikelihoodProbe.from_pretrained(path, dtype=getattr(torch, dtype)), probe_step_scores
        else:
            self.model = AutoModelForTokenClassification.from_pretrained(path, dtype=getattr(torch, dtype))
            self.read = class_one_probability
        self.model.eval()
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.batch_size = batch_size

    def score_batch(self, items: Sequence[Item]) -> list[list[float]]:
        return score_encoded(self.model, [self.encoder.encode(problem, steps) for problem, steps in items],
                             self.pad_id, self.batch_size, self.read)


def class_one_probability(logits, item: "EncodedSolution") -> list[float]:
    """P(class 1) of a two-class token head at the item's label positions (class 1: the step is correct)."""
    import torch

    return torch.softmax(logits[item.label_positions].float(), dim=-1)[:, 1].tolist()


def score_encoded(model, encoded: Sequence["EncodedSolution"], pad_id: int, batch_size: int,
                  read: Callable[[Any, "EncodedSolution"], list[float]]) -> list[list[float]]:
    """Step scores of encoded solutions: right-padded batches of similar length through ``model``;
    ``read(logits_of_one_row, item)`` gives a row's scores for its kept steps (NaN for a step cut
    off by the length limit). Shared by every in-process discriminative scorer."""
    import torch

    from prmfactory.train.discriminative import PadCollator

    # Batches of similar length: padding every batch to its longest item is most of the cost otherwise. An
    # item without tokens (no steps, in a format that has no text without them) has nothing to run.
    order = sorted((i for i in range(len(encoded)) if encoded[i].input_ids), key=lambda i: len(encoded[i].input_ids))
    results: list[list[float]] = [_nan_padded([], item.steps_total) for item in encoded]
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = PadCollator(pad_id)([{"input_ids": encoded[i].input_ids} for i in chunk])
        with torch.inference_mode():
            logits = model(**batch).logits
        for row, index in enumerate(chunk):
            item = encoded[index]
            scores = read(logits[row], item) if item.label_positions else []
            results[index] = _nan_padded(scores, item.steps_total)
    return results


class DiscriminativeVllm:
    """Token-classification PRM through vLLM's pooling runner (softmax rows at every token)."""

    def __init__(self, path: Path, meta: PRMMeta, kv_cache_gib: float = 0.5, dtype: str = "float32"):
        from transformers import AutoTokenizer

        if meta.head == "probe":
            raise UsageError(f"{path}: a PRM with the probe head is scored with backend transformers: vLLM's "
                             "pooling runner has no head that reads the base's token log-likelihoods")
        import prmfactory.engines.vllm  # noqa: F401  (sets vLLM's log level and stream before vllm loads)
        from vllm import LLM

        from prmfactory.train.formats import StepEncoder

        self.encoder = StepEncoder(AutoTokenizer.from_pretrained(path), Segmenter(meta.segmentation).separator,
                                   meta.max_length)
        self.llm = LLM(model=str(path), runner="pooling", dtype=dtype, max_model_len=meta.max_length,
                       enforce_eager=True, kv_cache_memory_bytes=int(kv_cache_gib * 2**30))

    def score_batch(self, items: Sequence[Item]) -> list[list[float]]:
        encoded = [self.encoder.encode(problem, steps) for problem, steps in items]
        outputs = self.llm.encode([{"prompt_token_ids": e.input_ids} for e in encoded],
                                  pooling_task="token_classify", use_tqdm=False)
        return [_nan_padded(out.outputs.data[e.label_positions, 1].tolist(), e.steps_total)
                for out, e in zip(outputs, encoded)]

    def close(self) -> None:
        """Stop the engine's worker process now rather than at interpreter exit."""
        self.llm.llm_engine.engine_core.shutdown()


class GenerativeTransformers:
    """Critique PRM in process: writes each step's verification, then reads P(correct) at the verdict.

    ``samples`` > 1 samples the verifications (temperature 0.7) and averages the step scores.
    """

    def __init__(self, path: Path, meta: PRMMeta, samples: int = 1, max_verification_tokens: int = 64,
                 dtype: str = "float32"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from prmfactory.train.formats import CritiqueEncoder

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
        return _nan_padded(scores, len(steps))

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


_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def _require_model_files(path: Path, meta: PRMMeta) -> None:
    """A prmfactory PRM folder must hold its model (and a probe PRM its probe): a half-copied folder is one line,
    never a transformers stack or, worse, a probe scored with an untrained head."""
    from prmfactory.likelihood_probe import PROBE_FILE

    missing = [] if (path / "config.json").is_file() else ["config.json"]
    if not any((path / name).is_file() for name in _WEIGHTS):
        missing.append("the model's weights (model.safetensors)")
    if meta.head == "probe" and not (path / PROBE_FILE).is_file():
        missing.append(PROBE_FILE)
    if missing:
        raise UsageError(f"{path}: a PRM folder without {', '.join(missing)}; copy the whole folder, or train it "
                         "again (`prmfactory train-prm ... --force`)")


_LOADING = threading.RLock()  # transformers' loading patches global state (meta-device init): one load at a time


class PRM:
    """A trained process reward model: one score in [0, 1] per step (P(step is correct)).

    Safe to call from many threads (RL frameworks score rewards from thread pools): loads are
    serialised process-wide and each PRM's scoring under its own lock, since a fast tokenizer used
    from two threads at once fails ("Already borrowed"). For concurrent throughput, serve it:
    ``prmfactory serve`` batches concurrent requests into one model call.
    """

    def __init__(self, path: Path, meta: PRMMeta, scorer, format: str = "prmfactory"):
        self.path, self.meta, self.scorer, self.format = path, meta, scorer, format
        self.segmenter = Segmenter(meta.segmentation)
        self._scoring = threading.Lock()

    @classmethod
    def from_pretrained(cls, path: str | Path, backend: str = "transformers", format: str = "auto",
                        **options) -> "PRM":
        """A PRM folder of ``format`` (:data:`prmfactory.prm_formats.PRM_FORMATS`; ``auto`` detects it)."""
        with _LOADING:
            return cls._load(Path(path), backend, format, **options)

    @classmethod
    def _load(cls, path: Path, backend: str, format: str, **options) -> "PRM":
        from prmfactory.prm_formats import OWN_FORMAT, PUBLIC_SCORERS, resolve_format

        format = resolve_format(path, format)
        if format != OWN_FORMAT:
            if backend != "transformers":
                raise UsageError(f"a {format} PRM is scored with backend transformers, not {backend!r}")
            check_dtype(options.get("dtype", "float32"))
            scorer = PUBLIC_SCORERS[format](path, **options)
            return cls(path, scorer.meta, scorer, format)
        meta = PRMMeta.load(path)
        _require_model_files(path, meta)
        factory = scorer_factory(meta.kind, backend, options.get("dtype", "float32"))
        return cls(path, meta, factory(path, meta, **options))

    def score(self, problem: str, steps: Sequence[str]) -> list[float]:
        return self.score_batch([(problem, steps)])[0]

    def score_batch(self, items: Sequence[Item]) -> list[list[float]]:
        with self._scoring:
            return self.scorer.score_batch(items)

    def close(self) -> None:
        """Release the scorer's engine, if it runs one."""
        if hasattr(self.scorer, "close"):
            self.scorer.close()

    @property
    def threshold(self) -> float:
        """The score below which a step is the first error: calibrated on a dev split if it was, else 0.5."""
        return self.meta.threshold if self.meta.threshold is not None else 0.5

    def split(self, response: str) -> list[str]:
        """A response split into steps with the separator the PRM was trained with."""
        return self.segmenter.split(response)

    def scored_steps(self, prompts: Sequence[str], responses: Sequence[str]) -> list["ScoredSteps"]:
        """Each response's steps as character spans (the PRM's segmentation) with their scores: what
        step-level credit needs to put a step's reward on the policy's own tokens."""
        from prmfactory.credit import ScoredSteps

        spans = [self.segmenter.spans(r) for r in responses]
        scores = self.score_batch([(p, [r[a:b] for a, b in s]) for p, r, s in zip(prompts, responses, spans)])
        return [ScoredSteps(s, list(v)) for s, v in zip(spans, scores)]

    def rewards(self, prompts: Sequence[str], responses: Sequence[str], how: str = "min") -> list[StepReward]:
        """One :class:`StepReward` per (prompt, response): the response split into steps, scored, aggregated."""
        scores = self.score_batch([(p, self.split(r)) for p, r in zip(prompts, responses)])
        return [step_reward(s, how, self.threshold) for s in scores]


def score_with_progress(prm: PRM, items: Sequence[Item], *, quiet: bool = False, chunk: int = 64) -> list[list[float]]:
    """``prm.score_batch`` over many solutions, in chunks of similar length, with a progress bar."""
    from prmfactory.progress import stage_progress

    order = sorted(range(len(items)), key=lambda i: len(items[i][0]) + sum(map(len, items[i][1])))
    scores: list[list[float]] = [[] for _ in items]
    with stage_progress("scoring steps", len(items), quiet=quiet) as bar:
        for start in range(0, len(order), chunk):
            indices = order[start:start + chunk]
            for index, result in zip(indices, prm.score_batch([items[i] for i in indices])):
                scores[index] = result
            bar.advance(len(indices))
    return scores
