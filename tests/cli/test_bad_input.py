"""Bad input and damaged run folders: one clear line, the right exit code, and nothing already written lost.

Every case runs the real CLI in process and asserts the exit code (2 bad input or usage, 1 failure),
that the message is one line naming the file, that no Python stack is printed, and that no file
outside the command's own outputs changed (the folder is hashed before and after).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prmfactory.cli import app
from prmfactory.filter.config import FilterConfig
from prmfactory.judge.config import JudgeConfig
from prmfactory.stages import execute
from prmfactory.store import Run
from prmfactory.verify.config import VerifyConfig
from tests.scripted_engine import ScriptedEngine
from tests.judge.test_judge import ScriptedJudge
from tests.store.test_lineage import mcts

RUNNER = CliRunner()


def invoke(*args: str):
    return RUNNER.invoke(app, [str(a) for a in args], env={"PRMFACTORY_DEBUG": None, "COLUMNS": "2000"})


def tree_hash(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def assert_one_line_error(result, code: int, *names: str) -> str:
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.output
    for name in names:
        assert name in errors[0], (name, errors[0])
    return errors[0]


@pytest.fixture(scope="module")
def built_run(tmp_path_factory) -> Path:
    """A run with every dataset (mcts, verify, judge, filter on the scripted engines)."""

    @contextlib.asynccontextmanager
    async def engine(model, engine_config, seed, metrics):
        yield ScriptedJudge(["\\boxed{1}"]) if model == "scripted-judge" else \
            ScriptedEngine(lambda prefix: 0.5, num_steps=3, bad_at=1, seed=seed)

    folder = tmp_path_factory.mktemp("built")
    problems = folder / "problems.jsonl"
    problems.write_text("".join(json.dumps({"id": f"q{i}", "problem": f"Problem {i}?", "answer": "42"}) + "\n"
                                for i in range(6)))
    run = Run(folder / "run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("prmfactory.engines.open_engine", engine)
        mcts(run, problems)
        execute("verify", run, VerifyConfig(quiet=True))
        execute("judge", run, JudgeConfig(judge="scripted-judge", quiet=True))
        execute("filter", run, FilterConfig(min_rollouts=3, quiet=True))
    assert all(run.shards(d) for d in ("problems", "nodes", "questions", "verdicts", "judgements", "steps",
                                       "rejected"))
    return run.root


@pytest.fixture
def run_copy(built_run, tmp_path) -> Run:
    shutil.copytree(built_run, tmp_path / "run")
    return Run(tmp_path / "run")


def flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


# ----- data loss ------------------------------------------------------------------------------

def test_mcts_on_a_folder_of_parquet_files_without_a_manifest_deletes_nothing(tmp_path, built_run):
    folder = tmp_path / "mine"
    shutil.copytree(built_run, folder)
    (folder / "manifest.json").unlink()  # a run whose manifest was lost, or any folder a user points at
    before = tree_hash(folder)
    result = invoke("mcts", "--input", built_run.parent / "problems.jsonl", "--output", folder, "--policy", "toy")
    assert_one_line_error(result, 2, str(folder), "not a prmfactory run")
    assert tree_hash(folder) == before


def test_filter_force_with_a_damaged_input_keeps_the_old_steps(run_copy):
    flip_a_bit(run_copy.root / run_copy.shards("verdicts")[0]["file"])
    steps = {f: h for f, h in tree_hash(run_copy.root).items() if f.startswith(("steps", "rejected"))}
    before = tree_hash(run_copy.root)
    result = invoke("filter", "--run", run_copy.root, "--force", "--rule", "consensus")
    assert_one_line_error(result, 1, run_copy.shards("verdicts")[0]["file"], "verdicts shard is damaged", "--force")
    assert tree_hash(run_copy.root) == before and steps


def test_a_forced_rerun_that_fails_before_committing_gives_the_old_outputs_back(run_copy, monkeypatch):
    before = tree_hash(run_copy.root)

    def broken(run):
        raise RuntimeError("the stage crashed")

    monkeypatch.setattr("prmfactory.filter.stage.collect_paths", broken)
    with pytest.raises(RuntimeError):
        execute("filter", run_copy, FilterConfig(rule="consensus", quiet=True), force=True)
    assert tree_hash(run_copy.root) == {**before, "log.txt": tree_hash(run_copy.root)["log.txt"]}
    assert not (run_copy.root / ".aside").exists()


def test_a_forced_writer_killed_before_committing_gets_its_outputs_back_on_the_next_lock(run_copy):
    before = tree_hash(run_copy.root)
    with run_copy.writing():
        run_copy.set_aside(["steps", "rejected"])  # then the process dies: nothing new committed
    assert not run_copy.shards("steps")
    with run_copy.writing():
        pass
    assert tree_hash(run_copy.root) == before


# ----- silent corruption ------------------------------------------------------------------------

READERS = {"problems": ("filter",), "nodes": ("filter",), "verdicts": ("filter",), "judgements": ("filter",),
           "steps": ("train-prm",), "questions": ("sql",), "rejected": ("sql",)}


@pytest.mark.parametrize("damage", ["bit", "truncate"])
@pytest.mark.parametrize("dataset", sorted(READERS))
def test_a_damaged_shard_is_detected_by_the_next_reader(run_copy, tmp_path, dataset, damage):
    shard = run_copy.root / run_copy.shards(dataset)[0]["file"]
    if damage == "bit":
        flip_a_bit(shard)
    else:
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    before = tree_hash(run_copy.root)
    for reader in READERS[dataset]:
        args = {"filter": ["filter", "--run", run_copy.root, "--force"],
                "train-prm": ["train-prm", "--data", run_copy.root, "--output", tmp_path / "prm"],
                "sql": ["sql", run_copy.root, f"SELECT count(*) FROM {dataset}"]}[reader]
        assert_one_line_error(invoke(*args), 1, str(shard), f"{dataset} shard is damaged")
    assert_one_line_error(invoke("stats", run_copy.root), 1, str(shard))
    check = invoke("stats", run_copy.root, "--check")
    assert check.exit_code == 1 and str(shard) in check.output and "1 fault found" in check.output
    assert tree_hash(run_copy.root) == before


def test_stats_check_passes_on_a_sound_run(run_copy):
    result = invoke("stats", run_copy.root, "--check")
    assert result.exit_code == 0 and "shards checked: sound" in result.output


def test_prm_json_records_the_hashes_of_the_rows_it_read(run_copy, tmp_path):
    from prmfactory.fileio import sha256_file
    from prmfactory.train.stage import load_training_data

    data = load_training_data(run_copy.root, None)
    assert [s["sha256"] for s in data.lineage["shards"]] == [
        sha256_file(run_copy.root / s["file"]) for s in run_copy.shards("steps")]


# ----- one clear line instead of a traceback ------------------------------------------------------

def test_a_corrupt_manifest_is_one_line(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "manifest.json").write_text("{}")
    assert_one_line_error(invoke("stats", tmp_path / "run"), 1, "manifest.json", "'datasets'")


@pytest.mark.parametrize("make_output, code, message", [
    (lambda tmp: (tmp / "file").write_text("x") and tmp / "file", 2, "not a folder"),
    (lambda tmp: Path("/dev/null"), 2, "not a folder"),
    (lambda tmp: (tmp / "file").write_text("x") and tmp / "file" / "run", 2, "Not a directory"),
])
def test_mcts_output_that_cannot_be_a_run(tmp_path, built_run, make_output, code, message):
    output = make_output(tmp_path)
    result = invoke("mcts", "--input", built_run.parent / "problems.jsonl", "--output", output, "--policy", "toy")
    assert_one_line_error(result, code, message)


def test_a_policy_path_that_does_not_exist(tmp_path, built_run):
    result = invoke("mcts", "--input", built_run.parent / "problems.jsonl", "--output", tmp_path / "run",
                    "--policy", "/nonexistent/model")
    assert_one_line_error(result, 2, "/nonexistent/model", "no such model folder")
    assert not (tmp_path / "run" / "manifest.json").exists()


PB_GOOD = {"id": "a", "problem": "p", "steps": ["s1", "s2"], "label": 1}


@pytest.mark.parametrize("content, message", [
    (json.dumps(dict(PB_GOOD, label="1")) + "\n", "field 'label'"),
    (json.dumps(PB_GOOD) + "\n7\n", ":2: expected a JSON object, got int"),
    (json.dumps(PB_GOOD).encode() + b"\n\xff\xfe\n", ":2: not valid UTF-8"),
    (json.dumps(dict(PB_GOOD, id=["a"])) + "\n", "field 'id'"),
    (json.dumps(dict(PB_GOOD, label=99)) + "\n", "label 99 is not -1 or a step index"),
    (json.dumps(dict(PB_GOOD, label=-5)) + "\n", "label -5"),
    (json.dumps(dict(PB_GOOD, steps=[])) + "\n", "field 'steps'"),
    (json.dumps(dict(PB_GOOD, steps=["s1", ""])) + "\n", "field 'steps.1'"),
    (json.dumps(PB_GOOD) + "\n" + json.dumps(PB_GOOD) + "\n", ":2: field 'id': duplicate id 'a'"),
    (json.dumps(PB_GOOD) + "\n" + json.dumps({k: v for k, v in dict(PB_GOOD, id="b").items() if k != "label"}) + "\n",
     "record 1: field 'label': missing"),
    ('{"id": "a", "steps": ["s"], \n', ":1: invalid JSON"),
    (json.dumps(PB_GOOD) + "\n" + '{"id": "b" "steps": []}\n', ":2: invalid JSON"),
])
def test_bad_processbench_files(tmp_path, content, message):
    path = tmp_path / "split.jsonl"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = tree_hash(tmp_path)
    result = invoke("verify", "--processbench", path, "--output", tmp_path / "out")
    assert_one_line_error(result, 2, str(path), message)
    assert tree_hash(tmp_path) == before


@pytest.mark.parametrize("line, message", [
    ('{"id": "a", "step_scores": [0.9, NaN]}', "NaN is not JSON"),
    ('{"id": "a", "step_scores": [0.9, 1e999]}', "field 'step_scores.1'"),
    ('{"id": "a", "step_scores": [0.9]}', "1 scores for 2 steps"),
    ('{"id": "a", "step_scores": [0.9, 1.5]}', "field 'step_scores.1'"),
    ('{"id": "a", "prediction": 7}', "7 is not -1 or a step index"),
    ('{"id": "a", "prediction": 1}\n{"id": "a", "prediction": 0}', ":2: field 'id': a second prediction"),
    ('{"id": "zzz", "prediction": 1}', "'zzz' is not a record of the data"),
    ('{"id": "a", "prediction": true}', "field 'prediction'"),
    ('{"id": "a"}', "give 'step_scores' or 'prediction'"),
    ('{"id": "a", "step_scores": [0.9, "x"]}', "field 'step_scores.1'"),
])
def test_bad_prediction_files(tmp_path, line, message):
    data = tmp_path / "split.jsonl"
    data.write_text(json.dumps(PB_GOOD) + "\n")
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text(line + "\n")
    result = invoke("eval", "processbench", "--data", data, "--predictions", predictions, "--output", tmp_path / "out")
    assert_one_line_error(result, 2, str(predictions), message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, message", [
    (b"stages: 3\n", "field 'stages': expected a list"),
    (b"stages: [{stage: filter, config: [1, 2]}]\n", "field 'config': expected a mapping"),
    (b"rule: mc\nnote: \xff\xfe\n", "not valid UTF-8"),
    (b"- 1\n- 2\n", "must be a mapping"),
    (b"rule: [unclosed\n", "cannot read config"),
])
def test_bad_config_files(run_copy, tmp_path, content, message):
    config = tmp_path / "config.yaml"
    config.write_bytes(content)
    before = tree_hash(run_copy.root)
    assert_one_line_error(invoke("filter", "--run", run_copy.root, "--config", config), 2, str(config), message)
    assert tree_hash(run_copy.root) == before


@pytest.mark.parametrize("args, message", [
    (["--concurrency", "0"], "field 'concurrency'"),
    (["--budget", "1", "--rollouts", "16"], "budget (1) is below rollouts (16)"),
    (["--temperature", "inf"], "field 'temperature'"),
    (["--set", "rollouts=true"], "field 'rollouts'"),
    (["--set", "engine=nonsense"], "--set engine: unknown key"),
    (["--set", "engine.max_num_seqs=0"], "field 'engine.max_num_seqs'"),
    (["--set", "commit_every=-1"], "field 'commit_every'"),
])
def test_numbers_a_user_can_type_are_bounded_before_any_engine_starts(tmp_path, built_run, args, message):
    result = invoke("mcts", "--input", built_run.parent / "problems.jsonl", "--output", tmp_path / "run",
                    "--policy", "toy", *args)
    assert_one_line_error(result, 2, message)
    assert not (tmp_path / "run").exists()


def test_engine_nonsense_in_a_config_file_is_not_silently_replaced(tmp_path, built_run):
    config = tmp_path / "c.yaml"
    config.write_text("engine: nonsense\n")
    result = invoke("mcts", "--input", built_run.parent / "problems.jsonl", "--output", tmp_path / "run",
                    "--policy", "toy", "--config", config, "--base-url", "http://127.0.0.1:9/v1")
    assert_one_line_error(result, 2, str(config), "field 'engine'")


@pytest.mark.parametrize("line, message", [
    ('{"id": "a\\u0000b", "problem": "x", "answer": "1"}', "field 'id': contains a control character"),
    ('{"id": "a\\nb", "problem": "x", "answer": "1"}', "field 'id': contains a control character"),
    ('{"id": "a", "problem": "x", "answer": NaN}', "NaN is not JSON"),
    ('{"id": "a", "problem": "x", "answer": Infinity}', "Infinity is not JSON"),
    ('{"id": "a", "problem": "x", "answer": 1e999}', "field 'answer': not a finite number"),
])
def test_bad_ids_and_answers_in_the_input(tmp_path, line, message):
    path = tmp_path / "p.jsonl"
    path.write_text(line + "\n")
    result = invoke("mcts", "--input", path, "--output", tmp_path / "run", "--policy", "toy")
    assert result.exit_code == 2 and f"{path}:1" in result.output and message in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_train_prm_data_and_output_that_are_not_what_they_should_be(run_copy, tmp_path):
    jsonl = tmp_path / "x.jsonl"
    jsonl.write_text("{}\n")
    assert_one_line_error(invoke("train-prm", "--data", jsonl, "--output", tmp_path / "prm"), 2, str(jsonl),
                          "neither a run folder nor Parquet shards")
    fake = tmp_path / "x.parquet"
    fake.write_text("not parquet")
    assert_one_line_error(invoke("train-prm", "--data", fake, "--output", tmp_path / "prm"), 2, str(fake),
                          "not a readable Parquet file")
    output = tmp_path / "a-file"
    output.write_text("keep me")
    assert_one_line_error(invoke("train-prm", "--data", run_copy.root, "--output", output), 2, str(output),
                          "not a folder")
    assert output.read_text() == "keep me"


@pytest.mark.parametrize("repo_id", ["bad repo id!!", "", "../../etc", "org/name\n# injected heading"])
def test_publish_refuses_repo_ids_the_hub_would_refuse(run_copy, tmp_path, repo_id):
    result = invoke("publish", "--run", run_copy.root, "--repo-id", repo_id, "--dry-run", tmp_path / "out")
    assert_one_line_error(result, 2, "--repo-id")
    assert not (tmp_path / "out").exists()


def test_publish_dry_run_onto_a_file(run_copy, tmp_path):
    target = tmp_path / "a-file"
    target.write_text("keep me")
    result = invoke("publish", "--run", run_copy.root, "--repo-id", "org/name", "--dry-run", target)
    assert_one_line_error(result, 2, str(target), "not a folder")
    assert target.read_text() == "keep me"


@pytest.mark.parametrize("args, message", [
    (["--port", "99999"], "--port"),
    (["--port", "0"], "--port"),
    (["--api-key", ""], "--api-key: empty"),
    (["--max-body-mb", "-1"], "--max-body-mb: must be above 0"),
])
def test_serve_refuses_bad_settings_before_loading_anything(tmp_path, args, message):
    result = invoke("serve", "--prm", tmp_path, *args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output


@pytest.mark.parametrize("args, message", [
    (["eval", "bon", "--prm", ".", "--output", "out", "--input", "x.jsonl", "--temperature", "inf"], "Invalid value"),
    (["eval", "processbench", "--data", ".", "--output", "out", "--predictions", "p.jsonl", "--threshold", "nan"],
     "--threshold: expected a number in [0, 1] or auto, got 'nan'"),
    (["toy", "processbench", "--n", "3", "--output", "out.jsonl", "--temperature", "-1"], "Invalid value"),
])
def test_numbers_of_the_other_commands_are_bounded_too(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    for name in ("x.jsonl", "p.jsonl"):
        (tmp_path / name).write_text("{}\n")
    result = invoke(*args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl", "x.jsonl"]


def test_a_read_only_output_is_one_line(tmp_path, built_run, monkeypatch):
    """Root ignores permission bits, so the refusal a read-only disk gives is raised where the run is made."""
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if str(self).startswith(str(tmp_path / "ro")):
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    result = invoke("mcts", "--input", built_run.parent / "problems.jsonl", "--output", tmp_path / "ro" / "run",
                    "--policy", "toy")
    assert_one_line_error(result, 2, str(tmp_path / "ro" / "run"), "Permission denied")


@pytest.mark.parametrize("content, message", [
    (json.dumps(dict(PB_GOOD, id=["a"])) + "\n", "field 'id'"),
    (b"\xff" + json.dumps(PB_GOOD).encode() + b"\n", ":1: not valid UTF-8"),
])
def test_eval_processbench_data_is_checked_like_verify(tmp_path, content, message):
    data = tmp_path / "split.jsonl"
    data.write_bytes(content if isinstance(content, bytes) else content.encode())
    predictions = tmp_path / "p.jsonl"
    predictions.write_text('{"id": "a", "prediction": 1}\n')
    result = invoke("eval", "processbench", "--data", data, "--predictions", predictions, "--output", tmp_path / "out")
    assert_one_line_error(result, 2, str(data), message)


def test_a_damaged_shard_is_never_published(run_copy, tmp_path):
    shard = run_copy.root / run_copy.shards("nodes")[0]["file"]
    flip_a_bit(shard)
    result = invoke("publish", "--run", run_copy.root, "--repo-id", "org/name", "--dry-run", tmp_path / "out")
    assert_one_line_error(result, 1, str(shard), "nodes shard is damaged")
