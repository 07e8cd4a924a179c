import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from prmfactory.cli import app
from prmfactory.store import Run
from tests.store.test_store import problem, question

runner = CliRunner()
COMMANDS = ["mcts", "verify", "judge", "filter", "train-prm", "eval", "serve", "publish", "run", "stats", "sql",
            "demo", "toy"]


@pytest.fixture
def run_folder(tmp_path):
    run = Run(tmp_path / "run")
    with run.writing():
        run.commit({"problems": [problem("a"), problem("b")], "questions": [question("a")]})
        run.commit({"questions": [dict(question("b"), status="prefiltered_all_correct")]})
    return run.root


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output


def test_installed_entry_point_runs():
    script = subprocess.run([sys.executable, "-c", "from prmfactory.cli import main; main()", "--help"],
                            capture_output=True, text=True)
    assert script.returncode == 0 and "train-prm" in script.stdout



def test_stats_json_counts_and_distributions(run_folder):
    result = runner.invoke(app, ["stats", str(run_folder), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert stats["datasets"]["problems"]["rows"] == 2
    assert stats["datasets"]["questions"] == {
        "shards": 2, "rows": 2, "questions": 2,
        "distributions": {"status": {"prefiltered_all_correct": 1, "searched": 1}, "strategy": {"mc": 2}}}


def test_stats_table_output(run_folder):
    result = runner.invoke(app, ["stats", str(run_folder)])
    assert result.exit_code == 0 and "questions.status" in result.output


def test_sql_over_stage_views(run_folder):
    result = runner.invoke(app, ["sql", str(run_folder), "SELECT q.question_id, status FROM questions q JOIN problems "
                                 "USING (question_id) ORDER BY 1", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.output.splitlines()] == [
        {"question_id": "a", "status": "searched"}, {"question_id": "b", "status": "prefiltered_all_correct"}]


def test_sql_on_empty_dataset_view(run_folder):
    result = runner.invoke(app, ["sql", str(run_folder), "SELECT count(*) AS n FROM steps", "--format", "csv"])
    assert result.exit_code == 0 and result.output.splitlines()[-1] == "0"


def test_sql_error_is_one_line_exit_2(run_folder):
    result = runner.invoke(app, ["sql", str(run_folder), "SELECT nope FROM problems"])
    assert result.exit_code == 2
    assert "SQL error" in result.output and "Traceback" not in result.output


def test_stats_on_a_folder_that_is_not_a_run(tmp_path):
    result = runner.invoke(app, ["stats", str(tmp_path)])
    assert result.exit_code == 2 and "not a run folder" in result.output


def test_stage_help_lists_every_config_field():
    from typer.testing import CliRunner

    from prmfactory.cli import app
    from prmfactory.cli.options import settable_keys
    from prmfactory.search.config import MctsConfig

    result = CliRunner().invoke(app, ["mcts", "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    for key in settable_keys(MctsConfig):
        flag = "--" + key.replace("_", "-")
        assert flag in result.output or key in result.output, key


def test_set_reaches_nested_fields_and_a_wrong_key_names_the_valid_ones(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import prmfactory.stages
    from prmfactory.cli import app
    from prmfactory.stages import StageReport

    seen = {}

    def fake_execute(name, run, config, **kwargs):
        seen["config"] = config
        return StageReport(stage=name)

    monkeypatch.setattr(prmfactory.stages, "execute", fake_execute)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "manifest.json").write_text('{"format": 1, "datasets": {}}')
    runner = CliRunner()
    ok = runner.invoke(app, ["judge", "--run", str(tmp_path / "run"), "--judge", "j", "--set", "engine.max_num_seqs=64",
                             "--set", "votes=3", "--votes", "5", "--base-url", "http://127.0.0.1:9/v1"])
    assert ok.exit_code == 0, ok.output
    config = seen["config"]
    assert config.engine.max_num_seqs == 64 and config.engine.backend == "openai" and config.votes == 5  # flags win
    bad = runner.invoke(app, ["judge", "--run", str(tmp_path / "run"), "--judge", "j", "--set", "engine.max_seqs=1"])
    assert bad.exit_code == 2
    message = bad.output.strip()
    assert "\n" not in message and "unknown key" in message and "engine.max_num_seqs" in message
    typo = runner.invoke(app, ["judge", "--run", str(tmp_path / "run"), "--judge", "j", "--set", "votes"])
    assert typo.exit_code == 2 and "KEY=VALUE" in typo.output


def test_filter_set_reaches_a_mapping_field(tmp_path):
    from prmfactory.cli.options import parse_sets
    from prmfactory.config import build_config
    from prmfactory.filter.config import FilterConfig

    config = build_config(FilterConfig, "filter", None, parse_sets(FilterConfig, ["hybrid_weights.mc=0.7", "rule=hybrid"]))
    assert config.hybrid_weights["mc"] == 0.7 and config.rule == "hybrid"
