"""mcts, judge and verify over Ray workers: every question committed exactly once, whatever dies.

A local Ray cluster of 2 CPUs for the module; the policy and judge are scripted (the policy's
randomness is drawn from each prompt, so a search on Ray equals the same search in process) and
patched in for ``open_engine``, which the stage's work captures on the driver and ships to each
worker. A worker is killed with SIGKILL from inside (on its first try at a chosen question) —
the same death as ``kill -9`` from outside, at a moment the test chooses.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray

from prmfactory.config import ClusterConfig
from prmfactory.engines.base import EngineFailure
from prmfactory.judge.config import JudgeConfig
from prmfactory.progress import StageProgress
from prmfactory.search.config import MctsConfig
from prmfactory.stages import StageInput, execute
from prmfactory.store import Run
from prmfactory.verify.config import VerifyConfig
from prmfactory.work import StageWork, Unit, UnitCommitter, UnitResult
from tests.scripted_engine import PromptSeededEngine
from tests.judge.test_judge import ScriptedJudge

REPO = Path(__file__).resolve().parents[2]
QUESTIONS = 10  # in the `numbered_problems` fixture (conftest)


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    yield
    ray.shutdown()


class DeadlyPolicy(PromptSeededEngine):
    """Kills its own process (SIGKILL) when asked about a ``deadly`` question: once per question when
    ``markers`` is a folder (the marker file says it was tried), every time otherwise."""

    def __init__(self, deadly: tuple[str, ...], markers: str | None, delay_s: float, dies_on: tuple[str, ...] = ()):
        super().__init__(lambda prefix: 0.5, num_steps=4, bad_at=2)
        self.deadly, self.markers, self.delay_s, self.dies_on = deadly, markers, delay_s, dies_on

    async def generate(self, prompt, spec):
        import asyncio

        question = prompt.messages[-1].content
        if any(f"Problem {q}?" == question for q in self.dies_on):
            raise EngineFailure("the engine core died")  # the process lives on, its engine does not
        for victim in self.deadly:
            if f"Problem {victim}?" == question:
                marker = Path(self.markers or "/nonexistent") / victim
                if self.markers is None or not marker.exists():
                    if self.markers is not None:
                        marker.touch()
                    os.kill(os.getpid(), signal.SIGKILL)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return await super().generate(prompt, spec)


@contextlib.asynccontextmanager
async def scripted_engines(model, engine_config, seed, metrics, deadly=(), markers=None, delay_s=0.0, dies_on=()):
    """open_engine's stand-in: the scripted judge for ``scripted-judge``, else the (deadly) scripted policy."""
    engine = ScriptedJudge(["\\boxed{1}", "\\boxed{-1}"]) if model == "scripted-judge" else \
        DeadlyPolicy(tuple(deadly), markers, delay_s, tuple(dies_on))
    yield engine
    metrics.update(engine.metrics())


def use(monkeypatch, **options) -> None:
    monkeypatch.setattr("prmfactory.engines.open_engine", functools.partial(scripted_engines, **options))


def mcts(root: Path, problems: Path, concurrency: int = 4, **cluster):
    config = MctsConfig(policy="scripted", rollouts=4, budget=12, commit_every=2, concurrency=concurrency, quiet=True,
                        cluster=ClusterConfig(**cluster))
    return execute("mcts", Run(root), config, source=StageInput(problems))


def rows(run: Run, dataset: str, key: tuple[str, ...]) -> list[dict]:
    """The dataset's rows in key order, each key exactly once."""
    table = sorted(run.read(dataset).to_pylist(), key=lambda r: tuple(str(r[k]) for k in key))
    keys = [tuple(r[k] for k in key) for r in table]
    assert len(keys) == len(set(keys)), f"{dataset}: a key is committed twice"
    return table


def test_two_ray_workers_commit_what_one_process_commits(ray_session, numbered_problems, tmp_path, monkeypatch):
    use(monkeypatch)
    alone = Run(tmp_path / "alone")
    mcts(alone.root, numbered_problems)
    pooled = Run(tmp_path / "pooled")
    report = mcts(pooled.root, numbered_problems, ray_address="local", workers=2)
    for dataset, key in (("questions", ("question_id",)), ("nodes", ("question_id", "node_id"))):
        assert rows(pooled, dataset, key) == rows(alone, dataset, key)
    assert report.counts["workers_lost"] == 0 and report.engine["requests"] > 0
    cluster = report.details["cluster"]
    assert cluster["workers"] == 2 and len(cluster["worker_starts"]) == 2
    assert Run(pooled.root).stage_configs()["mcts"]["cluster"]["resources"]["CPU"] == 2.0  # run.yaml records it

    for stage, config, key in (("verify", VerifyConfig(questions_per_task=3, quiet=True),
                                ("question_id", "node_id", "step_index")),
                               ("judge", JudgeConfig(judge="scripted-judge", votes=2, commit_every=3, quiet=True),
                                ("question_id", "node_id"))):
        execute(stage, alone, config)
        pooled_config = config.model_copy(update={"cluster": ClusterConfig(ray_address="local", workers=2)})
        report = execute(stage, pooled, pooled_config)
        dataset = "verdicts" if stage == "verify" else "judgements"
        assert rows(pooled, dataset, key) == rows(alone, dataset, key), stage
        assert report.details["cluster"]["workers"] == 2


def test_a_worker_killed_on_its_first_try_at_a_question_loses_nothing(ray_session, numbered_problems, tmp_path, monkeypatch):
    use(monkeypatch)
    expected = Run(tmp_path / "expected")
    mcts(expected.root, numbered_problems)
    markers = tmp_path / "markers"
    markers.mkdir()
    use(monkeypatch, deadly=("q2", "q7"), markers=str(markers))
    run = Run(tmp_path / "run")
    report = mcts(run.root, numbered_problems, ray_address="local", workers=2)
    assert sorted(p.name for p in markers.iterdir()) == ["q2", "q7"]  # both were tried, and killed a worker
    assert report.counts["workers_lost"] == 2 and report.counts["worker_restarts"] == 2
    assert rows(run, "questions", ("question_id",)) == rows(expected, "questions", ("question_id",))
    assert rows(run, "nodes", ("question_id", "node_id")) == rows(expected, "nodes", ("question_id", "node_id"))
    assert run.verify() == len([s for d in run.datasets() for s in run.shards(d)])


@pytest.mark.parametrize("death, reason", [
    ({"deadly": ("q4",)}, "gave up after 2 lost workers"),  # the worker process is SIGKILLed
    ({"dies_on": ("q4",)}, "the engine core died")])  # the process lives on, its engine does not
def test_a_question_that_kills_every_worker_is_recorded_failed_after_max_attempts(ray_session, numbered_problems, tmp_path,
                                                                                monkeypatch, death, reason):
    use(monkeypatch, **death)
    run = Run(tmp_path / "run")
    report = mcts(run.root, numbered_problems, ray_address="local", workers=2, max_attempts=2)
    questions = {r["question_id"]: r for r in rows(run, "questions", ("question_id",))}
    assert len(questions) == QUESTIONS
    assert questions["q4"]["status"] == "failed" and reason in questions["q4"]["reason"]
    assert all(r["status"] != "failed" for q, r in questions.items() if q != "q4")
    assert report.counts["given_up"] == 1 and report.counts["workers_lost"] == 2  # each lost worker replaced
    assert report.details["given_up"] == ["q4"]


def test_a_policy_that_kills_every_worker_stops_the_stage(ray_session, numbered_problems, tmp_path, monkeypatch):
    use(monkeypatch, deadly=tuple(f"q{i}" for i in range(QUESTIONS)))
    with pytest.raises(EngineFailure, match="workers in a row were lost before finishing any work"):
        mcts(tmp_path / "run", numbered_problems, ray_address="local", workers=2, max_attempts=1)


class Rows(StageWork):
    label, datasets = "rows", ("questions",)

    async def open(self):
        pass

    async def process(self, payload):
        row = {"question_id": payload, "status": "searched", "reason": None, "strategy": "mc", "num_nodes": 1,
               "num_rollouts": 4, "generated_tokens": 9, "initial_accuracy": 0.5}
        return UnitResult({"questions": [row]}, {"n": 1})

    async def close(self):
        return None


def test_rows_of_a_question_already_committed_are_dropped_and_counted(tmp_path):
    run = Run(tmp_path / "run")
    with run.writing():
        committer = UnitCommitter(run.commit, Rows(), every=2, done={"q0"}, progress=StageProgress(None, None))
        for unit in (Unit(("q0",), "q0"), Unit(("q1",), "q1"), Unit(("q1",), "q1"), Unit(("q2",), "q2")):
            committer.accept(unit, asyncio.run(Rows().process(unit.payload)))
        committer.flush()
    assert sorted(run.committed_ids("questions")) == ["q1", "q2"]
    assert committer.duplicates == 2 and committer.counts == {"n": 2}


def test_sigkill_of_the_driver_after_its_first_commit_then_a_rerun_resumes_without_duplicates(numbered_problems, tmp_path):
    root = tmp_path / "run"
    command = [sys.executable, "-m", "tests.scripted_cli", "mcts", "--input", str(numbered_problems), "--output", str(root),
               "--policy", "scripted-slow", "--ray-address", "local", "--workers", "2", "--cpus-per-worker", "0.5",
               "--rollouts", "4", "--budget", "8", "--concurrency", "1", "--commit-every", "1", "-q"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    run = Run(root)
    deadline = time.monotonic() + 120
    while not (run.exists() and run.shards("questions")):
        assert driver.poll() is None, driver.stderr.read()
        assert time.monotonic() < deadline, "no commit within 120 s"
        time.sleep(0.05)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    driver.stderr.close()
    with contextlib.suppress(ProcessLookupError):  # the killed driver's local Ray cluster, orphaned
        os.killpg(driver.pid, signal.SIGKILL)
    first = run.committed_ids("questions")
    assert 1 <= len(first) < QUESTIONS
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert len(rows(run, "questions", ("question_id",))) == QUESTIONS
    rows(run, "nodes", ("question_id", "node_id"))
    assert run.read_report("mcts")["skipped_done"] >= len(first)


CLI = [sys.executable, "-c", "from prmfactory.cli import main; main()"]


@pytest.mark.slow
def test_two_vllm_cpu_workers_on_the_toy_policy_then_verify_and_judge_on_ray(tmp_path):
    """The done-when commands: mcts, verify and judge with --ray-address local --workers 2 on real engines."""
    problems = tmp_path / "problems.jsonl"
    subprocess.run(CLI + ["toy", "problems", "--n", "12", "--output", str(problems)], check=True, capture_output=True)
    engine = tmp_path / "engine.yaml"
    engine.write_text("engine: {dtype: float32, max_model_len: 512, kv_cache_gib: 0.25, block_size: 32}\n")
    root = tmp_path / "run"
    pool = ["--ray-address", "local", "--workers", "2", "--quiet"]
    steps = [["mcts", "--input", str(problems), "--output", str(root), "--policy", "toy", "--rollouts", "4",
              "--budget", "8", "--max-new-tokens", "96", "--config", str(engine)],
             ["verify", "--run", str(root), "--set", "questions_per_task=2"],
             ["judge", "--run", str(root), "--judge", "toy-judge", "--votes", "2", "--max-new-tokens", "64",
              "--config", str(engine)]]
    for command in steps:
        result = subprocess.run(CLI + command + pool, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    run = Run(root)
    expected = [json.loads(line)["id"] for line in problems.read_text().splitlines()]
    assert [r["question_id"] for r in rows(run, "questions", ("question_id",))] == sorted(expected)
    assert run.verify() == sum(len(run.shards(d)) for d in run.datasets())  # every shard's checksum holds
    starts = run.read_report("mcts")["details"]["cluster"]["worker_starts"]
    assert sorted(s["cpu_bind"] for s in starts) == ["0", "1"]  # each CPU engine on its own core
    assert {r["question_id"] for r in run.read("judgements").to_pylist()} <= set(expected)
    assert run.read_report("judge")["details"]["cluster"]["workers"] == 2

    alone = Run(tmp_path / "alone")  # verify in one process on the same nodes writes the same verdicts
    shutil.copytree(root, alone.root)
    with alone.writing():
        alone.drop_shards(alone.shards("verdicts") + alone.shards("judgements"))
    result = subprocess.run(CLI + ["verify", "--run", str(alone.root), "--quiet"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    key = ("question_id", "node_id", "step_index")
    assert rows(alone, "verdicts", key) == rows(run, "verdicts", key)
