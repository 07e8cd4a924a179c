"""A SIGKILL during verify, judge, filter or train-prm, then a rerun: every question (row) exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prmfactory.store import Run
from tests.store.test_store import problem

CLI = [sys.executable, "-c", "from prmfactory.cli import main; main()"]
QUESTIONS = 240


def _node(qid, node_id, steps, complete, mc):
    return {"question_id": qid, "node_id": node_id, "parent_id": None, "depth": len(steps), "steps": steps,
            "mc_value": mc, "num_rollouts": 4, "num_correct": 0, "visits": 0, "complete": complete, "rollouts": [],
            "strategy": "mc", "segmentation": "blank_line"}


@pytest.fixture
def searched_run(tmp_path) -> Run:
    """A run as mcts leaves it: QUESTIONS questions, each with two complete 4-step solutions."""
    run = Run(tmp_path / "run")
    problems, nodes = [], []
    for q in range(QUESTIONS):
        qid = f"q{q}"
        problems.append(dict(problem(qid), answer=str(q + 8)))
        nodes.append(_node(qid, "0", [], False, 0.5))
        for leaf, slip in (("1", 0), ("2", 1)):
            steps = [f"We have {q} + {i} = {q + i + (slip if i == 2 else 0)} apples." for i in range(3)]
            steps.append(f"The answer is \\boxed{{{q + 8 + slip}}}.")
            nodes += [_node(qid, f"{leaf}.{i}", steps[:i + 1], i == 3, 1.0 - slip * (i >= 2)) for i in range(4)]
    with run.writing():
        for start in range(0, QUESTIONS, 60):
            ids = {f"q{q}" for q in range(start, start + 60)}
            run.commit({"problems": [p for p in problems if p["question_id"] in ids],
                        "nodes": [n for n in nodes if n["question_id"] in ids]})
    return run


def _kill_when(command, ready, env=None, timeout=240) -> None:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                               env=env)
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None and not ready():
        time.sleep(0.02)
    assert process.poll() is None, process.stderr.read().decode()[-3000:]
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    process.stderr.close()


def _rerun(command, env=None) -> None:
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]


def _exactly_once(run: Run, dataset: str, key: tuple[str, ...]) -> list[dict]:
    rows = run.read(dataset, verify_checksums=True).to_pylist()
    keys = [tuple(str(r[k]) for k in key) for r in rows]
    assert len(keys) == len(set(keys)), f"{dataset}: duplicated rows after the rerun"
    shard_ids = [q for s in run.shards(dataset) for q in s["question_ids"]]
    assert len(shard_ids) == len(set(shard_ids)), f"{dataset}: a question in two shards"
    on_disk = {p.name for p in (run.root / dataset).iterdir()}
    assert on_disk == {Path(s["file"]).name for s in run.shards(dataset)}, "no leftover partial shard"
    return rows


def _shards(run: Run, dataset: str) -> int:
    try:
        return len(run.shards(dataset))
    except Exception:  # the manifest is being replaced at this instant
        return 0


def test_sigkill_during_verify_then_rerun(searched_run):
    command = CLI + ["verify", "--run", str(searched_run.root), "--set", "questions_per_shard=1", "-q"]
    _kill_when(command, lambda: _shards(searched_run, "verdicts") >= 3)
    killed_at = len(searched_run.committed_ids("verdicts"))
    assert 3 <= killed_at < QUESTIONS
    _rerun(command)
    rows = _exactly_once(searched_run, "verdicts", ("question_id", "node_id", "step_index"))
    assert {r["question_id"] for r in rows} == {f"q{q}" for q in range(QUESTIONS)}
    assert searched_run.read_report("verify")["skipped_done"] == killed_at


def test_sigkill_during_judge_then_rerun(searched_run):
    command = [sys.executable, "-m", "tests.scripted_cli", "judge", "--run", str(searched_run.root), "--judge",
               "scripted", "--set", "commit_every=1", "--concurrency", "2", "-q"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    _kill_when(command, lambda: _shards(searched_run, "judgements") >= 3, env=env)
    assert 3 <= len(searched_run.committed_ids("judgements")) < QUESTIONS
    _rerun(command, env=env)
    rows = _exactly_once(searched_run, "judgements", ("question_id", "node_id"))
    assert len(rows) == 2 * QUESTIONS and {r["status"] for r in rows} == {"ok"}


def test_sigkill_during_filter_then_rerun(searched_run):
    command = CLI + ["filter", "--run", str(searched_run.root), "--no-dedupe", "-q"]
    for delay in (0.5, 1.5):  # killed while importing or while labelling: one commit, all or nothing
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        process.kill()
        process.wait()
        assert searched_run.shards("steps") in ([], searched_run.shards("steps")[:1])
    _rerun(command)
    steps = _exactly_once(searched_run, "steps", ("question_id", "source_node_ids"))
    rejected = searched_run.read("rejected").to_pylist()
    assert len(steps) + len(rejected) == 2 * QUESTIONS  # every candidate solution once, kept or rejected


@pytest.mark.slow
def test_sigkill_during_train_prm_then_rerun(searched_run, tmp_path):
    _rerun(CLI + ["filter", "--run", str(searched_run.root), "-q"])
    prm = tmp_path / "prm"
    command = CLI + ["train-prm", "--data", str(searched_run.root), "--output", str(prm), "--max-steps", "40",
                     "--batch-size", "4", "--threads", "1", "-q"]
    _kill_when(command, lambda: (prm / "log.txt").exists() and "step 10:" in (prm / "log.txt").read_text())
    assert not (prm / "prm.json").exists()
    _rerun(command)
    import json

    meta = json.loads((prm / "prm.json").read_text())
    assert meta["lineage"]["rows"] == searched_run.read("steps").num_rows
    assert [s["sha256"] for s in meta["lineage"]["shards"]] == [s["sha256"] for s in searched_run.shards("steps")]
    assert "already holds this PRM" in subprocess.run(command, capture_output=True, text=True).stdout
