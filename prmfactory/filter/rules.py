"""Label rules: from one solution's evidence (MC values, tool verdicts, judge votes) to step labels.

The evidence of a solution path (:class:`PathEvidence`) lines up, step by step, the MC value of
the step's prefix when the search estimated it, the tool verdict, and the judge's first-error
vote for the whole path. The last step's value is the solution's own final-answer outcome.

* ``mc`` (Math-Shepherd, Wang et al. 2024): hard label = the prefix can still reach the answer
  (its MC value, or that of a later prefix on the same path, is > 0); soft label = the MC value.
  Prefixes the search did not estimate take the value of the nearest later estimate (OmegaPRM's
  binary search leaves gaps); a step no estimate decides ends the labelled path there.
* ``consensus`` (Qwen2.5-Math-PRM, Zhang et al. 2025): the mc labels, kept only when the MC first
  error equals the judge's majority first error.
* ``hybrid`` (after GroundedPRM, Zhang et al. 2025): score = weighted mean of the available
  signals — soft MC value, judge (1 before its first error, 0 from it on), tool (1 correct,
  0 incorrect; unverifiable contributes nothing) and the final-answer outcome; label = score ≥
  0.5. A step the tool proves wrong is never labelled correct, and once a step is wrong so are
  the steps after it.
* ``rpe`` (GenPRM, Zhao et al. 2025): relative progress MC(s_t) / MC(s_{t−1}) ≥ ε (the root's MC
  value before the first step); once a step fails, the rest do.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PathEvidence:
    question_id: str
    prompt: str
    steps: list[str]
    node_ids: list[str | None]
    mc: list[float | None]
    mc_rollouts: list[int]
    tool: list[str | None]
    root_mc: float | None
    judge_first_error: int | None = None
    judge_votes: list[int | None] = field(default_factory=list)
    segmentation: str = "blank_line"  # how the steps were split (carried into the training rows)

    @property
    def outcome(self) -> bool:
        return bool(self.mc[-1])


@dataclass
class Labels:
    """A rule's labels for one path; ``keep`` false drops the path, ``reason`` is the slug saying why."""

    labels: list[bool]
    soft: list[float]
    keep: bool = True
    reason: str | None = None


def mc_labels(path: PathEvidence) -> Labels:
    labels: list[bool] = []
    soft: list[float] = []
    for index in range(len(path.steps)):
        later = [v for v in path.mc[index:] if v is not None]
        if any(v > 0 for v in later):
            labels.append(True)
            soft.append(path.mc[index] if path.mc[index] is not None else next(v for v in later if v > 0))
        elif any(v == 0 for v in path.mc[:index + 1] if v is not None):
            labels.append(False)
            soft.append(0.0)
        else:
            break  # no estimate decides this step
    return Labels(labels, soft, keep=bool(labels), reason=None if labels else "no_decisive_estimate")


def first_error(labels: list[bool]) -> int:
    return next((i for i, label in enumerate(labels) if not label), -1)


def consensus_labels(path: PathEvidence) -> Labels:
    result = mc_labels(path)
    if path.judge_first_error is None:
        return Labels(result.labels, result.soft, False, "not_judged")
    mc_error = first_error(result.labels)
    if len(result.labels) < len(path.steps) and mc_error == -1:
        return Labels(result.labels, result.soft, False, "mc_undecided")
    if mc_error != path.judge_first_error:
        return Labels(result.labels, result.soft, False, "mc_judge_disagree")
    return result


def _monotone(labels: list[bool]) -> list[bool]:
    error = first_error(labels)
    return labels if error == -1 else labels[:error] + [False] * (len(labels) - error)


@dataclass(frozen=True)
class HybridWeights:
    mc: float = 0.4
    judge: float = 0.3
    tool: float = 0.2
    outcome: float = 0.1


def hybrid_labels(path: PathEvidence, weights: HybridWeights = HybridWeights()) -> Labels:
    mc = mc_labels(path)
    labels, soft = [], []
    for index in range(len(path.steps)):
        signals: list[tuple[float, float]] = [(weights.outcome, float(path.outcome))]
        if index < len(mc.soft):
            signals.append((weights.mc, mc.soft[index]))
        if path.judge_first_error is not None:
            wrong = path.judge_first_error != -1 and index >= path.judge_first_error
            signals.append((weights.judge, 0.0 if wrong else 1.0))
        if path.tool[index] in ("correct", "incorrect"):
            signals.append((weights.tool, 1.0 if path.tool[index] == "correct" else 0.0))
        score = sum(w * v for w, v in signals) / sum(w for w, _ in signals)
        soft.append(round(score, 6))
        labels.append(score >= 0.5 and path.tool[index] != "incorrect")
    return Labels(_monotone(labels), soft)


def rpe_labels(path: PathEvidence, epsilon: float = 0.8) -> Labels:
    mc = mc_labels(path)
    labels, soft = [], []
    previous = path.root_mc
    for value in mc.soft:
        if previous is None:
            break
        ratio = value / previous if previous > 0 else 0.0
        labels.append(ratio >= epsilon)
        soft.append(min(ratio, 1.0))
        previous = value
    if not labels:
        return Labels([], [], False, "no_root_mc")
    return Labels(_monotone(labels), soft)


def grounded_labels(path: PathEvidence) -> Labels:
    """Tool-grounded labels (after GroundedPRM, Zhang et al. 2025): the tool where it has a verdict, MC elsewhere.

    Step by step, in order: a step the tool proves ``incorrect`` is the first error (its negatives
    are exact: arithmetic, and the final answer against the reference); a step whose claims it
    proves ``correct`` is correct, whatever its MC value — with a weak policy every rollout fails
    from many correct prefixes, so MC = 0 there is noise; where the tool has no verdict
    (``unverifiable``: on real data most reasoning steps) the ``mc`` rule decides, and a step
    nothing decides ends the labelled path. Measured against the toy oracle in BENCHMARKS.md
    ("Label quality"): a correct verdict is wrong only where a right computation uses a wrong
    quantity. Soft labels: 1 / 0 where the tool decided, else the MC value.
    """
    mc = mc_labels(path)
    labels: list[bool] = []
    soft: list[float] = []
    for index, verdict in enumerate(path.tool):
        if verdict in ("incorrect", "correct"):
            labels.append(verdict == "correct")
            soft.append(float(verdict == "correct"))
        elif index < len(mc.labels):
            labels.append(mc.labels[index])
            soft.append(mc.soft[index])
        else:
            break  # nothing decides this step
        if not labels[-1]:
            break
    if not labels:
        return Labels([], [], False, "no_decisive_estimate")
    return Labels(labels, soft)
