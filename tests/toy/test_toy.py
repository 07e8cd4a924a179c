import json
import random

import pytest
from typer.testing import CliRunner

from prmfactory.cli import app
from prmfactory.toy.critique import corrupt, critique, judge_prompt
from prmfactory.toy.oracle import final_answer_correct, first_error
from prmfactory.toy.problems import Operation, ToyProblem, generate, parse_problem, to_input_row

ANN = ToyProblem("Ann", "apples", 23, (Operation("+", 14, 0), Operation("-", 7, 1), Operation("*", 2, 0)), 0)


def test_problem_text_and_reference():
    assert ANN.text == ("Ann has 23 apples. Ann buys 14 more apples. Ann loses 7 apples. Ann doubles the number of "
                        "apples. How many apples does Ann have now?")
    assert ANN.values == [23, 37, 30, 60] and ANN.answer == 60
    assert ANN.reference_steps == ["Ann buys 14 more, so Ann has 23 + 14 = 37.", "Ann loses 7, so Ann has 37 - 7 = 30.",
                                   "Ann doubles them, so Ann has 30 * 2 = 60.", "The answer is \\boxed{60}."]


@pytest.mark.parametrize("steps, expected", [
    (ANN.reference_steps, -1),
    (["23 + 14 = 37", "37 - 7 = 30", "2 * 30 = 60", "So \\boxed{60}"], -1),  # commutative, terse
    (["23 + 14 = 38", "38 - 7 = 31", "31 * 2 = 62", "\\boxed{62}"], 0),  # wrong result, carried on
    (["23 + 14 = 37", "36 - 7 = 29", "29 * 2 = 58", "\\boxed{58}"], 1),  # miscopied carried value
    (["23 + 14 = 37", "37 - 8 = 29", "29 * 2 = 58", "\\boxed{58}"], 1),  # wrong operand
    (["23 + 14 = 37", "37 + 7 = 44", "44 * 2 = 88", "\\boxed{88}"], 1),  # wrong operation
    (["23 + 14 = 37", "37 - 7 = 30", "30 * 2 = 60", "\\boxed{61}"], 3),  # wrong final answer
    (["23 + 14 = 37", "37 - 7 = 30", "\\boxed{30}"], 2),  # skipped a step
    (["23 + 14 = 37", "37 - 7 = 30", "30 * 2 = 60", "\\boxed{60}", "extra"], 4),
    (["23 + 14 = 37 and 37 - 7 = 30", "30 * 2 = 60", "\\boxed{60}"], 0),  # two equations in one step
    (["Ann buys apples.", "37 - 7 = 30"], 0),  # no equation
    (["23 + 14 = 37", "37 - 7 = 30"], -1),  # stopped early: no wrong step, no answer either
])
def test_oracle_first_error(steps, expected):
    assert first_error(ANN, steps) == expected


def test_final_answer_correct():
    assert final_answer_correct(ANN, ANN.reference_steps)
    assert not final_answer_correct(ANN, ANN.reference_steps[:-1])
    assert final_answer_correct(ANN, ["23 + 14 = 38", "\\boxed{60}"])  # right answer, wrong step


def test_generator_is_deterministic_and_within_bounds():
    first, second = generate(300, "train", 7), generate(300, "train", 7)
    assert [p.text for p in first] == [p.text for p in second]
    assert [p.text for p in generate(300, "train", 8)] != [p.text for p in first]
    for problem in first:
        assert 2 <= len(problem.operations) <= 6
        assert all(0 <= v <= 99 for v in problem.values)
        assert first_error(problem, problem.reference_steps) == -1
    assert {o.op for p in first for o in p.operations} == {"+", "-", "*", "/"}
    assert len({o.wording for p in first for o in p.operations if o.op == "+"}) > 1


def test_train_and_test_splits_are_disjoint_for_any_seeds():
    train = {p.text for seed in (0, 1) for p in generate(2000, "train", seed)}
    test = {p.text for seed in (0, 2) for p in generate(500, "test", seed)}
    assert not train & test


def test_problem_text_parses_back():
    for problem in generate(500, "test", 3):
        assert parse_problem(problem.text) == problem
    assert parse_problem("What is 2 + 2?") is None
    assert parse_problem(ANN.text.replace("Ann loses", "Bob loses")) is None


def test_corruption_and_critique_agree_with_the_oracle():
    rng = random.Random(0)
    for problem in generate(300, "train", 4):
        problem, steps = corrupt(problem, rng)
        error = first_error(problem, steps)
        text = critique(problem, steps)
        assert text.endswith(f"\\boxed{{{error}}}")
        assert text.count("wrong") == (0 if error == -1 else 1)
        assert f"[{len(steps) - 1}] {steps[-1]}" in judge_prompt(problem.text, steps)


def test_toy_problems_and_check_commands(tmp_path):
    runner = CliRunner()
    problems = tmp_path / "p.jsonl"
    assert runner.invoke(app, ["toy", "problems", "--n", "5", "--split", "test", "--output", str(problems)]).exit_code == 0
    rows = [json.loads(line) for line in problems.read_text().splitlines()]
    assert len(rows) == 5 and all(r["id"].startswith("toy-") and r["answer"].lstrip("-").isdigit() for r in rows)
    assert rows == [to_input_row(p) for p in generate(5, "test", 0)]
    problem = parse_problem(rows[0]["problem"])
    solutions = tmp_path / "s.jsonl"
    wrong = list(problem.reference_steps)
    wrong[0] = wrong[0].replace("=", "= 1 +")
    solutions.write_text("\n".join(json.dumps(r) for r in [
        {"id": "right", "problem": rows[0]["problem"], "steps": problem.reference_steps},
        {"id": "wrong", "problem": rows[0]["problem"], "steps": wrong},
        {"id": "other", "problem": "What is 1 + 1?", "steps": ["2"]}]) + "\n")
    out = tmp_path / "o.jsonl"
    result = runner.invoke(app, ["toy", "check", "--input", str(solutions), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        {"id": "right", "first_error": -1}, {"id": "wrong", "first_error": 0},
        {"id": "other", "first_error": None, "error": "not a toy problem"}]
    solutions.write_text('{"id": "x", "problem": "p"}\n')
    bad = runner.invoke(app, ["toy", "check", "--input", str(solutions), "--output", str(out)])
    assert bad.exit_code == 2 and ":1: field 'steps'" in bad.output
