"""A node of the Ray cluster goes away mid-run: its worker's questions finish on the other node, each once.

``ray.cluster_utils.Cluster`` runs a head without CPUs and two one-CPU nodes in this machine's
processes; node failure detection is shortened so the loss is noticed within seconds.
"""

from __future__ import annotations

import threading
import time

import pytest
import ray
from ray.cluster_utils import Cluster

from prmfactory.store import Run
from tests.cluster.test_cluster import QUESTIONS, REPO, mcts, rows, use


@pytest.fixture
def two_nodes():
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "_system_config": {"health_check_period_ms": 200, "health_check_failure_threshold": 3,
                                          "health_check_initial_delay_ms": 0}})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    ray.init(address=cluster.address, include_dashboard=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    yield cluster, nodes
    ray.shutdown()
    cluster.shutdown()


def test_a_node_removed_mid_run_loses_no_question(two_nodes, numbered_problems, tmp_path, monkeypatch):
    cluster, nodes = two_nodes
    use(monkeypatch)
    expected = Run(tmp_path / "expected")
    mcts(expected.root, numbered_problems)

    use(monkeypatch, delay_s=0.5)  # one question at a time per worker: ~2 s each
    run = Run(tmp_path / "run")
    removed = threading.Event()

    def remove_after_first_commit() -> None:
        deadline = time.monotonic() + 120
        while not (run.exists() and run.shards("questions")) and time.monotonic() < deadline:
            time.sleep(0.05)
        cluster.remove_node(nodes[1], allow_graceful=False)
        removed.set()

    remover = threading.Thread(target=remove_after_first_commit, daemon=True)
    remover.start()
    report = mcts(run.root, numbered_problems, concurrency=1, ray_address="auto", workers=2)
    remover.join(timeout=5)
    assert removed.is_set()
    assert report.details["cluster"]["nodes"] == 3 and report.counts["workers_lost"] >= 1
    assert len(rows(run, "questions", ("question_id",))) == QUESTIONS
    assert rows(run, "nodes", ("question_id", "node_id")) == rows(expected, "nodes", ("question_id", "node_id"))
