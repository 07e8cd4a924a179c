"""OmegaPRM: MCTS with binary search for the first error (Luo et al. 2024, arXiv:2406.06592).

1. k rollouts from the question. If all are right or all wrong there is no error to locate: the
   question is pre-filtered (recorded with that status, its root node kept).
2. Every wrong rollout ``r`` of a state ``s`` with 0 < MC(s) < 1 enters the candidate pool.
3. Select the pair maximising Q(s, r) + U(s):
   Q(s, r) = alpha^(1 - MC(s)) * beta^(len(r) / L), U(s) = c_puct * sqrt(sum N) / (1 + N(s)).
   The selected state's visit count N(s) is incremented (openr's implementation never does, which
   makes U constant), and the pair leaves the pool for good.
4. Binary search along ``r``: estimate MC of the midpoint prefix with k rollouts; MC > 0 means the
   first error is later, MC = 0 that it is at or before the midpoint. Each estimated prefix becomes
   a node; its wrong rollouts join the pool when 0 < MC < 1. The prefix found with MC = 0 and a
   parent with MC > 0 ends at the first error step.
5. Repeat until the pool is empty or the next estimate would exceed the rollout budget.

Every rollout is also written as a complete solution (a ``complete`` node), so the judge and the
filter see the solutions the search sampled, labelled by the estimates along their path.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from prmfactory.search.outcome import SearchOutcome
from prmfactory.search.rollouts import QuestionContext
from prmfactory.search.tree import Rollout, SearchTree, TreeNode


@dataclass(frozen=True)
class OmegaParams:
    rollouts: int = 16
    budget: int = 200
    c_puct: float = 0.125
    alpha: float = 0.5
    beta: float = 0.9
    length_scale: int = 500


@dataclass(frozen=True)
class Candidate:
    node_id: str
    rollout_index: int


def score(node: TreeNode, rollout: Rollout, total_visits: int, params: OmegaParams) -> float:
    """Q(s, r) + U(s) of a candidate pair."""
    mc = node.mc_value or 0.0
    q = params.alpha ** (1 - mc) * params.beta ** (rollout.num_tokens / params.length_scale)
    u = params.c_puct * math.sqrt(total_visits) / (1 + node.visits)
    return q + u


class OmegaSearch:
    """The search state of one question."""

    def __init__(self, context: QuestionContext, params: OmegaParams, rng: random.Random):
        self.context, self.params, self.rng = context, params, rng
        self.tree = SearchTree()
        self.pool: list[Candidate] = []

    @property
    def spent(self) -> int:
        return self.context.rollouts_made

    def _can_estimate(self) -> bool:
        return self.spent + self.params.rollouts <= self.params.budget

    def _offer(self, node: TreeNode) -> None:
        """Put the node's wrong rollouts into the pool when its value is strictly between 0 and 1."""
        if node.mc_value is not None and 0 < node.mc_value < 1:
            self.pool.extend(Candidate(node.node_id, i) for i, r in enumerate(node.rollouts) if not r.correct and r.steps)

    async def _estimate(self, node: TreeNode) -> None:
        """k rollouts from ``node``; each finished rollout is also kept as a complete solution of the tree."""
        if not node.rollouts:
            node.rollouts.extend(await self.context.rollouts(node.steps, self.params.rollouts))
            for rollout in node.rollouts:
                if rollout.steps:
                    self.tree.complete(node.steps + rollout.steps, rollout)
            self._offer(node)

    def select(self) -> Candidate:
        """Pop the candidate with the highest Q + U (ties broken by the seeded RNG)."""
        total = self.tree.total_visits
        scored = [(score(self.tree.nodes[c.node_id], self.tree.nodes[c.node_id].rollouts[c.rollout_index], total,
                         self.params), self.rng.random(), i) for i, c in enumerate(self.pool)]
        _, _, best = max(scored)
        candidate = self.pool.pop(best)
        self.tree.nodes[candidate.node_id].visits += 1
        return candidate

    async def binary_search(self, candidate: Candidate) -> TreeNode | None:
        """Locate the first wrong step of the candidate rollout; returns the MC = 0 node found (if any)."""
        state = self.tree.nodes[candidate.node_id]
        rollout = state.rollouts[candidate.rollout_index]
        steps = rollout.steps
        low, high = 1, len(steps)  # prefix lengths: MC(state) > 0 and the full rollout is wrong
        while low < high:
            middle = (low + high) // 2
            node = self.tree.node(state.steps + steps[:middle])
            if not node.rollouts:
                if not self._can_estimate():
                    return None
                await self._estimate(node)
            if (node.mc_value or 0) > 0:
                low = middle + 1
            else:
                high = middle
        if high == len(steps):
            return self.tree.complete(state.steps + steps, rollout)
        return self.tree.node(state.steps + steps[:high])

    async def run(self) -> SearchOutcome:
        await self._estimate(self.tree.root)
        accuracy = self.tree.root.mc_value
        if accuracy == 1:
            return SearchOutcome("prefiltered_all_correct", self.tree, accuracy, "all initial rollouts correct")
        if accuracy == 0:
            return SearchOutcome("prefiltered_all_wrong", self.tree, accuracy, "all initial rollouts wrong")
        while self.pool and self._can_estimate():
            await self.binary_search(self.select())
        return SearchOutcome("searched", self.tree, accuracy)


async def search_omegaprm(context: QuestionContext, params: OmegaParams, rng: random.Random) -> SearchOutcome:
    return await OmegaSearch(context, params, rng).run()
