import json
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


def processbench_records(n: int) -> list[dict]:
    """ProcessBench-shaped toy solutions, half with an injected error, labelled by the oracle."""
    import random

    from prmfactory.toy.critique import corrupt
    from prmfactory.toy.oracle import first_error
    from prmfactory.toy.problems import generate

    rng, records = random.Random(0), []
    for index, problem in enumerate(generate(n, "test", 3)):
        steps = corrupt(problem, rng)[1] if index % 2 else problem.reference_steps
        records.append({"id": f"toy-{index}", "problem": problem.text, "steps": steps,
                        "label": first_error(problem, steps)})
    return records


def test_processbench_after_a_pipeline_without_train_prm_is_refused_before_it_runs(tmp_path):
    from typer.testing import CliRunner

    from prmfactory.cli import app

    problems = tmp_path / "problems.jsonl"
    problems.write_text('{"problem": "1 + 1?", "answer": "2"}\n')
    result = CliRunner().invoke(app, ["run", str(resource_dir("pipelines") / "toy.yaml"), "--input", str(problems),
                                      "--output", str(tmp_path / "run"), "--processbench", str(problems)])
    assert result.exit_code == 2 and "no train-prm stage" in result.output
    assert not (tmp_path / "run").exists()
    with_prm = tmp_path / "with_prm.yaml"
    with_prm.write_text(yaml.safe_dump({"stages": [{"stage": "mcts", "config": {"policy": "toy"}},
                                                   {"stage": "train-prm", "config": {"kind": "generative"}}]}))
    for flags, word in ((["--dtype", "int8"], "'int8' is not one of 'float32'"),
                        (["--prm-backend", "vllm"], "cannot be scored with backend 'vllm' (supported: transformers)")):
        result = CliRunner().invoke(app, ["run", str(with_prm), "--input", str(problems), "--output",
                                          str(tmp_path / "run"), "--processbench", str(problems), *flags])
        assert result.exit_code == 2 and word in result.output, result.output
        assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_run_on_a_finished_pipeline_does_no_work_then_evaluates_its_prm(quick_demo, tmp_path):
    """`prmfactory run` over the demo's finished run (the quick demo ran demo.yaml through the same
    pipeline runner): every stage finds its work done, costs no engine start, and --processbench
    evaluates the pipeline's own PRM into RUN/eval-processbench."""
    demo, _ = quick_demo
    run = Run(demo / "run")
    rows = {dataset: run.read(dataset).num_rows for dataset in run.datasets()}
    bench = tmp_path / "bench" / "toy.jsonl"
    bench.parent.mkdir()
    bench.write_text("".join(json.dumps(record) + "\n" for record in processbench_records(8)))
    command = CLI + ["run", str(resource_dir("pipelines") / "demo.yaml"), "--input", str(demo / "train-problems.jsonl"),
                     "--output", str(demo / "run"), "--processbench", str(bench.parent)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {dataset: run.read(dataset).num_rows for dataset in run.datasets()} == rows
    assert run.read_report("mcts")["skipped_done"] == rows["problems"] and run.read_report("mcts")["rows_out"] == 0
    assert "the PRM was already trained on" in result.stderr  # the stage lines go to stderr, results to stdout
    evaluated = json.loads((demo / "run" / "eval-processbench" / "metrics.json").read_text())
    assert evaluated["splits"]["toy"]["n"] == 8 and "| toy | 8 |" in result.stdout
