"""Math-Shepherd per-step Monte-Carlo estimation (Wang et al. 2024, "Math-Shepherd").

Sample ``num_solutions`` solutions; for every proper step prefix of each, sample ``rollouts``
completions. A prefix's value is the fraction that reach the reference answer (the soft label);
the hard label is "any reached it" (MC > 0), derived later by the filter. A complete solution's
own node takes its final answer's correctness.
"""

from __future__ import annotations

import asyncio

from prmfactory.search.outcome import SearchOutcome
from prmfactory.search.rollouts import QuestionContext
from prmfactory.search.tree import SearchTree


async def search_mc(context: QuestionContext, *, num_solutions: int, rollouts: int) -> SearchOutcome:
    tree = SearchTree()
    solutions = await context.rollouts((), num_solutions)
    tree.root.rollouts.extend(solutions)
    pending = []
    for solution in solutions:
        for length in range(1, len(solution.steps) + 1):
            prefix = solution.steps[:length]
            if length == len(solution.steps):
                tree.complete(prefix, solution)
                continue
            node = tree.node(prefix)
            if not node.rollouts and node not in pending:
                pending.append(node)
    results = await asyncio.gather(*(context.rollouts(node.steps, rollouts) for node in pending))
    for node, sampled in zip(pending, results):
        node.rollouts.extend(sampled)
    accuracy = tree.root.mc_value
    return SearchOutcome("searched", tree, accuracy)
