import json
import shutil
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from prmfactory.bookkeeping import begin_stage
from prmfactory.config import StageConfig, runtime_field
from prmfactory.errors import UsageError
from prmfactory.schemas import SchemaError
from prmfactory.store import Run, RunBusyError


def problem(qid):
    return {"question_id": qid, "problem": f"p{qid}", "answer": "1", "source": "f:1", "input_format": "prmfactory",
            "reference_solution": None, "subject": None, "level": None, "extra_json": None}


def question(qid):
    return {"question_id": qid, "status": "searched", "reason": None, "strategy": "mc", "num_nodes": 1,
            "num_rollouts": 4, "generated_tokens": 10, "initial_accuracy": 0.5}


def test_commit_and_read_back(tmp_path):
    run = Run(tmp_path)
    with run.writing():
        assert run.commit({"problems": [problem("a"), problem("b")]}) == {"problems": 2}
        run.commit({"problems": [problem("c")]})
    assert run.read("problems").column("question_id").to_pylist() == ["a", "b", "c"]
    assert run.committed_ids("problems") == {"a", "b", "c"}
    shards = run.shards("problems")
    assert [s["file"] for s in shards] == ["problems/part-00000.parquet", "problems/part-00001.parquet"]
    assert all(len(s["sha256"]) == 64 for s in shards)
    run.read("problems", verify_checksums=True)


def test_commit_of_bad_rows_writes_nothing(tmp_path):
    run = Run(tmp_path)
    bad = problem("b")
    bad["level"] = "x"
    with run.writing():
        with pytest.raises(SchemaError):
            run.commit({"questions": [question("a")], "problems": [bad]})
    assert run.datasets() == [] and not (tmp_path / "questions").exists()


def test_commit_outside_writing_is_refused(tmp_path):
    with pytest.raises(RuntimeError):
        Run(tmp_path).commit({"problems": [problem("a")]})


def test_second_writer_is_refused(tmp_path):
    run = Run(tmp_path)
    with run.writing():
        with pytest.raises(RunBusyError):
            with Run(tmp_path).writing():
                pass


def test_shard_of_another_schema_is_refused_on_read(tmp_path):
    run = Run(tmp_path)
    with run.writing():
        run.commit({"problems": [problem("a")]})
    manifest = json.loads(run.manifest_path.read_text())
    (tmp_path / "questions").mkdir()
    shutil.copy(tmp_path / "problems" / "part-00000.parquet", tmp_path / "questions" / "part-00000.parquet")
    shards = [dict(s, file="questions/part-00000.parquet") for s in manifest["datasets"]["problems"]["shards"]]
    manifest["datasets"]["questions"] = {"schema": "questions", "schema_version": 1, "shards": shards}
    run.manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(SchemaError, match="expected questions v1"):
        run.read("questions")


class DemoConfig(StageConfig):
    rollouts: int = 4
    quiet: bool = runtime_field(False, "progress bars off")


def test_rerun_with_changed_config_is_refused_unless_forced(tmp_path):
    run = Run(tmp_path)
    with run.writing():
        begin_stage(run, "mcts", DemoConfig(), ["questions"], force=False)
        run.commit({"questions": [question("a")]})
        begin_stage(run, "mcts", DemoConfig(quiet=True), ["questions"], force=False)  # runtime-only change
        with pytest.raises(UsageError, match="rollouts: 4 -> 8.*--force"):
            begin_stage(run, "mcts", DemoConfig(rollouts=8), ["questions"], force=False)
        assert run.read("questions").num_rows == 1
        begin_stage(run, "mcts", DemoConfig(rollouts=8), ["questions"], force=True)
        assert run.read("questions").num_rows == 0
    assert run.stage_configs()["mcts"]["config"]["rollouts"] == 8
    assert "pyarrow" in (tmp_path / "run.yaml").read_text()


WRITER = textwrap.dedent("""
    import os, signal, sys
    from prmfactory.store import Run
    import prmfactory.store as store
    root, die_at, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    run = Run(root)
    real_replace = os.replace
    commits = 0
    def replace(src, dst):
        global commits
        if str(dst).endswith(".parquet"):
            commits += 1
            if die_at == "before_rename" and commits == 3:
                os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)
        if die_at == "after_rename" and commits == 3 and str(dst).endswith(".parquet"):
            os.kill(os.getpid(), signal.SIGKILL)
    store.os.replace = replace
    def row(q):
        return {"question_id": q, "status": "searched", "reason": None, "strategy": "mc", "num_nodes": 1,
                "num_rollouts": 1, "generated_tokens": 1, "initial_accuracy": None}
    with run.writing():
        done = run.committed_ids("questions")
        for batch in range(count):
            ids = [f"q{batch}-{i}" for i in range(50)]
            if not set(ids) <= done:
                run.commit({"questions": [row(q) for q in ids], "problems": [
                    {"question_id": q, "problem": "x" * 2000, "answer": "1", "source": "s", "input_format": "prmfactory",
                     "reference_solution": None, "subject": None, "level": None, "extra_json": None} for q in ids]})
                if die_at == "sleep":
                    print("committed", batch, flush=True)
""")


def _writer(tmp_path, root, die_at, count=6):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    return subprocess.run([sys.executable, str(script), str(root), die_at, str(count)], capture_output=True, text=True)


def _assert_complete(run, batches):
    ids = run.read("questions", verify_checksums=True).column("question_id").to_pylist()
    assert len(ids) == len(set(ids)) == batches * 50
    problems = run.read("problems").column("question_id").to_pylist()
    assert sorted(problems) == sorted(ids)
    on_disk = {f"{d.name}/{p.name}" for d in run.root.iterdir() if d.is_dir() and d.name != ".orphans"
               for p in d.iterdir()}
    listed = {s["file"] for name in run.datasets() for s in run.shards(name)}
    assert on_disk == listed


@pytest.mark.parametrize("die_at", ["before_rename", "after_rename"])
def test_sigkill_mid_commit_leaves_no_visible_partial_shard(tmp_path, die_at):
    root = tmp_path / "run"
    first = _writer(tmp_path, root, die_at)
    assert first.returncode == -signal.SIGKILL
    run = Run(root)
    ids = run.read("questions").column("question_id").to_pylist()
    assert len(ids) == len(set(ids)) and len(ids) % 50 == 0 and len(ids) < 300
    # The two datasets of one commit become visible together or not at all.
    assert sorted(run.read("problems").column("question_id").to_pylist()) == sorted(ids)
    rerun = _writer(tmp_path, root, "never")
    assert rerun.returncode == 0, rerun.stderr
    _assert_complete(run, 6)
    # a half-written temp file is deleted; a whole shard the killed writer never listed is kept aside
    orphans = list((root / ".orphans").rglob("*.parquet"))
    assert len(orphans) == (1 if die_at == "after_rename" else 0)


def test_sigkill_at_random_moments_then_rerun_completes(tmp_path):
    root = tmp_path / "run"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    for delay_lines in (1, 3):
        proc = subprocess.Popen([sys.executable, str(script), str(root), "sleep", "40"], stdout=subprocess.PIPE,
                                text=True)
        for _ in range(delay_lines):
            proc.stdout.readline()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        run = Run(root)
        ids = run.read("questions").column("question_id").to_pylist()
        assert len(ids) == len(set(ids))
    assert _writer(tmp_path, root, "never", count=40).returncode == 0
    _assert_complete(Run(root), 40)
