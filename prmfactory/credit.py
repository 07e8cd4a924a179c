"""Step-level credit for GRPO: step rewards → per-step advantages → advantages on the policy's tokens.

A group is the G completions of one prompt; completion i has steps j = 0..K_i-1 with step rewards
r_ij (the PRM's P(step correct), or the oracle's 0/1). Credit modes:

* ``outcome`` — GRPO's own advantage (Shao et al. 2024, DeepSeekMath, §4.1.2): the completion's reward
  normalised over its group, the same on every token. Here it is whatever the trainer computed from
  its ``reward_funcs``.
* ``sum`` — DeepSeekMath's process supervision (§4.1.3): r̃_ij = (r_ij − mean(r)) / std(r) over every
  step of the group; a token's advantage is the sum of r̃ over the steps at or after its own.
* ``min`` — min-form credit (Cheng et al. 2025, "Stop Summation: Min-Form Credit Assignment Is All
  Process Reward Model Needs for Reasoning", PURE): a step's return is the *minimum* reward of the
  steps at or after it, normalised over the group's steps the same way. A summed return can be raised
  by adding steps the PRM likes; a minimum cannot, which the authors found resists reward hacking.
* ``mix`` — the dual-granularity advantage of ProRAG (Wang, Zhao and Dou 2026, arXiv:2601.21912):
  the outcome advantage plus ``step_weight`` × the ``sum`` advantage, so the outcome still decides the
  sign where the PRM is unsure and the steps say which tokens earned it.

Unscored steps (NaN: cut off by the PRM's length limit) are left out of the group's statistics and
add nothing to a sum; a completion without a step gets a single step of reward 0 (what
:func:`prmfactory.prm.aggregate` gives it). Written by hand: no RL library computes these on
another model's step boundaries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

CREDIT_MODES = ("outcome", "sum", "min", "mix")
EPSILON = 1e-4  # TRL's guard against a zero standard deviation


@dataclass(frozen=True)
class ScoredSteps:
    """A response's steps as character spans, with one reward per step (NaN: not scored)."""

    spans: list[tuple[int, int]]
    scores: list[float]


class TokenRewards(float):
    """A response's reward as one number (the sum) that carries its per-token placement (``tokens``).

    verl 0.9's reward loop moves each sample's ``reward_score`` from its reward workers (Ray actors)
    to the reward manager's ``assemble_rm_scores``, which builds the (batch, response) reward tensor,
    and on its agent-loop path puts the number itself on the last token. A float that knows its
    tokens serves both: the placement reaches ``assemble_rm_scores`` without a second PRM call, and
    both paths give a row the same total. Pickles by value, so it crosses processes."""

    def __new__(cls, tokens: Sequence[float]) -> "TokenRewards":
        value = super().__new__(cls, math.fsum(tokens))
        value.tokens = [float(t) for t in tokens]
        return value

    def __reduce__(self):
        return TokenRewards, (self.tokens,)


def _normalised(values: Sequence[Sequence[float]]) -> list[list[float]]:
    known = [v for row in values for v in row if not math.isnan(v)]
    if not known:
        return [[0.0] * len(row) for row in values]
    mean = sum(known) / len(known)
    std = math.sqrt(sum((v - mean) ** 2 for v in known) / (len(known) - 1)) if len(known) > 1 else 0.0
    return [[0.0 if math.isnan(v) else (v - mean) / (std + EPSILON) for v in row] for row in values]


def _suffix_sums(row: Sequence[float]) -> list[float]:
    out, total = [], 0.0
    for value in reversed(row):
        total += value
        out.append(total)
    return out[::-1]


def _suffix_mins(row: Sequence[float]) -> list[float]:
    out, low = [], math.inf
    for value in reversed(row):
        if not math.isnan(value):
            low = min(low, value)
        out.append(low if low != math.inf else math.nan)
    return out[::-1]


def group_step_advantages(step_rewards: Sequence[Sequence[float]], outcome_advantages: Sequence[float],
                          mode: str, step_weight: float = 1.0) -> list[list[float]]:
    """Per-step advantages of one group's completions under credit ``mode`` (see the module docstring)."""
    if mode not in CREDIT_MODES:
        raise ValueError(f"credit mode {mode!r}: expected one of {', '.join(CREDIT_MODES)}")
    rewards = [list(row) if len(row) else [0.0] for row in step_rewards]
    if mode == "outcome":
        return [[a] * len(row) for a, row in zip(outcome_advantages, rewards)]
    if mode == "min":
        return _normalised([_suffix_mins(row) for row in rewards])
    summed = [_suffix_sums(row) for row in _normalised(rewards)]
    if mode == "sum":
        return summed
    return [[a + step_weight * s for s in row] for a, row in zip(outcome_advantages, summed)]


def token_steps(token_ends: Sequence[int], spans: Sequence[tuple[int, int]]) -> list[int]:
    """The step each token belongs to: the step whose region holds the token's first character.

    Step k's region runs from its start to the next step's start (its separator is its own); text
    before the first step belongs to it, and tokens after the last step (the end-of-sequence token)
    to the last one. ``token_ends`` are the character offsets where each token's text ends."""
    if not spans:
        return [0] * len(token_ends)
    steps, step, start = [], 0, 0
    for end in token_ends:
        while step + 1 < len(spans) and start >= spans[step + 1][0]:
            step += 1
        steps.append(step)
        start = max(start, end)
    return steps


def token_char_ends(tokenizer, token_ids: Sequence[int]) -> list[int]:
    """Where each generated token's text ends in the decoded completion (the decoded prefix's length).

    Decoding prefixes, not the tokens one by one, keeps byte-level merges and SentencePiece's
    leading spaces exact; a prefix that ends inside a multi-byte character is clamped so the
    offsets never decrease."""
    ends, last = [], 0
    for count in range(1, len(token_ids) + 1):
        last = max(last, len(tokenizer.decode(token_ids[:count], skip_special_tokens=True)))
        ends.append(last)
    return ends
