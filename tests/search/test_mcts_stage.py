"""`prmfactory mcts` end to end on the real CPU vLLM engine: crash safety and resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prmfactory.store import Run

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-c", "from prmfactory.cli import main; main()"]


def mcts_command(problems: Path, run: Path, model: Path, config: Path) -> list[str]:
    return CLI + ["mcts", "--input", str(problems), "--output", str(run), "--policy", str(model),
                  "--config", str(config), "--quiet"]


@pytest.fixture
def toy_problems(tmp_path) -> Path:
    path = tmp_path / "problems.jsonl"
    subprocess.run(CLI + ["toy", "problems", "--n", "60", "--output", str(path)], check=True, capture_output=True)
    return path


def test_sigkill_during_mcts_then_rerun_gives_exactly_one_summary_per_question(tmp_path, toy_problems,
                                                                                tiny_model_dir):
    config = tmp_path / "mcts.yaml"
    config.write_text("rollouts: 4\nbudget: 12\nmax_new_tokens: 48\nconcurrency: 1\ncommit_every: 1\n"
                      "engine: {dtype: float32, max_model_len: 512, kv_cache_gib: 0.25, block_size: 32}\n")
    run_dir = tmp_path / "run"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    process = subprocess.Popen(mcts_command(toy_problems, run_dir, tiny_model_dir, config), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    run = Run(run_dir)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if run.exists() and len(run.shards("questions")) >= 3:
            break
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read().decode()[-3000:]
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    process.stderr.close()
    killed_at = run.read("questions").num_rows
    assert 3 <= killed_at < 60

    rerun = subprocess.run(mcts_command(toy_problems, run_dir, tiny_model_dir, config), env=env,
                           capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    questions = run.read("questions", verify_checksums=True).to_pylist()
    ids = [q["question_id"] for q in questions]
    expected = [json.loads(line)["id"] for line in toy_problems.read_text().splitlines()]
    assert sorted(ids) == sorted(expected), "every question has exactly one summary"
    assert sorted(run.read("problems").column("question_id").to_pylist()) == sorted(expected)
    nodes = run.read("nodes").to_pylist()
    per_question = {}
    for node in nodes:
        per_question[node["question_id"]] = per_question.get(node["question_id"], 0) + 1
    assert all(per_question.get(q["question_id"], 0) == q["num_nodes"] for q in questions)
    report = run.read_report("mcts")
    assert report["skipped_done"] == killed_at
    assert report["engine"]["prefix_cache_queries"] > 0 and report["rows_in"] == 60
    assert "mcts" in run.stage_configs() and (run_dir / "log.txt").read_text().count("mcts report") >= 1

    again = subprocess.run(mcts_command(toy_problems, run_dir, tiny_model_dir, config), env=env,
                           capture_output=True, text=True)
    assert again.returncode == 0 and run.read("questions").num_rows == 60  # nothing left: no engine start

    config.write_text(config.read_text().replace("rollouts: 4", "rollouts: 8"))
    refused = subprocess.run(mcts_command(toy_problems, run_dir, tiny_model_dir, config), env=env,
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "--force" in refused.stderr
