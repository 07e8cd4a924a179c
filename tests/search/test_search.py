import asyncio
import random

import pytest

from prmfactory.answers import AnswerChecker
from prmfactory.engines.base import Message, SamplingSpec
from prmfactory.search.montecarlo import search_mc
from prmfactory.search.omegaprm import Candidate, OmegaParams, OmegaSearch, search_omegaprm
from prmfactory.search.rollouts import QuestionContext
from prmfactory.search.tree import SearchTree, to_graph
from prmfactory import schemas
from prmfactory.steps import Segmenter
from tests.scripted_engine import ANSWER, ScriptedEngine


@pytest.fixture(scope="module")
def checker():
    with AnswerChecker(timeout_s=10) as c:
        yield c


def context(engine, checker):
    return QuestionContext("q", ANSWER, (Message("user", "problem"),), engine, checker, Segmenter(), SamplingSpec())


def test_rollouts_are_split_and_checked(checker):
    engine = ScriptedEngine(lambda prefix: 1.0)
    rollouts = asyncio.run(context(engine, checker).rollouts(("T0",), 2))
    assert rollouts[0].steps == ("T1", "T2", "T3", "T4", "T5", "The answer is \\boxed{42}.")
    assert rollouts[0].answer == "42" and rollouts[0].correct


def test_mc_estimates_converge_to_the_known_probability(checker):
    probability = {0: 0.8, 1: 0.6, 2: 0.5, 3: 0.3, 4: 0.2, 5: 0.1, 6: 0.1}
    engine = ScriptedEngine(lambda prefix: probability[len(prefix)], seed=1)
    outcome = asyncio.run(search_mc(context(engine, checker), num_solutions=3, rollouts=800))
    estimated = [n for n in outcome.tree.nodes.values() if len(n.rollouts) == 800]
    assert estimated
    for node in estimated:
        truth = 0.0 if any(s.startswith("BAD") for s in node.steps) else probability[len(node.steps)]
        assert node.mc_value == pytest.approx(truth, abs=0.06)
    leaves = [n for n in outcome.tree.nodes.values() if len(n.rollouts) == 1]
    assert leaves and all(n.rollouts[0].text == "" for n in leaves)


def test_binary_search_finds_the_planted_first_error(checker):
    engine = ScriptedEngine(lambda prefix: 0.5, bad_at=3, seed=2)
    search = OmegaSearch(context(engine, checker), OmegaParams(rollouts=8, budget=10_000), random.Random(0))
    asyncio.run(search._estimate(search.tree.root))
    wrong = [c for c in search.pool]
    assert wrong, "the root has wrong rollouts"
    found = asyncio.run(search.binary_search(search.select()))
    assert found.steps[-1] == "BAD 3" and found.mc_value == 0
    for node in search.tree.nodes.values():
        has_bad = any(s.startswith("BAD") for s in node.steps)
        assert (node.mc_value == 0) == has_bad or node is search.tree.root


def test_binary_search_uses_logarithmically_many_estimates(checker):
    engine = ScriptedEngine(lambda prefix: 0.5, num_steps=16, bad_at=11, seed=3)
    search = OmegaSearch(context(engine, checker), OmegaParams(rollouts=4, budget=10_000), random.Random(0))
    asyncio.run(search._estimate(search.tree.root))
    before = len(engine.calls)
    found = asyncio.run(search.binary_search(search.select()))
    assert found.steps[-1] == "BAD 11"
    assert len(engine.calls) - before <= 5  # ceil(log2(17))


def test_visits_and_budget_accounting_are_exact(checker):
    engine = ScriptedEngine(lambda prefix: 0.5, seed=4)
    ctx = context(engine, checker)
    params = OmegaParams(rollouts=8, budget=90)
    search = OmegaSearch(ctx, params, random.Random(0))
    selected: list[Candidate] = []
    real_select = search.select

    def spy():
        candidate = real_select()
        assert candidate not in search.pool
        selected.append(candidate)
        return candidate

    search.select = spy
    outcome = asyncio.run(search.run())
    assert outcome.status == "searched"
    assert len(selected) == len(set(selected)), "a popped rollout was selected again"
    assert search.tree.total_visits == len(selected) > 0
    sampled = sum(n for _, n in engine.calls)
    assert ctx.rollouts_made == sampled <= params.budget
    assert sampled + params.rollouts > params.budget or not search.pool
    real_rollouts = sum(len(n.rollouts) for n in search.tree.nodes.values() if not (n.rollouts and n.rollouts[0].text == ""))
    assert real_rollouts == sampled


def test_u_term_changes_with_visits():
    from prmfactory.search.omegaprm import score
    from prmfactory.search.tree import Rollout, TreeNode

    node = TreeNode("1", ("a",), [Rollout("x", ("x",), "0", False, 10), Rollout("y", ("y",), "42", True, 10)])
    params = OmegaParams()
    fresh = score(node, node.rollouts[0], total_visits=4, params=params)
    node.visits = 3
    assert score(node, node.rollouts[0], total_visits=4, params=params) < fresh


@pytest.mark.parametrize("probability, status", [(1.0, "prefiltered_all_correct"), (0.0, "prefiltered_all_wrong")])
def test_prefilter_records_status(checker, probability, status):
    engine = ScriptedEngine(lambda prefix: probability)
    outcome = asyncio.run(search_omegaprm(context(engine, checker), OmegaParams(rollouts=4), random.Random(0)))
    assert outcome.status == status and outcome.reason
    assert [n for n in outcome.tree.nodes.values() if not n.complete] == [outcome.tree.root]
    assert len(engine.calls) == 1
    assert all(n.mc_value == probability for n in outcome.tree.nodes.values() if n.complete)


def test_tree_rows_validate_and_rebuild_as_graph(checker):
    engine = ScriptedEngine(lambda prefix: 0.5, seed=5)
    outcome = asyncio.run(search_omegaprm(context(engine, checker), OmegaParams(rollouts=4, budget=60), random.Random(0)))
    rows = outcome.tree.rows("q", "omegaprm", "blank_line")
    table = schemas.load("nodes").table(rows)
    graph = to_graph(table, "q")
    assert graph.number_of_nodes() == len(rows)
    import networkx as nx

    assert nx.is_arborescence(graph)
    for parent, child in graph.edges:
        parent_steps, child_steps = graph.nodes[parent]["steps"], graph.nodes[child]["steps"]
        assert child_steps[: len(parent_steps)] == parent_steps and len(child_steps) > len(parent_steps)


def test_load_tree_from_a_run(checker, tmp_path):
    from prmfactory.search.tree import load_tree
    from prmfactory.store import Run

    engine = ScriptedEngine(lambda prefix: 0.5, seed=6)
    outcome = asyncio.run(search_omegaprm(context(engine, checker), OmegaParams(rollouts=4, budget=40), random.Random(0)))
    run = Run(tmp_path)
    with run.writing():
        run.commit({"nodes": outcome.tree.rows("q", "omegaprm", "blank_line")})
    graph = load_tree(str(tmp_path), "q")
    assert graph.number_of_nodes() == len(outcome.tree.nodes) and graph.nodes["0"]["depth"] == 0


def test_tree_parent_is_the_longest_existing_prefix():
    tree = SearchTree()
    deep = tree.node(("a", "b", "c"))
    middle = tree.node(("a",))
    assert tree.parent_id(deep) == middle.node_id and tree.parent_id(middle) == tree.root.node_id
