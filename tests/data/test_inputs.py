import json

import pytest

from prmfactory.inputs import MAX_LINE_BYTES, InputFileError, derive_id, load_problems, read_problems
from prmfactory.search.stage import commit_problems
from prmfactory.store import Run
from tests.conftest import FIXTURES

GOOD = '{"id": "a", "problem": "What is 1+1?", "answer": "2"}\n'


def only_issue(path):
    rows, issues = read_problems(path)
    assert len(issues) == 1, issues
    return rows, issues[0]


@pytest.mark.parametrize(
    "content, line, field, message",
    [
        (GOOD + '{"id": "b", "problem": "x", "answer": \n', 2, "", "invalid JSON"),
        (GOOD + '{"id": "b", "answer": "3"}\n', 2, "problem", "missing"),
        (GOOD + '{"id": "b", "problem": "  ", "answer": "3"}\n', 2, "problem", "empty"),
        (GOOD + '{"id": "b", "problem": "x", "answer": ["3"]}\n', 2, "answer", "expected a string, got list"),
        (GOOD + '{"id": "b", "problem": 7, "answer": "3"}\n', 2, "problem", "expected a string, got int"),
        (GOOD + '{"id": "a", "problem": "other", "answer": "3"}\n', 2, "id", "duplicate id 'a' (first seen on line 1)"),
        (GOOD + "\n" + GOOD.replace('"a"', '"b"'), 2, "", "blank line"),
        (GOOD + '{"id": "b", "problem": "x", "ans', 2, "", "truncated last line"),
        (GOOD + "[1, 2]\n", 2, "", "expected a JSON object, got list"),
        (GOOD + '{"id": true, "problem": "x", "answer": "3"}\n', 2, "id", "expected a string or integer"),
    ],
)
def test_bad_line_is_named_with_line_and_field(write_lines, content, line, field, message):
    path = write_lines(content)
    rows, issue = only_issue(path)
    assert issue.source == f"{path}:{line}"
    assert issue.field == field
    assert message in issue.message
    assert [r["question_id"] for r in rows] == ["a"] + (["b"] if field == "" and "blank" in message else [])
    text = str(issue)
    assert f":{line}" in text and (not field or f"'{field}'" in text)


def test_non_utf8_bytes(write_lines):
    path = write_lines(GOOD.encode() + b'{"id": "b", "problem": "caf\xe9", "answer": "3"}\n')
    _, issue = only_issue(path)
    assert issue.source.endswith(":2") and "not valid UTF-8 (byte 0xe9" in issue.message


def test_byte_order_mark(write_lines):
    path = write_lines(b"\xef\xbb\xbf" + GOOD.encode())
    _, issue = only_issue(path)
    assert issue.source.endswith(":1") and "byte-order mark" in issue.message


def test_line_over_size_limit(write_lines):
    big = json.dumps({"id": "b", "problem": "x" * (MAX_LINE_BYTES + 10), "answer": "1"})
    _, issue = only_issue(write_lines(GOOD + big + "\n"))
    assert issue.source.endswith(":2") and "over the" in issue.message


def test_valid_last_line_without_newline_is_accepted(write_lines):
    rows, issues = read_problems(write_lines(GOOD + '{"id": "b", "problem": "y", "answer": 4}'))
    assert not issues and rows[1]["answer"] == "4"


def test_missing_id_is_derived_from_problem_hash(write_lines):
    rows, _ = read_problems(write_lines('{"problem": "What is 2+2?", "answer": "4"}\n'))
    assert rows[0]["question_id"] == derive_id("What is 2+2?")
    assert rows[0]["question_id"].startswith("sha256:")


def test_gsm8k_shape_is_detected():
    rows, issues = read_problems(FIXTURES / "gsm8k_sample.jsonl")
    assert not issues and len(rows) == 3
    assert rows[0]["input_format"] == "gsm8k" and rows[0]["answer"] == "18"
    assert rows[0]["problem"].startswith("Janet")
    assert rows[0]["reference_solution"].endswith("farmer’s market.") and "####" not in rows[0]["reference_solution"]


def test_gsm8k_answer_without_marker_is_an_error(write_lines):
    _, issue = only_issue(write_lines('{"question": "q?", "answer": "no marker"}\n'))
    assert issue.field == "answer" and "####" in issue.message


def test_math_shape_keeps_extra_fields():
    rows, issues = read_problems(FIXTURES / "math500_sample.jsonl")
    assert not issues and rows[0]["input_format"] == "math"
    assert rows[0]["question_id"] == "test/precalculus/807.json"
    assert rows[0]["subject"] == "Precalculus" and rows[0]["level"] == 2
    assert rows[0]["reference_solution"].startswith("We have")
    assert json.loads(rows[0]["extra_json"]) == {"unique_id": "test/precalculus/807.json"}


def test_default_stops_before_any_work_and_lists_every_error(write_lines, tmp_path):
    path = write_lines(GOOD + "nope\n" + '{"id": "c", "answer": "1"}\n')
    with pytest.raises(InputFileError) as excinfo:
        load_problems(path, "auto", skip_invalid=False)
    message = str(excinfo.value)
    assert f"{path}:2" in message and f"{path}:3: field 'problem'" in message and "2 invalid line(s)" in message
    assert excinfo.value.exit_code == 2


def test_mcts_with_bad_input_exits_2_naming_line_and_field_and_creates_nothing(write_lines, tmp_path):
    from typer.testing import CliRunner

    from prmfactory.cli import app

    path = write_lines(GOOD + '{"id": "b", "problem": 3, "answer": "1"}\n')
    result = CliRunner().invoke(app, ["mcts", "--input", str(path), "--output", str(tmp_path / "run"), "--policy", "toy"])
    assert result.exit_code == 2
    assert f"{path}:2: field 'problem': expected a string, got int" in result.output
    assert not (tmp_path / "run").exists()


def test_skip_invalid_processes_valid_lines_and_writes_every_reject(write_lines, tmp_path):
    lines = [GOOD, "nope\n", '{"id": "c", "answer": "1"}\n', '{"id": "d", "problem": "z", "answer": "5"}\n', "\n",
             GOOD]
    path = write_lines("".join(lines))
    run = Run(tmp_path / "run")
    rows, issues = load_problems(path, "auto", skip_invalid=True)
    with run.writing():
        rows = commit_problems(run.commit, run, rows, issues, None, str(path))
    assert [r["question_id"] for r in rows] == ["a", "d"]
    assert sorted(run.read("problems").column("question_id").to_pylist()) == ["a", "d"]
    rejects = [json.loads(line) for line in (run.root / "rejects.jsonl").read_text().splitlines()]
    assert [r["source"].rsplit(":", 1)[1] for r in rejects] == ["2", "3", "5", "6"]
    assert {r["field"] for r in rejects} == {"", "problem", "id"}
    with run.writing():  # a rerun neither duplicates problems nor rejects
        commit_problems(run.commit, run, *load_problems(path, "auto", skip_invalid=True), None, str(path))
    assert run.read("problems").num_rows == 2
    assert len((run.root / "rejects.jsonl").read_text().splitlines()) == 4
