"""The package's layering, from its imports (lazy ones inside functions too): no circle between its
modules and packages, and none of the imports the layout forbids (docs/architecture.md).

A new import that runs upward (e.g. ``prmfactory/prm/`` importing the trainer) fails here, naming the file.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "prmfactory"
ENTRY_POINTS = {"cli", "demo", "pipeline"}
# unit -> units it must never import: the trained PRM and the run store are bases; the runner does not know
# the stages it runs (it loads them by name); evaluation, training, serving and RL stand side by side.
FORBIDDEN = {
    "prm": {"train", "eval", "serve", "rl", "grpo", "stages", "bookkeeping", "store", "work", "search", "verify",
            "judge", "filter", *ENTRY_POINTS},
    "store": {"stages", "bookkeeping", "work", "prm", "train", "eval", "serve", "rl", "search", "verify", "judge",
              "filter", *ENTRY_POINTS},
    "stages": {"search", "verify", "judge", "filter", "train", "eval", "serve", "rl", *ENTRY_POINTS},
    "bookkeeping": {"stages", "work", "train", "eval", "serve", "rl", *ENTRY_POINTS},
    "train": {"eval", "serve", "rl", "grpo", *ENTRY_POINTS},
    "eval": {"train", "serve", "rl", "grpo", *ENTRY_POINTS},
    "serve": {"train", "eval", "rl", "grpo", "stages", "store", *ENTRY_POINTS},
    "rl": {"train", "eval", "stages", "store", *ENTRY_POINTS},
}


def _unit(module: str) -> str:
    """``prmfactory.prm.heads.probe`` → ``prm``: a top-level module or package of prmfactory."""
    return module.split(".")[1]


def _imports() -> dict[str, dict[str, str]]:
    """unit → {imported unit: the first file that imports it}."""
    graph: dict[str, dict[str, str]] = defaultdict(dict)
    for file in sorted(PACKAGE.rglob("*.py")):
        importer = file.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                target = _unit(name) if name.startswith("prmfactory.") else None
                if target and target != importer and ((PACKAGE / target).is_dir() or (PACKAGE / f"{target}.py").is_file()):
                    graph[importer].setdefault(target, str(file.relative_to(PACKAGE.parent)))
    return graph


def test_no_unit_imports_what_the_layout_forbids():
    graph = _imports()
    wrong = [f"{graph[unit][target]} imports prmfactory.{target}" for unit, targets in FORBIDDEN.items()
             for target in sorted(targets & set(graph[unit]))]
    assert not wrong, wrong


def test_no_circle_between_units():
    graph = _imports()
    circles, state = [], {}

    def visit(unit: str, path: list[str]) -> None:
        state[unit] = "open"
        for target in graph.get(unit, {}):
            if state.get(target) == "open":
                circles.append(" -> ".join(path[path.index(target):] + [unit, target]) if target in path else
                               f"{unit} -> {target}")
            elif target not in state:
                visit(target, path + [unit])
        state[unit] = "done"

    for unit in sorted(graph):
        if unit not in state:
            visit(unit, [])
    assert not circles, circles


def test_the_rules_name_real_units():
    units = {path.stem for path in PACKAGE.glob("*.py")} | {path.name for path in PACKAGE.iterdir() if path.is_dir()}
    named = set(FORBIDDEN) | {u for targets in FORBIDDEN.values() for u in targets}
    assert named <= units, named - units
