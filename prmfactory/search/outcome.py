"""What a search strategy returns for one question."""

from __future__ import annotations

from dataclasses import dataclass

from prmfactory.search.tree import SearchTree


@dataclass
class SearchOutcome:
    status: str
    tree: SearchTree
    initial_accuracy: float | None
    reason: str | None = None
