"""Generative PRM: a causal LM fine-tuned with TRL's SFTTrainer to write a critique per step.

Each step's critique is the tool's verification of what the step claims (from verify's verdicts)
and, when the judge put the first error there, the judge's flag; then ``\\boxed{correct}`` or
``\\boxed{incorrect}`` from the fused label. Transcripts are tokenized by
:class:`~prmfactory.train.formats.CritiqueEncoder` and handed to SFTTrainer pre-tokenized, with a
completion mask, so the loss covers the critique only.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from prmfactory.train.formats import CritiqueEncoder


def verification_text(tool_verdict: str | None, claims: Sequence[Mapping[str, Any]] = (),
                      judge_flagged: bool = False) -> str:
    """What a step's critique says before its verdict: each checked claim, ``ok`` or ``wrong: <value found>``."""
    parts = [f"{claim['text']} ok" if claim["verdict"] == "correct" else f"{claim['text']} wrong: {claim['value_found']}"
             for claim in claims if claim["verdict"] in ("correct", "incorrect")]
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
