"""Public PRM folder formats behind the one :class:`prmfactory.prm.PRM` interface.

Each format scores a solution the way its authors do, so a PRM downloaded from the Hub scores
ProcessBench, PRMBench, Best-of-N and RL rewards with its own conventions:

* ``qwen2.5-math-prm`` — Qwen2.5-Math-PRM (Zhang et al. 2025, arXiv:2501.07301; model card of
  Qwen/Qwen2.5-Math-PRM-7B): the system prompt "Please reason step by step…", the steps joined in
  the assistant turn with ``<extra_0>`` after each, the process-reward head's P(class 1) at each
  ``<extra_0>``. The head ships as remote code; :mod:`prmfactory.prm.qwen2` is its equivalent.
* ``math-shepherd`` — Math-Shepherd (Wang et al. 2024, arXiv:2312.08935; model card of
  peiyi9979/math-shepherd-mistral-7b-prm): ``"{question} Step 1: … ки\\nStep 2: … ки\\n"``, P("+")
  against P("-") from the language-model logits at each ``ки`` tag.
* ``rlhflow`` — RLHFlow's chat PRMs (Xiong et al. 2024, "An Implementation of Generative PRM",
  RLHFlow/RLHF-Reward-Modeling ``math-rm``): each step a user turn (the question before the first),
  the assistant answering "+" or "-"; a step's score is P("+") against P("-") where the assistant's
  answer is predicted.

The text is built whole and tokenized once, as the authors do (tokenizing pieces and appending
separator *tokens* moved a reproduced PRM's ProcessBench F1 by 4 points, ProcessBench #12); the
scored positions are then found from the characters where each step ends (the tokenizer's offset
mapping), and a position whose token is not the expected separator is an error, not a silent
misreading. Written by hand: no library reads these formats.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from prmfactory.errors import UsageError
from prmfactory.prm.encoding import EncodedSolution
from prmfactory.prm.folder import META_FILE, PRMMeta
from prmfactory.prm.scoring import class_one_probability, score_encoded

OWN_FORMAT = "prmfactory"
QWEN_ARCHITECTURE = "Qwen2ForProcessRewardModel"
QWEN_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
QWEN_STEP_SEPARATOR = "<extra_0>"
SHEPHERD_TAG = "ки"
GOOD, BAD = "+", "-"


def _config(path: Path) -> dict[str, Any]:
    file = path / "config.json"
    if not file.is_file():
        raise UsageError(f"{path}: not a PRM folder (no {META_FILE} and no config.json)")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{file}: not readable JSON ({exc})") from exc


def detect_format(path: Path) -> str:
    """The format of a PRM folder: ours has ``prm.json``; Qwen2.5-Math-PRM names its architecture.

    Math-Shepherd and RLHFlow PRMs are plain causal LMs: nothing in the folder tells them apart
    from each other (or from any chat model), so they must be named."""
    if (path / META_FILE).is_file():
        return OWN_FORMAT
    if QWEN_ARCHITECTURE in (_config(path).get("architectures") or []):
        return "qwen2.5-math-prm"
    raise UsageError(f"{path}: PRM format not recognised (no {META_FILE}, architecture not {QWEN_ARCHITECTURE}); "
                     "a causal-LM PRM needs --prm-format math-shepherd or --prm-format rlhflow")


def check_format(name: str) -> str:
    if name != "auto" and name not in PRM_FORMATS:
        raise UsageError(f"--prm-format: expected auto or one of {', '.join(PRM_FORMATS)}, got {name!r}")
    return name


def resolve_format(path: Path, name: str) -> str:
    """``name``, or the detected format for ``auto``."""
    return detect_format(path) if check_format(name) == "auto" else name


def step_segmentation(path: Path, name: str) -> str:
    """How the PRM at ``path`` splits a response into steps, known before its weights load."""
    name = resolve_format(path, name)
    return PRMMeta.load(path).segmentation if name == OWN_FORMAT else PUBLIC_SCORERS[name].segmentation


def _token_at(encoding, char: int, where: str) -> int:
    token = encoding.char_to_token(char)
    if token is None:
        raise UsageError(f"{where}: no token covers character {char} of the scored text")
    return token


class PublicFormatScorer:
    """Shared loading and batched reading for the public formats; subclasses build the text.

    ``encode`` returns the token ids and, per kept step, the position whose output scores it;
    ``read`` turns the model's output rows at those positions into P(step is correct)."""

    name = ""
    segmentation = "blank_line"

    def __init__(self, path: Path, batch_size: int = 8, dtype: str = "float32", max_length: int | None = None):
        import torch
        from transformers import AutoTokenizer

        self.path = Path(path)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        if not self.tokenizer.is_fast:
            raise UsageError(f"{path}: the {self.name} scorer needs a fast tokenizer (tokenizer.json) for offsets")
        model, info = self.model_class().from_pretrained(self.path, dtype=getattr(torch, dtype), output_loading_info=True)
        missing = sorted(info["missing_keys"])
        if missing:
            raise UsageError(f"{path}: not a {self.name} PRM: {len(missing)} weights missing "
                             f"({', '.join(missing[:2])}{', ...' if len(missing) > 2 else ''})")
        self.model = model.eval()
        limit = getattr(model.config, "max_position_embeddings", None) or 4096
        self.max_length = min(max_length or 4096, limit)
        self.batch_size = batch_size
        self.pad_id = next(i for i in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id, 0) if i is not None)
        self.meta = PRMMeta(kind="discriminative", segmentation=self.segmentation, max_length=self.max_length,
                            base=str(self.path))

    def model_class(self):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    def _single_token(self, text: str) -> int:
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) != 1:
            raise UsageError(f"{self.path}: the tokenizer encodes {text!r} as {len(ids)} tokens; "
                             f"the {self.name} format reads one token there")
        return ids[0]

    def _encoded(self, text: str, step_chars: Sequence[int], expected: int, add_special_tokens: bool,
                 shift: int = 0) -> EncodedSolution:
        """Tokenize ``text`` once; the token covering each step's character (which must be ``expected``),
        moved by ``shift``, is the step's score position; steps past ``max_length`` are not scored."""
        encoding = self.tokenizer(text, add_special_tokens=add_special_tokens)
        ids = encoding["input_ids"]
        positions = []
        for char in step_chars:
            token = _token_at(encoding, char, str(self.path))
            if ids[token] != expected:
                raise UsageError(f"{self.path}: the step separator at character {char} is tokenized as "
                                 f"{self.tokenizer.convert_ids_to_tokens(ids[token])!r}, not as the {self.name} "
                                 f"separator token {self.tokenizer.convert_ids_to_tokens(expected)!r}")
            if token + 1 > self.max_length:
                break
            positions.append(token + shift)
        return EncodedSolution(ids[: self.max_length], positions, len(step_chars))

    def score_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        return score_encoded(self.model, [self.encode(problem, steps) for problem, steps in items], self.pad_id,
                             self.batch_size, self.read)


class QwenMathPRM(PublicFormatScorer):
    """Qwen2.5-Math-PRM: P(class 1) of the process-reward head at each ``<extra_0>``."""

    name = "qwen2.5-math-prm"

    def __init__(self, path: Path, **options):
        super().__init__(path, **options)
        self.separator_id = self._single_token(QWEN_STEP_SEPARATOR)

    def model_class(self):
        from prmfactory.prm.qwen2 import Qwen2ProcessRewardModel

        return Qwen2ProcessRewardModel

    def encode(self, problem: str, steps: Sequence[str]) -> EncodedSolution:
        # A separator written inside a step would be read as a step end: it is dropped from the text.
        cleaned = [step.replace(QWEN_STEP_SEPARATOR, "") for step in steps]
        answer = "".join(step + QWEN_STEP_SEPARATOR for step in cleaned)
        text = self.tokenizer.apply_chat_template(
            [{"role": "system", "content": QWEN_SYSTEM_PROMPT}, {"role": "user", "content": problem},
             {"role": "assistant", "content": answer}], tokenize=False, add_generation_prompt=False)
        start = text.rindex(answer) if answer else len(text)
        ends, offset = [], start
        for step in cleaned:
            offset += len(step)
            ends.append(offset)
            offset += len(QWEN_STEP_SEPARATOR)
        return self._encoded(text, ends, self.separator_id, add_special_tokens=False)

    read = staticmethod(class_one_probability)


class _GoodBadScorer(PublicFormatScorer):
    """Causal-LM PRMs that answer "+" or "-": P("+") against P("-") at the scored positions."""

    def read(self, logits, item: EncodedSolution) -> list[float]:
        import torch

        return torch.softmax(logits[item.label_positions][:, self.candidates].float(), dim=-1)[:, 0].tolist()


class MathShepherdPRM(_GoodBadScorer):
    """Math-Shepherd: ``Step k: … ки`` lines after the question; P("+") at each ``ки``."""

    name = "math-shepherd"
    segmentation = "line"

    def __init__(self, path: Path, **options):
        super().__init__(path, **options)
        self.tag_id = self.tokenizer.encode(SHEPHERD_TAG, add_special_tokens=False)[-1]
        # As the model card reads them: "+ -" tokenized together, so each has the spacing it has after a tag.
        self.candidates = self.tokenizer.encode(f"{GOOD} {BAD}", add_special_tokens=False)
        if len(self.candidates) != 2:
            raise UsageError(f"{path}: the tokenizer encodes {GOOD + ' ' + BAD!r} as {len(self.candidates)} tokens, not 2")

    def encode(self, problem: str, steps: Sequence[str]) -> EncodedSolution:
        text, tags = f"{problem} ", []
        for index, step in enumerate(steps):
            step = step.replace(SHEPHERD_TAG, "").strip()
            if not step.lower().startswith("step"):
                step = f"Step {index + 1}: {step}"
            text += f"{step} "
            tags.append(len(text))
            text += f"{SHEPHERD_TAG}\n"
        return self._encoded(text, tags, self.tag_id, add_special_tokens=True)


class RLHFlowPRM(_GoodBadScorer):
    """RLHFlow: each step a user turn, the assistant's "+"; P("+") where that answer is predicted."""

    name = "rlhflow"

    def __init__(self, path: Path, **options):
        super().__init__(path, **options)
        if not self.tokenizer.chat_template:
            raise UsageError(f"{path}: the rlhflow format needs the tokenizer's chat template; this one has none")
        self.candidates = [self.tokenizer.encode(GOOD, add_special_tokens=False)[-1],
                           self.tokenizer.encode(BAD, add_special_tokens=False)[-1]]

    def encode(self, problem: str, steps: Sequence[str]) -> EncodedSolution:
        conversation: list[dict[str, str]] = []
        answers = []
        for index, step in enumerate(steps):
            conversation.append({"role": "user", "content": f"{problem} {step}" if index == 0 else step})
            asked = self.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
            answers.append((asked, len(asked)))
            conversation.append({"role": "assistant", "content": GOOD})
        text = self.tokenizer.apply_chat_template(conversation, tokenize=False) if steps else ""
        for asked, char in answers:
            if not text.startswith(asked) or text[char:char + 1] != GOOD:
                raise UsageError(f"{self.path}: the chat template does not render a conversation as the prefix of a "
                                 "longer one; the rlhflow format cannot find each step's answer")
        # The logits one token before the assistant's "+" predict it.
        return self._encoded(text, [char for _, char in answers], self.candidates[0], add_special_tokens=False,
                             shift=-1)


PUBLIC_SCORERS = {"qwen2.5-math-prm": QwenMathPRM, "math-shepherd": MathShepherdPRM, "rlhflow": RLHFlowPRM}
PRM_FORMATS = (OWN_FORMAT, *PUBLIC_SCORERS)
