"""The trained process reward model: its folder format, its encoding, its heads and its scorers.

``from prmfactory.prm import PRM``: ``PRM.from_pretrained(folder).score(problem, steps)``. The base
that train-prm, the evaluations, the server and the RL adapters build on; it imports none of them.

* :mod:`~prmfactory.prm.encoding` — the one tokenisation of (problem, steps), shared by training and scoring.
* :mod:`~prmfactory.prm.heads` — discriminative heads by name (``token``, ``probe``), one module each.
* :mod:`~prmfactory.prm.folder` — ``prm.json``, the model card, the folder's checks.
* :mod:`~prmfactory.prm.scoring` / :mod:`~prmfactory.prm.scorers` — batched reading; runners per kind and backend.
* :mod:`~prmfactory.prm.public` / :mod:`~prmfactory.prm.qwen2` — public PRM formats (Qwen2.5-Math-PRM, Math-Shepherd, RLHFlow).
* :mod:`~prmfactory.prm.rewards` — step scores → first error and one reward (no torch).
"""

from prmfactory.prm.model import PRM, score_with_progress
from prmfactory.prm.rewards import AGGREGATIONS, Item, StepReward, aggregate, first_below, step_reward

__all__ = ["AGGREGATIONS", "Item", "PRM", "StepReward", "aggregate", "first_below", "score_with_progress", "step_reward"]
