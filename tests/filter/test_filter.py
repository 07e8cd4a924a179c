import pytest

from prmfactory.filter.rules import (HybridWeights, PathEvidence, consensus_labels, first_error, hybrid_labels,
                                     mc_labels, rpe_labels)
from prmfactory.filter.config import FilterConfig
from prmfactory.stages import execute
from prmfactory.store import Run
from tests.store.test_store import problem


def path(mc, tool=None, judge=None, root=0.5, steps=None):
    n = len(mc)
    return PathEvidence(question_id="q", prompt="P", steps=steps or [f"s{i}" for i in range(n)],
                        node_ids=[str(i + 1) if v is not None else None for i, v in enumerate(mc)], mc=mc,
                        mc_rollouts=[8 if v is not None else 0 for v in mc[:-1]] + [1], tool=tool or [None] * n,
                        root_mc=root, judge_first_error=judge, judge_votes=[judge] if judge is not None else [])


def test_mc_hard_and_soft_labels_from_full_estimates():
    result = mc_labels(path([0.75, 0.5, 0.0, 0.0]))
    assert result.labels == [True, True, False, False] and result.soft == [0.75, 0.5, 0.0, 0.0]


def test_mc_fills_omegaprm_gaps_from_the_binary_search():
    # binary search estimated steps 1 (> 0) and 2 (= 0): the first error is step 2; the answer is wrong
    result = mc_labels(path([None, 0.5, 0.0, None, None, 0.0]))
    assert result.labels == [True, True, False, False, False, False]
    assert result.soft == [0.5, 0.5, 0.0, 0.0, 0.0, 0.0]
    correct_solution = mc_labels(path([None, None, 1.0]))
    assert correct_solution.labels == [True, True, True] and correct_solution.soft == [1.0, 1.0, 1.0]


def test_mc_stops_where_no_estimate_decides():
    # step 0 can still succeed; the error is somewhere in steps 1-3 but no estimate says where
    result = mc_labels(path([0.5, None, None, 0.0]))
    assert result.labels == [True] and result.keep
    undecided = mc_labels(path([None, None, 0.0]))  # a wrong solution never searched: nothing to label
    assert undecided.labels == [] and not undecided.keep


@pytest.mark.parametrize("judge, keep", [(2, True), (1, False), (-1, False), (None, False)])
def test_consensus_keeps_only_agreeing_paths(judge, keep):
    result = consensus_labels(path([0.75, 0.5, 0.0, 0.0], judge=judge))
    assert result.keep is keep
    assert consensus_labels(path([0.5, 1.0], judge=-1)).keep


def test_hybrid_never_labels_a_tool_refuted_step_correct():
    evidence = path([1.0, 1.0, 1.0], tool=["correct", "incorrect", "correct"], judge=-1)
    result = hybrid_labels(evidence)
    assert result.labels == [True, False, False]
    assert result.soft[1] == pytest.approx((0.4 * 1 + 0.3 * 1 + 0.2 * 0 + 0.1 * 1) / 1.0)


def test_hybrid_weighs_the_available_signals():
    weights = HybridWeights(mc=0.4, judge=0.3, tool=0.2, outcome=0.1)
    evidence = path([0.25, 0.0], judge=0)  # judge says step 0 is wrong; answer wrong
    result = hybrid_labels(evidence, weights)
    assert result.soft[0] == pytest.approx((0.4 * 0.25 + 0.3 * 0 + 0.1 * 0) / 0.8)
    assert result.labels == [False, False]


def test_rpe_relative_progress():
    result = rpe_labels(path([0.5, 0.45, 0.2, 0.0], root=0.5), epsilon=0.8)
    assert result.labels == [True, True, False, False]
    assert result.soft[:2] == pytest.approx([1.0, 0.9])
    assert first_error(result.labels) == 2


def node(qid, node_id, steps, mc, rollouts, complete=False):
    return {"question_id": qid, "node_id": node_id, "parent_id": None, "depth": len(steps), "steps": steps,
            "mc_value": mc, "num_rollouts": rollouts, "num_correct": 0, "visits": 0, "complete": complete,
            "rollouts": [], "strategy": "omegaprm", "segmentation": "blank_line"}


@pytest.fixture
def labelled_run(tmp_path):
    run = Run(tmp_path / "run")
    nodes = [node("q1", "0", [], 0.5, 8), node("q1", "1", ["a"], 0.75, 8), node("q1", "2", ["a", "b"], 0.0, 8),
             node("q1", "3", ["a", "b", "c"], 0.0, 1, complete=True), node("q1", "4", ["a", "d"], 1.0, 1, complete=True),
             node("q1", "5", ["a", "x"], 1.0, 2),  # an estimate with 2 rollouts on another path
             node("q1", "6", ["a", "x", "y"], 1.0, 1, complete=True),
             node("q2", "0", [], 1.0, 8), node("q2", "1", ["z"], 1.0, 1, complete=True)]
    verdicts = [{"question_id": "q1", "node_id": "3", "step_index": i, "verdict": v, "claims": []}
                for i, v in enumerate(["correct", "incorrect", "unverifiable"])]
    judgements = [{"question_id": "q1", "node_id": "3", "status": "ok", "mode": "critic", "judge_model": "j", "votes": [1, 1, 2],
                   "first_error": 1, "majority_votes": 2, "malformed": 0, "raw_outputs": ["", "", ""]}]
    with run.writing():
        run.commit({"problems": [problem("q1"), problem("q2")], "nodes": nodes, "verdicts": verdicts,
                    "judgements": judgements})
    return run


def test_filter_stage_writes_loadable_steps_and_a_report_that_adds_up(labelled_run):
    report = execute("filter", labelled_run, FilterConfig(rule="mc", min_rollouts=4, quiet=True))
    assert report.rows_in == 4 and report.counts["rule_kept"] == 4
    rows_in = report.counts["rule_kept"]
    for entry in report.details["filters"]:
        assert entry["rows_in"] == rows_in and entry["rows_in"] - entry["rows_removed"] == entry["rows_out"]
        rows_in = entry["rows_out"]
    assert rows_in == report.rows_out
    assert report.rows_in - report.rows_out == sum(report.dropped.values())  # every drop has a reason
    rejected = labelled_run.read("rejected").to_pylist()
    assert len(rejected) == sum(report.dropped.values()) and {r["reason"] for r in rejected} == set(report.dropped)
    assert report.dropped == {"min_rollouts": 1} and report.details["keep_rate"] == 0.75
    by_filter = {e["filter"]: e for e in report.details["filters"]}
    assert by_filter["drop_after_first_error"]["steps_removed"] == 1  # "c" after the error at "b"
    assert by_filter["min_rollouts"]["rows_removed"] == 1  # the path through the 2-rollout estimate
    rows = {tuple(r["completions"]): r for r in labelled_run.read("steps").to_pylist()}
    assert set(rows) == {("a", "b"), ("a", "d"), ("z",)}
    wrong = rows[("a", "b")]
    assert wrong["labels"] == [True, False] and wrong["soft_labels"] == [0.75, 0.0]
    assert wrong["prompt"] == "pq1" and wrong["source_node_ids"] == ["1", "2"] and wrong["mc_rollouts"] == [8, 8]
    assert wrong["tool_verdicts"] == ["correct", "incorrect"] and wrong["judge_first_error"] == 1
    assert wrong["rule"] == "mc"

    from datasets import load_dataset

    dataset = load_dataset("parquet", data_files=[str(p) for p in labelled_run.shard_paths("steps")], split="train")
    assert dataset.num_rows == 3 and dataset.features["labels"].feature.dtype == "bool"


def test_filter_rerun_is_a_no_op_and_a_changed_rule_needs_force(labelled_run):
    from prmfactory.errors import UsageError

    execute("filter", labelled_run, FilterConfig(rule="mc", quiet=True))
    again = execute("filter", labelled_run, FilterConfig(rule="mc", quiet=True))
    assert again.already_done and again.rows_out == labelled_run.read("steps").num_rows
    with pytest.raises(UsageError, match="--force"):
        execute("filter", labelled_run, FilterConfig(rule="consensus", quiet=True))
    report = execute("filter", labelled_run, FilterConfig(rule="consensus", quiet=True), force=True)
    assert report.counts["rule_kept"] == 1 and report.dropped == {"not_judged": 3}
    assert [r["reason"] for r in labelled_run.read("rejected").to_pylist()] == ["not_judged"] * 3
    assert [r["completions"] for r in labelled_run.read("steps").to_pylist()] == [["a", "b"]]


def test_balance_keeps_equal_positive_and_negative_rows(labelled_run):
    report = execute("filter", labelled_run, FilterConfig(rule="mc", balance=True, quiet=True))
    labels = [all(r["labels"]) for r in labelled_run.read("steps").to_pylist()]
    assert labels.count(True) == labels.count(False) == 1 and report.rows_out == 2


def test_grounded_trusts_the_tool_where_it_has_a_verdict_and_mc_elsewhere():
    from prmfactory.filter.rules import grounded_labels

    # the tool proves step 1 correct although every rollout from it failed (a weak policy), and step 2 wrong
    tool = path([0.5, 0.0, 0.0, 0.0])
    tool.tool = ["unverifiable", "correct", "incorrect", "correct"]
    assert grounded_labels(tool).labels == [True, True, False]
    # no verdict anywhere: the mc rule, MC = 0 is the first error
    plain = path([0.5, 0.0, 0.0])
    plain.tool = [None, None, None]
    assert grounded_labels(plain).labels == [True, False] and first_error(mc_labels(plain).labels) == 1
    # nothing decides the first step: the path is dropped with a slug
    undecided = path([None, None, 0.0])
    undecided.tool = ["unverifiable", None, None]
    assert grounded_labels(undecided).keep is False and grounded_labels(undecided).reason == "no_decisive_estimate"


def test_dedupe_runs_after_the_truncation_that_makes_rows_identical(labelled_run):
    with labelled_run.writing():  # a second solution through the wrong step "b": identical once truncated there
        labelled_run.commit({"nodes": [node("q1", "7", ["a", "b", "e"], 0.0, 1, complete=True)]})
    report = execute("filter", labelled_run, FilterConfig(rule="mc", quiet=True))
    names = [entry["filter"] for entry in report.details["filters"]]
    assert names.index("drop_after_first_error") < names.index("dedupe")
    rows = [(r["question_id"], tuple(r["completions"]), tuple(r["labels"])) for r in labelled_run.read("steps").to_pylist()]
    assert len(rows) == len(set(rows))
    # a copy's labels reach the training rows through the row it copies: dedupe costs no keep-rate
    assert report.dropped == {"dedupe": 1} and report.details["keep_rate"] == 1.0
    assert report.details["distinct_rate"] == report.rows_out / report.rows_in == 0.8


def test_a_report_of_an_older_version_makes_filter_recompute(labelled_run):
    execute("filter", labelled_run, FilterConfig(rule="mc", quiet=True))
    (labelled_run.root / "reports" / "filter.json").write_text('{"stage": "filter", "solutions": 4, "rule_kept": 4}')
    again = execute("filter", labelled_run, FilterConfig(rule="mc", quiet=True))
    assert not again.already_done and again.rows_out == labelled_run.read("steps").num_rows > 0
