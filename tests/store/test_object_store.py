"""Run folders on object storage: the commit log on a local disk (file://), memory:// and S3 (moto on 127.0.0.1).

An object store has no atomic rename, so a run there keeps its manifest as a log of
create-exclusive entries; these tests hold it to the local run's guarantees: only committed
shards are visible, a writer that lost the run commits nothing more, of two racing writers
exactly one wins, and the stages (also on Ray) write the same rows as on a local disk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from prmfactory.errors import UsageError

from prmfactory.search.config import MctsConfig
from prmfactory.stages import StageInput, execute
from prmfactory.store import CommitLog, Run, RunBusyError
from prmfactory.verify.config import VerifyConfig
from tests.store.test_store import problem

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def s3_server():
    """A moto S3 server on 127.0.0.1 and the environment that points boto/s3fs at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import fsspec

    fsspec.filesystem("s3").mkdir("runs")
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


@pytest.fixture(params=["file", "memory", "s3"])
def location(request, tmp_path):
    """A fresh run location on each filesystem the commit log must work on."""
    if request.param == "file":
        return f"file://{tmp_path}/run"
    if request.param == "memory":
        return f"memory://runs/{uuid.uuid4().hex}"
    request.getfixturevalue("s3_server")
    return f"s3://runs/{uuid.uuid4().hex}"


def committed(run: Run) -> list[str]:
    return sorted(run.committed_ids("problems"))


def test_commits_are_visible_only_through_the_log_and_uncommitted_shards_are_cleaned(location):
    run = Run(location)
    assert not run.exists()
    with run.writing():
        run.commit({"problems": [problem("q1"), problem("q2")]})
        run.commit({"problems": [problem("q3")]})
    assert Run(location).exists() and committed(Run(location)) == ["q1", "q2", "q3"]
    names = run.files.names("_manifest")
    assert names and all(n.endswith(".json") for n in names) and not run.files.exists("manifest.json")
    assert len(names) <= 2  # superseded entries are deleted
    files = [s["file"] for s in run.shards("problems")]
    assert len(set(files)) == 2 and all(len(Path(f).stem.split("-")) == 3 for f in files)  # part-NNNNN-UNIQUE

    run.files.write_table("problems/part-00009-0123456789ab.parquet", run.read("problems"))  # a writer died here
    assert committed(Run(location)) == ["q1", "q2", "q3"]  # never visible
    with Run(location).writing():
        pass
    assert not run.files.exists("problems/part-00009-0123456789ab.parquet")  # the next writer removed it
    assert Run(location).read("problems").num_rows == 3


def test_a_writer_that_lost_the_run_to_a_later_one_commits_nothing_more(location):
    first, second = Run(location), Run(location)
    with first.writing():
        first.commit({"problems": [problem("q1")]})
        with second.writing():  # a second driver starts on the same run: it takes the log's next entry
            with pytest.raises(RunBusyError, match="another prmfactory process is writing to this run"):
                first.commit({"problems": [problem("q2")]})
            second.commit({"problems": [problem("q3")]})
    assert committed(Run(location)) == ["q1", "q3"]
    assert Run(location).verify() == 2


def test_of_two_writers_racing_for_the_same_entry_exactly_one_wins(location):
    with Run(location).writing() as setup:
        setup.commit({"problems": [problem("q0")]})
    racers = [Run(location), Run(location)]
    seen = [racer._log.head() for racer in racers]  # both read the log before either writes
    assert seen[0] == seen[1]
    results = []
    for racer in racers:  # both go for the entry after the head they saw
        racer._log.writer = uuid.uuid4().hex
        try:
            racer._log._write(seen[0] + 1, racer.manifest())
            results.append("won")
        except RunBusyError as exc:
            assert "its commit log already has entry" in str(exc) and "\n" not in str(exc)
            results.append("lost")
    assert results == ["won", "lost"]
    winner = racers[0]
    winner._lock_handle = winner._log  # the winner goes on writing
    winner.commit({"problems": [problem("q1")]})
    assert committed(Run(location)) == ["q0", "q1"]
    with racers[1].writing():  # the loser, started again, claims the entry after the winner's and goes on
        racers[1].commit({"problems": [problem("q2")]})
    assert committed(Run(location)) == ["q0", "q1", "q2"]


def test_a_local_manifest_copied_to_the_store_reads_as_it_is(location, tmp_path):
    local = Run(tmp_path / "local")
    with local.writing():
        local.commit({"problems": [problem("q1"), problem("q2")]})
    remote = Run(location)
    import fsspec

    for name in ["manifest.json", *[s["file"] for s in local.shards("problems")]]:
        with fsspec.open(f"{location}/{name}", "wb", auto_mkdir=True) if location.startswith("file") else \
                fsspec.open(f"{location}/{name}", "wb") as handle:
            handle.write((local.root / name).read_bytes())
    assert committed(remote) == ["q1", "q2"] and remote.verify() == 1
    if location.startswith("file"):  # a local disk: the run is opened by its path, never as a second form
        with pytest.raises(UsageError, match="a local run .manifest.json.; open it by its path"):
            with remote.writing():
                pass
        assert not remote.files.exists("_manifest") and committed(remote) == ["q1", "q2"]
        return
    with remote.writing():  # the first writer continues it as a log, and the log alone holds it
        remote.commit({"problems": [problem("q3")]})
    assert committed(Run(location)) == ["q1", "q2", "q3"] and not remote.files.exists("manifest.json")


def test_mcts_then_verify_on_memory_write_what_a_local_run_writes(tmp_path, numbered_problems, monkeypatch):
    from tests.cluster.test_cluster import use

    use(monkeypatch)
    config = MctsConfig(policy="scripted", rollouts=4, budget=12, commit_every=3, concurrency=4, quiet=True)
    runs = [Run(tmp_path / "local"), Run(f"memory://runs/{uuid.uuid4().hex}")]
    for run in runs:
        execute("mcts", run, config, source=StageInput(numbered_problems))
        execute("verify", run, VerifyConfig(quiet=True))
    key = lambda r: (r["question_id"], r.get("node_id", ""), r.get("step_index", -1))  # noqa: E731
    for dataset in ("questions", "nodes", "verdicts"):
        local, remote = (sorted(run.read(dataset).to_pylist(), key=key) for run in runs)
        assert remote == local, dataset
    assert "verify report" in runs[1].files.read_text("log.txt")
    assert runs[1].read_report("verify")["rows_in"] == 10


def test_mcts_verify_judge_and_filter_on_s3_from_the_command_line_also_on_ray(s3_server, numbered_problems):
    url = f"s3://runs/{uuid.uuid4().hex}"
    cli = [sys.executable, "-m", "tests.scripted_cli"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    steps = [["mcts", "--input", str(numbered_problems), "--output", url, "--policy", "scripted-slow",
              "--rollouts", "4", "--budget", "8", "--ray-address", "local", "--workers", "2",
              "--cpus-per-worker", "0.5"],
             ["verify", "--run", url, "--ray-address", "local", "--workers", "2", "--cpus-per-worker", "0.5"],
             ["judge", "--run", url, "--judge", "scripted", "--votes", "2"],
             ["filter", "--run", url]]
    for command in steps:
        result = subprocess.run(cli + command + ["-q"], env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, (command[0], result.stderr[-3000:])
    run = Run(url)
    assert sorted(run.committed_ids("questions")) == sorted(f"q{i}" for i in range(10))
    assert run.verify() == sum(len(run.shards(d)) for d in run.datasets())
    assert run.read("judgements").num_rows > 0 and run.read("steps").num_rows > 0
    assert run.stage_configs()["mcts"]["cluster"]["workers"] == 2
    report = json.loads(run.files.read_text("reports/filter.json"))
    assert report["rows_out"] > 0


def test_force_sets_outputs_aside_and_gives_them_back_on_the_store(location):
    run = Run(location)
    with run.writing():
        run.commit({"problems": [problem("q1")]})
        assert run.set_aside(["problems"]) == {"problems": 1}
        assert committed(run) == [] and run.files.exists(".aside/manifest.json")
        assert run.restore_aside()  # the forced rerun failed before committing: the old outputs are back
        assert committed(run) == ["q1"] and run.verify() == 1
        run.set_aside(["problems"])
        run.commit({"problems": [problem("q2")]})
        run.drop_aside()  # the new outputs are committed: the old ones go
    assert committed(Run(location)) == ["q2"] and not run.files.names(".aside")


def test_a_run_copied_down_from_the_store_reads_and_continues_locally(s3_server, tmp_path):
    import fsspec

    url = f"s3://runs/{uuid.uuid4().hex}"
    with Run(url).writing() as remote:
        remote.commit({"problems": [problem("q1"), problem("q2")]})
    fsspec.filesystem("s3").get(url.removeprefix("s3://"), str(tmp_path / "copy"), recursive=True)  # aws s3 sync
    local = Run(tmp_path / "copy")
    assert local.exists() and committed(local) == ["q1", "q2"] and local.verify() == 1
    with local.writing():
        local.commit({"problems": [problem("q3")]})
    assert (tmp_path / "copy" / "manifest.json").exists() and not (tmp_path / "copy" / "_manifest").exists()
    assert committed(Run(tmp_path / "copy")) == ["q1", "q2", "q3"]


def test_a_filesystem_that_does_not_enforce_exclusive_create_is_refused_before_anything_is_written(monkeypatch):
    from prmfactory.errors import UsageError
    from prmfactory.runfiles import FsspecFiles

    monkeypatch.setattr(FsspecFiles, "create_exclusive", FsspecFiles.write_text)  # "xb" taken as "wb"
    run = Run(f"memory://runs/{uuid.uuid4().hex}")
    with pytest.raises(UsageError, match="mode 'xb' is not enforced"):
        with run.writing():
            pass
    assert not run.exists() and run.files.names("") == []


def test_a_reader_that_lists_an_entry_deleted_before_it_reads_it_reads_the_new_head(location, monkeypatch):
    with Run(location).writing() as run:  # entries 1 (claim), 2 and 3; entry 1 is deleted once 3 exists
        run.commit({"problems": [problem("q1")]})
        run.commit({"problems": [problem("q2")]})
    reader = Run(location)
    listed = iter([1])  # what the reader listed just before entry 1 was deleted
    monkeypatch.setattr(reader._log, "head", lambda: next(listed, None) or CommitLog.head(reader._log))
    assert committed(reader) == ["q1", "q2"]  # never an empty run
