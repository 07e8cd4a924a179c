"""Rollout trees: nodes keyed by step prefix, written as ``nodes`` rows, rebuilt as networkx graphs."""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

from prmfactory.rows import NodesRow


@dataclass(frozen=True)
class Rollout:
    """One completion sampled from a prefix, split into steps and checked."""

    text: str
    steps: tuple[str, ...]
    answer: str | None
    correct: bool
    num_tokens: int


@dataclass
class TreeNode:
    node_id: str
    steps: tuple[str, ...]
    rollouts: list[Rollout] = field(default_factory=list)
    visits: int = 0
    complete: bool = False

    @property
    def mc_value(self) -> float | None:
        """Fraction of rollouts from this prefix that reached the reference answer."""
        if not self.rollouts:
            return None
        return sum(r.correct for r in self.rollouts) / len(self.rollouts)


class SearchTree:
    """The nodes of one question's search; one node per distinct step prefix.

    A node's parent is the node of its longest proper prefix in the tree, found when the rows are
    written, so a search may estimate prefixes in any order (binary search jumps back and forth).
    """

    def __init__(self) -> None:
        self.nodes: dict[str, TreeNode] = {}
        self._by_prefix: dict[tuple[str, ...], str] = {}
        self.root = self.node(())

    def node(self, steps: tuple[str, ...]) -> TreeNode:
        """The node of prefix ``steps``, created if new."""
        existing = self._by_prefix.get(steps)
        if existing is not None:
            return self.nodes[existing]
        node = TreeNode(str(len(self.nodes)), steps)
        self.nodes[node.node_id] = node
        self._by_prefix[steps] = node.node_id
        return node

    def complete(self, steps: tuple[str, ...], rollout: Rollout) -> TreeNode:
        """The node of a finished solution: its one 'rollout' is the empty continuation, already final."""
        node = self.node(steps)
        if not node.rollouts:
            node.rollouts.append(Rollout("", (), rollout.answer, rollout.correct, 0))
            node.complete = True
        return node

    def parent_id(self, node: TreeNode) -> str | None:
        for length in range(len(node.steps) - 1, -1, -1):
            found = self._by_prefix.get(node.steps[:length])
            if found is not None:
                return found
        return None

    @property
    def total_visits(self) -> int:
        return sum(n.visits for n in self.nodes.values())

    def rows(self, question_id: str, strategy: str, segmentation: str) -> list[NodesRow]:
        return [{
            "question_id": question_id, "node_id": n.node_id, "parent_id": self.parent_id(n), "depth": len(n.steps),
            "steps": list(n.steps), "mc_value": n.mc_value, "num_rollouts": len(n.rollouts),
            "num_correct": sum(r.correct for r in n.rollouts), "visits": n.visits, "complete": n.complete,
            "rollouts": [{"text": r.text, "answer": r.answer, "correct": r.correct, "num_tokens": r.num_tokens}
                         for r in n.rollouts],
            "strategy": strategy, "segmentation": segmentation,
        } for n in self.nodes.values()]


def load_tree(run_dir: str, question_id: str) -> nx.DiGraph:
    """A question's search tree from a run folder, as a networkx DiGraph (edges parent -> child)."""
    from prmfactory.store import Run

    return to_graph(Run(run_dir).read("nodes"), question_id)


def to_graph(nodes: pa.Table, question_id: str) -> nx.DiGraph:
    """A question's tree from ``nodes`` rows: node attributes are the row's columns."""
    graph = nx.DiGraph()
    for row in nodes.filter(pa.compute.equal(nodes["question_id"], question_id)).to_pylist():
        graph.add_node(row["node_id"], **row)
        if row["parent_id"] is not None:
            graph.add_edge(row["parent_id"], row["node_id"])
    return graph
