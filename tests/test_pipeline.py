import subprocess
import sys

import pytest
import yaml

from prmfactory.errors import UsageError
from prmfactory.pipeline import load_pipeline
from prmfactory.resources import resource_dir
from prmfactory.store import Run

CLI = [sys.executable, "-c", "from prmfactory.cli import main; main()"]


def test_toy_pipeline_loads_in_order():
    assert [name for name, _ in load_pipeline(resource_dir("pipelines") / "toy.yaml")] == [
        "mcts", "verify", "judge", "filter"]


@pytest.mark.parametrize("stages, error, message", [
    ([{"stage": "mcts", "config": {"policy": "p"}}, {"stage": "bogus"}], UsageError, "stage 1: field 'stage'"),
    ([{"stage": "mcts", "config": {"policy": "p"}}, {"stage": "train-prm", "config": {"kind": "x"}}], UsageError,
     "field 'kind'"),
    ([{"stage": "verify"}], UsageError, "starts with the mcts stage"),
    ([{"stage": "mcts", "config": {"policy": "p", "rollouts": 0}}], UsageError, "field 'rollouts'"),
    ([], UsageError, "non-empty 'stages'"),
])
def test_bad_pipelines_are_refused_before_anything_runs(tmp_path, stages, error, message):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"stages": stages}))
    with pytest.raises(error, match=message):
        load_pipeline(path)


@pytest.mark.slow
def test_toy_pipeline_end_to_end_and_resume(tmp_path):
    recipe = yaml.safe_load((resource_dir("pipelines") / "toy.yaml").read_text())
    sections = {entry["stage"]: entry["config"] for entry in recipe["stages"]}
    sections["mcts"].update(rollouts=4, budget=16, max_new_tokens=160)
    sections["judge"].update(votes=2, max_new_tokens=160)
    sections["filter"] = {"rule": "mc"}
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump({"stages": [{"stage": k, "config": v} for k, v in sections.items()]}))
    problems = tmp_path / "problems.jsonl"
    subprocess.run(CLI + ["toy", "problems", "--n", "6", "--output", str(problems)], check=True, capture_output=True)
    command = CLI + ["run", str(path), "--input", str(problems), "--output", str(tmp_path / "run")]
    first = subprocess.run(command, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    run = Run(tmp_path / "run")
    assert run.read("questions").num_rows == 6 and run.read("nodes").num_rows >= 6
    assert set(run.stage_configs()) == {"mcts", "verify", "judge", "filter"}
    assert run.read("verdicts").num_rows > 0
    complete = sum(run.read("nodes").column("complete").to_pylist())
    assert run.read("judgements").num_rows == complete
    assert run.read_report("filter")["rows_in"] == complete
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert run.read("questions").num_rows == 6 and run.read("judgements").num_rows == complete
    assert run.read_report("mcts")["skipped_done"] == 6 and run.read_report("judge")["rows_in"] == 0
