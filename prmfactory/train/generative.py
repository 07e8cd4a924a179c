"""Generative PRM: a causal LM fine-tuned with TRL's SFTTrainer to write a critique per step.

Each step's critique is the tool's verification of what the step claims (from verify's verdicts,
each computation recomputed before it is compared)
and, when the judge put the first error there, the judge's flag; then ``\\boxed{correct}`` or
``\\boxed{incorrect}`` from the fused label. Transcripts are tokenized by
:class:`~prmfactory.prm.encoding.CritiqueEncoder` and handed to SFTTrainer pre-tokenized, with a
completion mask, so the loss covers the critique only.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from prmfactory.prm.encoding import CritiqueEncoder


RECOMPUTED_KINDS = ("arithmetic", "approximate", "ungrounded")  # claims whose left side verify evaluated
_BINARY = re.compile(r"(-?\d+) ([-+*/]) (-?\d+) = (-?\d+)")


def _other_way(claim: Mapping[str, Any]) -> str | None:
    """``a op b = c`` on integers checked the other way round, or None for any other claim.

    ``a + b`` as ``b + a`` and ``a * b`` as ``b * a``, compared with c; ``a - b = c`` as ``c + b``
    and ``a / b = c`` as ``c * b``, compared with a. Exact arithmetic makes each equivalent to the
    claim, and the recomputed value can never be copied from the step: a PRM that restates
    ``16 + 4 = 19`` learns to copy the 19, one that writes ``4 + 16 =`` must add.
    """
    match = _BINARY.fullmatch(claim["text"])
    if match is None:
        return None
    a, op, b, c = int(match[1]), match[2], int(match[3]), int(match[4])
    if op in "+*":
        value, target, text = (a + b if op == "+" else a * b), c, f"{b} {op} {a}"
    else:
        value, target, text = (c + b if op == "-" else c * b), a, f"{c} {'+' if op == '-' else '*'} {b}"
    return f"{text} = {value}, " + ("ok" if value == target else f"not {target}")


def _claim_check(claim: Mapping[str, Any]) -> str:
    """One claim's check, the recomputation first: ``4 + 16 = 20, ok`` or ``4 + 16 = 20, not 19``.

    The value is written before the comparison, so the verdict is read after the model has
    recomputed it (verify, then judge: ThinkPRM, Khalifa et al. 2025; GenPRM, Zhao et al. 2025) —
    a small model cannot compute a sum and compare it with the written one at the same token. A
    final answer is only restated: its check needs the reference, which a PRM never sees.
    """
    if claim["kind"] == "final_answer":
        return f"answer {claim['value_claimed']}"
    other_way = _other_way(claim) if claim["kind"] in ("arithmetic", "ungrounded") else None
    if other_way is not None:
        return other_way
    left = claim["text"].rsplit(" = ", 1)[0] if " = " in claim["text"] else claim["text"]
    if claim["verdict"] == "incorrect":
        return f"{left} = {claim['value_found']}, not {claim['value_claimed']}"
    return f"{left} = {claim['value_found']}, ok"


def verification_text(tool_verdict: str | None, claims: Sequence[Mapping[str, Any]] = (),
                      judge_flagged: bool = False) -> str:
    """What a step's critique says before its verdict: each checked claim, recomputed and compared."""
    parts = [_claim_check(claim) for claim in claims
             if claim["kind"] == "final_answer" or (claim["kind"] in RECOMPUTED_KINDS and claim["value_found"] is not None
                                                    and (claim["verdict"] != "unverifiable" or claim["kind"] == "ungrounded"))]
    if not parts:
        parts.append("unchecked" if tool_verdict in (None, "unverifiable") else f"tool: {tool_verdict}")
    if judge_flagged:
        parts.append("judge: wrong")
    return "; ".join(parts)


def critique_dataset(rows: Sequence[Mapping[str, Any]], encoder: CritiqueEncoder):
    """Pre-tokenized SFT rows (``input_ids``, ``completion_mask``) and truncation counts.

    Each row needs ``prompt``, ``completions``, ``labels`` and ``verifications`` (one text per step).
    """
    from datasets import Dataset

    counts = {"rows": len(rows), "rows_truncated": 0, "rows_dropped_too_long": 0, "steps_dropped": 0}
    data: dict[str, list[list[int]]] = {"input_ids": [], "completion_mask": []}
    for row in rows:
        ids, mask, kept = encoder.encode(row["prompt"], row["completions"], row["verifications"], row["labels"])
        counts["steps_dropped"] += len(row["completions"]) - kept
        if not kept:
            counts["rows_dropped_too_long"] += 1
            continue
        counts["rows_truncated"] += kept < len(row["completions"])
        data["input_ids"].append(ids)
        data["completion_mask"].append(mask)
    return Dataset.from_dict(data), counts
