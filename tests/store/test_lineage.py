"""Lineage: after an upstream rerun, no downstream output computed from the old upstream data is ever read.

The stages run through the real runner (`prmfactory.stages.execute`); mcts and judge use scripted
engines (patched in for `open_engine`), so a whole upstream rerun takes milliseconds.
"""

from __future__ import annotations

import contextlib
import json
import shutil

import pytest

from prmfactory.errors import UsageError
from prmfactory.filter.config import FilterConfig
from prmfactory.judge.config import JudgeConfig
from prmfactory.search.config import MctsConfig
from prmfactory.stages import StageInput, downstream_of, execute
from prmfactory.store import Lineage, Run
from prmfactory.train.config import TrainPrmConfig
from prmfactory.verify.config import VerifyConfig
from tests.conftest import write_numbered_problems
from tests.scripted_engine import ScriptedEngine
from tests.judge.test_judge import ScriptedJudge


@pytest.fixture
def scripted(monkeypatch):
    """mcts searches with the scripted policy (seeded by the config), judge votes with a scripted judge."""

    @contextlib.asynccontextmanager
    async def engine(model, engine_config, seed, metrics):
        if model == "scripted-judge":
            yield ScriptedJudge(["\\boxed{1}"])
        else:
            yield ScriptedEngine(lambda prefix: 0.5, num_steps=3, bad_at=1, seed=seed)

    monkeypatch.setattr("prmfactory.engines.open_engine", engine)


@pytest.fixture
def problems(tmp_path):
    return write_numbered_problems(tmp_path / "problems.jsonl", 4, "Problem {i}?")


def mcts(run: Run, problems, seed: int = 0, force: bool = False):
    config = MctsConfig(policy="scripted", rollouts=4, budget=12, seed=seed, commit_every=2, quiet=True)
    return execute("mcts", run, config, force=force, source=StageInput(problems))


def node_keys(run: Run) -> set[tuple[str, str, tuple[str, ...]]]:
    return {(n["question_id"], n["node_id"], tuple(n["steps"])) for n in run.read("nodes").to_pylist()}


def fresh_copy(run: Run, folder, keep: tuple[str, ...]) -> Run:
    """The run with only ``keep`` datasets, to recompute downstream from scratch for comparison."""
    shutil.copytree(run.root, folder)
    copy = Run(folder)
    with copy.writing():
        copy.set_aside([d for d in copy.datasets() if d not in keep])
        copy.drop_aside()
    return copy


def verdict_rows(run: Run) -> list[tuple]:
    return sorted((v["question_id"], v["node_id"], v["step_index"], v["verdict"]) for v in run.read("verdicts").to_pylist())


def test_force_discards_everything_downstream_and_says_so():
    assert set(downstream_of(["problems", "nodes", "questions"])) == {"judgements", "verdicts", "rejected", "steps"}
    assert set(downstream_of(["verdicts"])) == {"rejected", "steps"}
    assert downstream_of(["steps", "rejected"]) == []


def test_mcts_force_then_verify_reads_only_the_new_tree(tmp_path, problems, scripted):
    run = Run(tmp_path / "run")
    mcts(run, problems, seed=0)
    execute("verify", run, VerifyConfig(quiet=True))
    old_nodes = node_keys(run)
    forced = mcts(run, problems, seed=1, force=True)
    assert forced.discarded["verdicts"] >= 1 and forced.discarded["nodes"] >= 1
    assert node_keys(run) != old_nodes, "another seed searches another tree"
    assert run.read("verdicts").num_rows == 0  # nothing of the old tree is left to join on (question_id, node_id)
    report = execute("verify", run, VerifyConfig(quiet=True))
    assert report.rows_in == 4 and report.skipped_done == 0
    expected = fresh_copy(run, tmp_path / "fresh", keep=("problems", "nodes", "questions"))
    execute("verify", expected, VerifyConfig(quiet=True))
    assert verdict_rows(run) == verdict_rows(expected)


def test_replaced_upstream_shards_make_downstream_stale_and_it_is_recomputed_or_refused(tmp_path, problems, scripted):
    """Even without --force's cascade (shards replaced behind the runner's back), stale rows are never read."""
    run = Run(tmp_path / "run")
    mcts(run, problems, seed=0)
    execute("verify", run, VerifyConfig(questions_per_shard=1, quiet=True))
    execute("filter", run, FilterConfig(quiet=True))
    nodes, questions = run.read("nodes").to_pylist(), run.read("questions").to_pylist()
    changed = next(n for n in nodes if n["complete"])
    changed["steps"] = [*changed["steps"][:-1], "T9 = 1 + 1 = 3"]
    with run.writing():  # one commit of mcts replaced, as if its questions had been searched again
        shard = next(s for s in run.shards("nodes") if changed["question_id"] in s["question_ids"])
        affected = set(shard["question_ids"])
        run.drop_shards([s for d in ("nodes", "questions") for s in run.shards(d) if set(s["question_ids"]) == affected])
        run.commit({"nodes": [n for n in nodes if n["question_id"] in affected],
                    "questions": [q for q in questions if q["question_id"] in affected]},
                   Lineage("mcts", ("problems",), shard["config_sha256"]))
    assert run.stale_shards("verdicts") and run.stale_shards("steps")
    with pytest.raises(UsageError, match=r"verdicts is stale .*prmfactory verify --run"):
        execute("filter", run, FilterConfig(quiet=True))
    with pytest.raises(UsageError, match=r"steps is stale .*prmfactory filter --run"):
        execute("train-prm", Run(tmp_path / "prm"), TrainPrmConfig(quiet=True), source=StageInput(run.root))
    report = execute("verify", run, VerifyConfig(quiet=True))
    assert report.discarded == {"verdicts": len(affected)} and report.rows_in == len(affected)  # only those
    assert not run.stale_shards("verdicts")
    claims = [c["text"] for v in run.read("verdicts").to_pylist() for c in v["claims"]]
    assert "1 + 1 = 3" in claims  # the new step was verified
    filtered = execute("filter", run, FilterConfig(quiet=True))
    assert filtered.discarded["steps"] == 1 and not filtered.already_done
    rows = run.read("steps").to_pylist() + run.read("rejected").to_pylist()
    for row in rows:
        if row["question_id"] == changed["question_id"] and (row.get("node_id") or row.get("source_node_ids", [None])[-1]) == changed["node_id"]:
            assert row["completions"] == changed["steps"][:len(row["completions"])]


def test_mcts_force_then_judge_judges_only_the_new_solutions(tmp_path, problems, scripted):
    run = Run(tmp_path / "run")
    mcts(run, problems, seed=0)
    execute("judge", run, JudgeConfig(judge="scripted-judge", quiet=True))
    forced = mcts(run, problems, seed=1, force=True)
    assert forced.discarded["judgements"] >= 1
    report = execute("judge", run, JudgeConfig(judge="scripted-judge", quiet=True))
    assert report.skipped_done == 0
    complete = {(n["question_id"], n["node_id"]) for n in run.read("nodes").to_pylist() if n["complete"]}
    judged = [(j["question_id"], j["node_id"]) for j in run.read("judgements").to_pylist()]
    assert sorted(judged) == sorted(complete)


def test_verify_force_then_filter_labels_with_the_new_verdicts(tmp_path, problems, scripted):
    run = Run(tmp_path / "run")
    mcts(run, problems)
    execute("verify", run, VerifyConfig(quiet=True))
    execute("filter", run, FilterConfig(rule="hybrid", quiet=True))
    forced = execute("verify", run, VerifyConfig(check_final_answers=False, quiet=True), force=True)
    assert {"verdicts", "steps"} <= set(forced.discarded)
    assert run.read("steps").num_rows == 0
    execute("filter", run, FilterConfig(rule="hybrid", quiet=True))
    expected = fresh_copy(run, tmp_path / "fresh", keep=("problems", "nodes", "questions", "verdicts"))
    execute("filter", expected, FilterConfig(rule="hybrid", quiet=True))
    assert run.read("steps").to_pylist() == expected.read("steps").to_pylist()
    assert all("final_answer" not in c["kind"] for v in run.read("verdicts").to_pylist() for c in v["claims"])


def test_new_upstream_rows_make_the_whole_run_filter_recompute(tmp_path, problems, scripted):
    run = Run(tmp_path / "run")
    mcts(run, problems)
    execute("filter", run, FilterConfig(quiet=True))
    assert execute("filter", run, FilterConfig(quiet=True)).already_done
    execute("verify", run, VerifyConfig(quiet=True))  # new verdicts: the rows written without them are stale
    again = execute("filter", run, FilterConfig(quiet=True))
    assert not again.already_done and again.discarded["steps"] == 1
    assert any(v is not None for r in run.read("steps").to_pylist() for v in r["tool_verdicts"])


@pytest.mark.slow
def test_filter_force_then_train_prm_never_returns_the_prm_of_the_old_rows(tmp_path, problems, scripted):
    run = Run(tmp_path / "run")
    mcts(run, problems)
    execute("filter", run, FilterConfig(quiet=True))
    prm, config = Run(tmp_path / "prm"), TrainPrmConfig(max_steps=1, batch_size=4, threads=1, quiet=True)
    execute("train-prm", prm, config, source=StageInput(run.root))
    assert execute("train-prm", prm, config, source=StageInput(run.root)).already_done
    moved = tmp_path / "moved-run"  # the same rows in another folder (or copied to another machine)
    shutil.copytree(run.root, moved, ignore=shutil.ignore_patterns(".lock"))
    assert execute("train-prm", prm, config, source=StageInput(moved)).already_done
    execute("filter", run, FilterConfig(dedupe=False, quiet=True), force=True)
    with pytest.raises(UsageError, match="trained on other data"):
        execute("train-prm", prm, config, source=StageInput(run.root))
    retrained = execute("train-prm", prm, config, source=StageInput(run.root), force=True)
    assert not retrained.already_done
    meta = json.loads((prm.root / "prm.json").read_text())
    assert [s["sha256"] for s in meta["lineage"]["shards"]] == [s["sha256"] for s in run.shards("steps")]


def test_a_changed_problem_under_an_old_id_is_refused(tmp_path, problems, scripted):
    run = Run(tmp_path / "run")
    mcts(run, problems)
    problems.write_text(problems.read_text().replace("Problem 2?", "Problem 2, reworded?"))
    with pytest.raises(UsageError, match=r"id 'q2': field 'problem': differs .*--force"):
        mcts(run, problems)
    assert mcts(run, problems, force=True).rows_in == 4
    assert "Problem 2, reworded?" in run.read("problems").column("problem").to_pylist()


def test_mcts_refuses_a_folder_that_is_not_a_run(tmp_path, problems, scripted):
    folder = tmp_path / "mine"
    (folder / "nodes").mkdir(parents=True)
    (folder / "nodes" / "part-00000.parquet").write_bytes(b"user data")
    with pytest.raises(UsageError, match="not empty and not a prmfactory run"):
        mcts(Run(folder), problems)
    assert (folder / "nodes" / "part-00000.parquet").read_bytes() == b"user data"
