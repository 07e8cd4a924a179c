"""Run folders, imports, eval outputs and requests as untrusted input (issue #28, one section per case).

Each case failed on the code before the change: files outside a run deleted through its manifest,
an import lost by a failed ``--force``, a renamed shard deleted, a run broken by being opened as a
URL and as a path, one bad request failing its batch, ``sql`` writing files, eval outputs
overwriting folders, tracebacks, hangs and silent fallbacks. Every case asserts one clear line and
that nothing outside the command's own outputs changed.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from prmfactory.prm import PRM
from prmfactory.prm.folder import PRMMeta
from prmfactory.serve.app import create_app
from prmfactory.store import Run
from tests.conftest import FIXTURES, serving
from tests.cli.test_bad_input import PB_GOOD, assert_one_line_error, built_run, invoke, run_copy, tree_hash  # noqa: F401


def _manifest(run: Run) -> dict:
    return json.loads(run.manifest_path.read_text())


def _write_manifest(run: Run, manifest: dict) -> None:
    run.manifest_path.write_text(json.dumps(manifest))


@pytest.fixture
def victims(tmp_path) -> Path:
    folder = tmp_path / "victims"
    folder.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (folder / name).write_text(f"the only copy of {name}\n")
    return folder


# ----- 1. a manifest that points out of the run ----------------------------------------------------

def _hostile_steps(run: Run, files: list[str]) -> None:
    manifest = _manifest(run)
    template = manifest["datasets"]["steps"]["shards"][0]
    manifest["datasets"]["steps"]["shards"] = [
        dict(template, file=file, inputs={"verdicts": ["0" * 64]}) for file in files]  # stale: a rerun drops them
    _write_manifest(run, manifest)


@pytest.mark.parametrize("force", [False, True])
def test_a_manifest_naming_files_outside_the_run_deletes_and_moves_nothing(run_copy, victims, force):
    _hostile_steps(run_copy, ["../victims/a.txt", str(victims / "b.txt"), "steps/../../victims/c.txt"])
    outside, inside = tree_hash(victims), tree_hash(run_copy.root)
    result = invoke("filter", "--run", run_copy.root, "--quiet", *(["--force"] if force else []))
    assert_one_line_error(result, 1, "manifest.json", "datasets.steps.shards.0.file", "is not a shard of steps")
    assert tree_hash(victims) == outside and tree_hash(run_copy.root) == inside


def test_a_shard_that_is_a_symlink_out_of_the_run_is_neither_read_nor_deleted(run_copy, victims):
    shard = run_copy.root / run_copy.shards("steps")[0]["file"]
    shard.unlink()
    shard.symlink_to(victims / "a.txt")
    outside = tree_hash(victims)
    for args in (["sql", run_copy.root, "SELECT count(*) FROM steps"], ["filter", "--run", run_copy.root, "--force",
                                                                         "--rule", "consensus", "--quiet"]):
        assert_one_line_error(invoke(*args), 2, str(shard), "leads out of the run folder")
    assert tree_hash(victims) == outside and shard.is_symlink()


def test_a_dataset_folder_that_is_a_symlink_out_of_the_run_is_refused(run_copy, victims):
    folder = run_copy.root / "rejected"
    for shard in folder.iterdir():
        shutil.copy(shard, victims / shard.name)
    shutil.rmtree(folder)
    folder.symlink_to(victims, target_is_directory=True)
    outside = tree_hash(victims)
    result = invoke("filter", "--run", run_copy.root, "--force", "--rule", "consensus", "--quiet")
    assert_one_line_error(result, 2, "leads out of the run folder")
    assert tree_hash(victims) == outside


MANIFEST_SHAPES = [
    ([], "expected an object"),
    ("x", "expected an object"),
    ({"datasets": []}, "field 'datasets'"),
    ({"datasets": {"steps": "x"}}, "field 'datasets.steps'"),
    ({"datasets": {"steps": {}}}, "field 'datasets.steps.shards'"),
    ({"datasets": {"steps": {"shards": {}}}}, "field 'datasets.steps.shards'"),
    ({"datasets": {"steps": {"shards": ["x"]}}}, "field 'datasets.steps.shards.0'"),
    ({"datasets": {"steps": {"shards": [{"file": 3}]}}}, "field 'datasets.steps.shards.0.file'"),
    ({"datasets": {"nonsense": {"shards": []}}}, "not a dataset prmfactory writes"),
    ({"datasets": {"steps": {"shards": [{"file": "steps/part-00000.parquet", "rows": "7", "question_ids": [],
                                         "sha256": "0" * 64}]}}}, "field 'datasets.steps.shards.0.rows'"),
    ({"datasets": {"steps": {"shards": [{"file": "steps/part-00000.parquet", "rows": 1, "question_ids": [1],
                                         "sha256": "0" * 64}]}}}, "question_ids.0"),
    ({"datasets": {"steps": {"shards": [{"file": "steps/part-00000.parquet", "rows": 1, "question_ids": [],
                                         "sha256": "zz"}]}}}, "field 'datasets.steps.shards.0.sha256'"),
    ({"datasets": {"steps": {"shards": [{"file": "steps/part-00000.parquet", "rows": 1, "question_ids": [],
                                         "sha256": "0" * 64, "inputs": {"verdicts": []}}]}}}, "'config_sha256'"),
    ({"datasets": {"steps": {"shards": [{"file": "steps/x.txt", "rows": 1, "question_ids": [],
                                         "sha256": "0" * 64}]}}}, "is not a shard of steps"),
]


@pytest.mark.parametrize("command", ["stats", "check", "sql", "filter"])
@pytest.mark.parametrize("shape, message", MANIFEST_SHAPES)
def test_a_manifest_of_the_wrong_shape_is_one_line(run_copy, command, shape, message):
    run_copy.manifest_path.write_text(json.dumps(shape))
    before = tree_hash(run_copy.root)
    args = {"stats": ["stats", run_copy.root], "check": ["stats", run_copy.root, "--check"],
            "sql": ["sql", run_copy.root, "SELECT 1"], "filter": ["filter", "--run", run_copy.root, "--quiet"]}[command]
    result = invoke(*args)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "manifest.json: corrupt manifest" in error[0] and message in error[0], result.output
    assert tree_hash(run_copy.root) == before


def test_run_yaml_of_the_wrong_shape_is_one_line(run_copy):
    (run_copy.root / "run.yaml").write_text("stages: [1, 2]\n")
    assert_one_line_error(invoke("filter", "--run", run_copy.root, "--quiet"), 1, "run.yaml", "field 'stages'")


# ----- 2. import --force ---------------------------------------------------------------------------

def test_a_failed_import_force_keeps_the_import_it_would_replace(tmp_path):
    output = tmp_path / "imp"
    assert invoke("import", "math-shepherd", "--input", FIXTURES / "math_shepherd_samples.jsonl", "--output", output,
                  "--quiet").exit_code == 0
    before = tree_hash(output)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps(PB_GOOD) + "\n")
    for bad in (empty, wrong):
        result = invoke("import", "math-shepherd", "--input", bad, "--output", output, "--force", "--quiet")
        assert_one_line_error(result, 2, str(bad), "no row could be imported", "is kept as it was")
        assert tree_hash(output) == before


def test_import_force_never_deletes_a_file_the_earlier_import_did_not_write(tmp_path):
    output = tmp_path / "imp"
    invoke("import", "math-shepherd", "--input", FIXTURES / "math_shepherd_samples.jsonl", "--output", output, "-q")
    (output / "part-00007.parquet").write_text("a user's file")
    before = tree_hash(output)
    result = invoke("import", "math-shepherd", "--input", FIXTURES / "math_shepherd_samples.jsonl", "--output", output,
                    "--force", "--quiet")
    assert_one_line_error(result, 2, "part-00007.parquet", "did not write")
    assert tree_hash(output) == before


def test_import_force_replaces_an_earlier_import(tmp_path):
    output = tmp_path / "imp"
    invoke("import", "prm800k", "--input", FIXTURES / "prm800k_samples.jsonl", "--output", output, "-q")
    result = invoke("import", "math-shepherd", "--input", FIXTURES / "math_shepherd_samples.jsonl", "--output", output,
                    "--force", "--quiet")
    assert result.exit_code == 0, result.output
    assert json.loads((output / "import.json").read_text())["source"] == "math-shepherd"
    assert sorted(p.name for p in output.iterdir()) == ["import.json", "log.txt", "part-00000.parquet", "rejects.jsonl"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing left beside it


# ----- 3. a shard renamed by hand ------------------------------------------------------------------

def test_a_renamed_shard_is_kept_aside_not_deleted(run_copy):
    nodes = run_copy.root / "nodes"
    (nodes / "part-00000.parquet").rename(nodes / "part-00009.parquet")
    data = (nodes / "part-00009.parquet").read_bytes()
    result = invoke("verify", "--run", run_copy.root, "--force", "--quiet")
    assert_one_line_error(result, 1, "nodes/part-00000.parquet", "unreadable")
    assert (run_copy.root / ".orphans" / "nodes" / "part-00009.parquet").read_bytes() == data
    assert "warning:" in result.output and ".orphans/nodes/part-00009.parquet" in result.output
    assert ".orphans/nodes/part-00009.parquet" in (run_copy.root / "log.txt").read_text()


# ----- 4. one run, two manifest forms -------------------------------------------------------------

def test_a_local_run_opened_as_a_file_url_is_refused_and_left_as_it_is(run_copy):
    before = tree_hash(run_copy.root)
    for args in (["verify", "--run", f"file://{run_copy.root}", "--force", "--quiet"],
                 ["verify", "--run", f"file://{run_copy.root}", "--quiet"]):
        assert_one_line_error(invoke(*args), 2, "a local run (manifest.json)", "open it by its path")
        assert tree_hash(run_copy.root) == before and not (run_copy.root / "_manifest").exists()


def test_a_run_holding_both_forms_that_disagree_is_refused(run_copy):
    log = run_copy.root / "_manifest"
    log.mkdir()
    manifest = _manifest(run_copy)
    del manifest["datasets"]["steps"]
    (log / "00000001.json").write_text(json.dumps({**manifest, "seq": 1, "writer": "x"}))
    before = tree_hash(run_copy.root)
    for args in (["stats", run_copy.root], ["verify", "--run", run_copy.root, "--quiet"]):
        assert_one_line_error(invoke(*args), 1, "both manifest.json and a commit log")
    assert tree_hash(run_copy.root) == before


def test_a_store_run_holding_both_forms_that_disagree_is_refused_before_writing():
    import uuid

    from prmfactory.manifest import CorruptManifest
    from tests.store.test_store import problem

    run = Run(f"memory://runs/{uuid.uuid4().hex}")
    with run.writing():
        run.commit({"problems": [problem("q1")]})
    run.files.write_text("manifest.json", json.dumps({"format": 1, "datasets": {}}))  # as older versions left it
    with pytest.raises(CorruptManifest, match="both manifest.json and a commit log"):
        with run.writing():
            pass
    assert sorted(run.committed_ids("problems")) == ["q1"]


def test_a_run_copied_down_from_a_store_becomes_a_local_run(run_copy):
    manifest = _manifest(run_copy)
    run_copy.manifest_path.unlink()
    (run_copy.root / "_manifest").mkdir()
    (run_copy.root / "_manifest" / "00000003.json").write_text(json.dumps({**manifest, "seq": 3, "writer": "x"}))
    result = invoke("verify", "--run", run_copy.root, "--quiet")
    assert result.exit_code == 0, result.output
    assert not (run_copy.root / "_manifest").exists() and _manifest(run_copy)["datasets"].keys() == manifest["datasets"].keys()


# ----- 5. serve: one request's input fails only that request ----------------------------------------

class _Scorer:
    """Scores a step by its length; a step reading "boom" raises, as text a tokenizer rejects does."""

    def __init__(self, seconds_per_batch: float = 0.0):
        self.seconds_per_batch, self.calls = seconds_per_batch, []

    def score_batch(self, items):
        self.calls.append(len(items))
        time.sleep(self.seconds_per_batch)
        if any("boom" in step for _, steps in items for step in steps):
            raise ValueError("the tokenizer cannot encode this text")
        return [[1 / (1 + len(step)) for step in steps] for _, steps in items]


def _fake_prm(tmp_path, scorer) -> PRM:
    return PRM(tmp_path, PRMMeta(kind="discriminative"), scorer)


def _items(*steps_lists):
    return {"items": [{"id": i, "prompt": "p", "steps": steps} for i, steps in enumerate(steps_lists)]}


def test_a_bad_item_fails_only_its_own_request_not_its_batch(tmp_path):
    scorer = _Scorer()
    app = create_app(_fake_prm(tmp_path, scorer), max_wait_ms=300)  # both requests land in one batch
    with TestClient(app) as client:
        alone = client.post("/v1/prm/score", json=_items(["a", "bb"])).json()
        replies = {}
        threads = [threading.Thread(target=lambda k=k, b=b: replies.__setitem__(k, client.post("/v1/prm/score", json=b)))
                   for k, b in (("bad", _items(["boom"])), ("good", _items(["a", "bb"])))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert 2 in scorer.calls  # they were batched together, and the batch failed
    assert replies["good"].status_code == 200 and replies["good"].json() == alone
    assert replies["bad"].status_code == 422
    assert replies["bad"].json()["detail"].startswith("items[0]: cannot be scored: ValueError: the tokenizer")


def test_a_lone_surrogate_is_422_and_a_good_request_beside_it_is_200(discriminative_prm):
    prm = PRM.from_pretrained(discriminative_prm[0])
    good = _items(["1 + 1 = 2", "The answer is 2."])
    bad = b'{"items": [{"id": 1, "prompt": "a\\ud800", "steps": ["x"]}]}'
    with TestClient(create_app(prm, max_wait_ms=300)) as client:
        alone = client.post("/v1/prm/score", json=good).json()
        replies = {}
        threads = [threading.Thread(target=lambda: replies.__setitem__("bad", client.post(
                       "/v1/prm/score", content=bad, headers={"Content-Type": "application/json"}))),
                   threading.Thread(target=lambda: replies.__setitem__("good", client.post("/v1/prm/score", json=good)))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert replies["bad"].status_code == 422 and "lone surrogate" in replies["bad"].json()["detail"]
        assert replies["good"].status_code == 200 and replies["good"].json() == alone
        assert client.head("/health").status_code == 200


@pytest.fixture(scope="module")
def rlhflow(tmp_path_factory) -> PRM:
    from tests.prm_replicas import REPLICAS

    return PRM.from_pretrained(REPLICAS["rlhflow"](tmp_path_factory.mktemp("rlhflow")), format="rlhflow")


@pytest.mark.parametrize("body", [_items([]), {"items": [{"id": 1, "prompt": "p", "response": ""}]},
                                  {"items": [{"id": 1, "prompt": "p", "response": "\n\n\n\n"}]}])
def test_a_solution_without_steps_is_scored_as_one_without_steps(rlhflow, body):
    with TestClient(create_app(rlhflow)) as client:
        reply = client.post("/v1/prm/score", json=body)
    assert reply.status_code == 200, reply.text
    assert reply.json()["results"][0]["step_scores"] == []


def test_items_and_steps_per_request_are_capped(tmp_path):
    with TestClient(create_app(_fake_prm(tmp_path, _Scorer()), max_items=3, max_steps=4)) as client:
        too_many = client.post("/v1/prm/score", json=_items(*[["a"]] * 4))
        too_long = client.post("/v1/prm/score", json=_items(["a"] * 5))
        rewards = client.post("/get_reward", json={"query": ["q"] * 4})
        fine = client.post("/v1/prm/score", json=_items(*[["a"] * 4] * 3))
    assert too_many.status_code == 413 and "limit of 3" in too_many.json()["detail"]
    assert too_long.status_code == 422 and "5 steps" in too_long.json()["detail"]
    assert rewards.status_code == 413
    assert fine.status_code == 200


def test_abandoned_requests_are_withdrawn_and_do_not_delay_the_next_one(tmp_path):
    """Three clients send 480 items each and give up; the next 1-item request waits for one batch at most."""
    import httpx

    batch_seconds, max_batch = 0.1, 16
    scorer = _Scorer(batch_seconds)
    with serving(create_app(_fake_prm(tmp_path, scorer), max_batch=max_batch)) as url:
        async def abandon():
            async with httpx.AsyncClient() as client:
                async def one():
                    try:
                        await client.post(f"{url}/v1/prm/score", json=_items(*[["a"]] * 480), timeout=0.3)
                    except httpx.TimeoutException:
                        pass
                await asyncio.gather(one(), one(), one())

        asyncio.run(abandon())
        time.sleep(2 * 0.05)  # the server notices a disconnect within its 50 ms poll
        started = time.monotonic()
        reply = httpx.post(f"{url}/v1/prm/score", json=_items(["a"]), timeout=30)
        waited = time.monotonic() - started
    assert reply.status_code == 200
    # Not withdrawn, the 1,440 queued items would take 90 batches (9 s); one batch in flight is 0.1 s.
    assert waited < 5 * batch_seconds + 0.5, (waited, scorer.calls)
    assert sum(scorer.calls) < 3 * 480 / 2, scorer.calls


# ----- 6. sql is read-only over the run -----------------------------------------------------------

@pytest.mark.parametrize("query", [
    "COPY (SELECT 1) TO '{outside}/x.csv'",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM glob('/root/*')",
    "ATTACH '{outside}/db.duckdb' AS other",
    "EXPORT DATABASE '{outside}/export'",
    "INSTALL httpfs",
    "COPY (SELECT 1) TO '{shard}' (FORMAT csv, USE_TMP_FILE false)",
    "SET enable_external_access = true",
    "SELECT 1; COPY (SELECT 1) TO '{outside}/y.csv'",
    "CREATE TABLE t AS SELECT 1",
    "SELECT * FROM read_csv('{outside}/user.csv')",
])
def test_sql_is_read_only_and_stays_inside_the_run(run_copy, tmp_path, query):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "user.csv").write_text("a,b\n1,2\n")
    shard = run_copy.root / run_copy.shards("steps")[0]["file"]
    before_outside, before_run = tree_hash(outside), tree_hash(run_copy.root)
    result = invoke("sql", run_copy.root, query.format(outside=outside, shard=shard))
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert len([line for line in result.output.splitlines() if line.startswith("error:")]) == 1
    assert tree_hash(outside) == before_outside and tree_hash(run_copy.root) == before_run
    assert invoke("sql", run_copy.root, "SELECT count(*) FROM steps").exit_code == 0


def test_sql_reads_every_view(run_copy):
    result = invoke("sql", run_copy.root, "SELECT (SELECT count(*) FROM nodes) > 0 AS n, "
                    "(SELECT count(*) FROM steps) > 0 AS s", "--format", "json")
    assert result.exit_code == 0 and json.loads(result.output.splitlines()[-1]) == {"n": True, "s": True}
    assert invoke("sql", run_copy.root, "EXPLAIN SELECT * FROM steps").exit_code == 0


# ----- 7. eval --output ---------------------------------------------------------------------------

@pytest.fixture
def processbench(tmp_path) -> tuple[Path, Path]:
    data = tmp_path / "pb"
    data.mkdir()
    (data / "dev.jsonl").write_text(json.dumps(PB_GOOD) + "\n" + json.dumps(dict(PB_GOOD, id="b", label=-1)) + "\n")
    predictions = tmp_path / "p.jsonl"
    predictions.write_text('{"id": "a", "prediction": 1}\n{"id": "b", "prediction": -1}\n')
    return data, predictions


def _eval(data, predictions, output, *extra):
    return invoke("eval", "processbench", "--data", data, "--predictions", predictions, "--output", output, *extra)


def test_eval_output_refuses_folders_it_did_not_write(processbench, tmp_path, run_copy, discriminative_prm):
    data, predictions = processbench
    users = tmp_path / "mine"
    users.mkdir()
    (users / "metrics.json").write_text('{"my": "numbers"}')
    for output in (users, data, run_copy.root, discriminative_prm[0]):
        before = tree_hash(output)
        for force in ((), ("--force",)):
            assert_one_line_error(_eval(data, predictions, output, *force), 2, str(output),
                                  "not an earlier `prmfactory eval processbench` output")
        assert tree_hash(output) == before


def test_eval_output_replaces_an_earlier_output_of_the_same_eval_only_with_force(processbench, tmp_path):
    data, predictions = processbench
    output = tmp_path / "out"
    assert _eval(data, predictions, output).exit_code == 0
    before = tree_hash(output)
    assert_one_line_error(_eval(data, predictions, output), 2, "holds an earlier", "--force replaces it")
    assert tree_hash(output) == before
    assert_one_line_error(invoke("eval", "prmbench", "--data", FIXTURES / "prmbench", "--predictions", predictions,
                                 "--output", output, "--force"), 2, "not an earlier `prmfactory eval prmbench` output")
    assert _eval(data, predictions, output, "--force").exit_code == 0
    assert json.loads((output / "metrics.json").read_text())["average_f1"] == 1.0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_failed_eval_leaves_the_earlier_output_as_it_was(processbench, tmp_path):
    data, predictions = processbench
    output = tmp_path / "out"
    _eval(data, predictions, output)
    before = tree_hash(output)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "prediction": 9}\n')
    assert_one_line_error(_eval(data, bad, output, "--force"), 2, "9 is not -1 or a step index")
    assert tree_hash(output) == before


# ----- 8. tracebacks ------------------------------------------------------------------------------

@pytest.mark.parametrize("completions", [{"text": "x", "rating": 1}, 7, "text"])
def test_prm800k_completions_of_the_wrong_type_are_rejects(tmp_path, completions):
    good = json.loads((FIXTURES / "prm800k_samples.jsonl").read_text().splitlines()[0])
    bad = json.loads(json.dumps(good))
    bad["label"]["steps"][0]["completions"] = completions
    data = tmp_path / "prm800k.jsonl"
    data.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    result = invoke("import", "prm800k", "--input", data, "--output", tmp_path / "out", "--quiet")
    assert result.exit_code == 0, result.output
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["source_line"], r["reason"]) for r in rejects] == [(2, "missing_field")]
    assert "completions: not a list" in rejects[0]["message"]


@pytest.mark.parametrize("meta, message", [
    ({"kind": "discriminative", "max_length": "long"}, "field 'max_length'"),
    ({"kind": "critic"}, "field 'kind'"),
    ({"kind": "discriminative", "head": "mystery"}, "field 'head'"),
    ({"max_length": 3}, "field 'kind'"),
    ([1], "expected a JSON object"),
])
def test_a_prm_json_of_the_wrong_shape_is_one_line(discriminative_prm, processbench, tmp_path, meta, message):
    prm = tmp_path / "prm"
    shutil.copytree(discriminative_prm[0], prm)
    (prm / "prm.json").write_text(json.dumps(meta))
    data, _ = processbench
    result = invoke("eval", "processbench", "--prm", prm, "--data", data, "--output", tmp_path / "out")
    assert_one_line_error(result, 2, "prm.json", "invalid PRM metadata", message)


@pytest.mark.parametrize("remove", ["model.safetensors", "config.json"])
def test_a_prm_folder_without_its_model_is_one_line(discriminative_prm, processbench, tmp_path, remove):
    prm = tmp_path / "prm"
    shutil.copytree(discriminative_prm[0], prm)
    (prm / remove).unlink()
    data, _ = processbench
    result = invoke("eval", "processbench", "--prm", prm, "--data", data, "--output", tmp_path / "out")
    assert_one_line_error(result, 2, str(prm), "a PRM folder without")
    assert not (tmp_path / "out").exists()


# ----- 9. hangs and silent fallbacks --------------------------------------------------------------

def _import_from(source: str, tmp_path: Path, data: bytes) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "prmfactory.cli", "import", "math-shepherd", "--input", source, "--output",
               str(tmp_path / "out"), "--quiet"]
    return subprocess.run(command, input=data, capture_output=True, timeout=120)


def test_import_reads_stdin_and_fifos_once(tmp_path):
    data = (FIXTURES / "math_shepherd_samples.jsonl").read_bytes()
    result = _import_from("/dev/stdin", tmp_path, data)
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads((tmp_path / "out" / "import.json").read_text())["rows"] == 7
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(data))
    writer.start()
    try:
        shutil.rmtree(tmp_path / "out")
        result = _import_from(str(fifo), tmp_path, b"")
    finally:
        writer.join(timeout=30)
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads((tmp_path / "out" / "import.json").read_text())
    assert report["rows"] == 7 and report["inputs"][0]["records"] == 7
    assert len(pq.read_table(tmp_path / "out" / "part-00000.parquet")) == 7


def test_import_processbench_keeps_the_first_of_repeated_ids(tmp_path):
    data = tmp_path / "gsm8k.jsonl"
    data.write_text("".join(json.dumps(dict(PB_GOOD, id=i)) + "\n" for i in ("a", "b", "a", "c", "a")))
    result = invoke("import", "processbench", "--input", data, "--output", tmp_path / "out", "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "import.json").read_text())
    assert report["rows"] == 3 and report["rejected_by_reason"] == {"duplicate": 2}


def test_an_empty_split_is_one_line_not_an_f1_of_zero(processbench, tmp_path):
    data, predictions = processbench
    (data / "empty.jsonl").write_text("")
    assert_one_line_error(_eval(data, predictions, tmp_path / "out"), 2, "empty.jsonl", "no records")


def test_a_calibration_split_with_one_class_is_one_line(processbench, tmp_path):
    data, _ = processbench
    (data / "other.jsonl").write_text(json.dumps(dict(PB_GOOD, id="c")) + "\n")
    predictions = tmp_path / "scores.jsonl"
    predictions.write_text("".join(json.dumps({"id": i, "step_scores": [0.9, 0.2]}) + "\n" for i in "abc"))
    result = _eval(data, predictions, tmp_path / "out", "--threshold", "auto", "--calibrate-on", "other")
    assert_one_line_error(result, 2, "--calibrate-on other", "no correct samples")


def test_models_prepare_refuses_an_unknown_name():
    assert_one_line_error(invoke("models", "prepare", "nosuchalias"), 2, "'nosuchalias' is not an alias")


# ----- #31: a judge whose outputs do not parse says so ----------------------------------------------

def test_a_judge_whose_outputs_do_not_parse_is_warned_about(run_copy, monkeypatch):
    import contextlib

    from tests.judge.test_judge import ScriptedJudge

    @contextlib.asynccontextmanager
    async def engine(model, engine_config, seed, metrics):
        yield ScriptedJudge(["I think it is fine overall."])

    monkeypatch.setattr("prmfactory.engines.open_engine", engine)
    result = invoke("judge", "--run", run_copy.root, "--judge", "scripted-judge", "--force", "--quiet")
    assert result.exit_code == 0, result.output
    assert "warning: judge: 11 of 11 outputs (100%) held no verdict the parser could read" in result.output
    assert "held no verdict" in (run_copy.root / "log.txt").read_text()
