import json
import time

import pytest

from prmfactory.verify.arith import Unparsable, parse
from prmfactory.verify.check import StepVerifier, verify_step


@pytest.mark.parametrize("text, value", [
    ("16 - 3 - 4", "9"), ("3.5 * 4000", "14000"), (r"\frac{1}{3} \times 18", "6"), (r"\sqrt{16}", "4"),
    ("\\sqrt169", "13"), (r"\sqrt[3]{27}", "3"), ("5!", "120"), (r"\binom{5}{2}", "10"), ("50%", "1/2"),
    ("2(3+4)", "14"), ("-3^2", "-9"), ("2^-1", "1/2"), ("0.1 + 0.2", "3/10"), ("2 ** 3", "8"),
])
def test_parser_values(text, value):
    assert str(parse(text)) == value


@pytest.mark.parametrize("text", [
    "__import__('os').system('true')", "9**9**9**9", "10000!", "(" * 300 + "1" + ")" * 300, "1 +" * 200 + "1",
    "f(2)", "4√3 / 6√3", "1/0", "2^x", "e^2", "", "3 + ",
])
def test_parser_refuses(text):
    with pytest.raises(Unparsable):
        parse(text)


CASES = [
    # arithmetic, chains, LaTeX, separators, currency, percent, factorial
    ("So they have \\(18 - 6 = 12\\) flamingos left.", "correct"),
    ("So they have \\(18 - 6 = 11\\) flamingos left.", "incorrect"),
    ("Total = $3.5 * 4000 = $14,000.", "correct"),
    ("Total = $3.5 * 4000 = $14,500.", "incorrect"),
    ("9 - 3 (from snack) - 2 (for lunch) = 4.", "correct"),
    ("3 plates × $6.00/plate = $18.00.", "correct"),
    ("16 + 5 = 21 = 20 + 1", "correct"),
    ("16 + 5 = 21 = 20 + 2", "incorrect"),
    (r"\(\frac{3}{4} \cdot 12 = 9\)", "correct"),
    (r"\(\frac{3}{4} \div 3 = \frac{1}{3}\)", "incorrect"),
    ("(2/5) * 100 = 40%", "correct"),
    ("5! = 120", "correct"),
    (r"\binom{6}{2} = 15", "correct"),
    (r"\sqrt{144} = 13", "incorrect"),
    # rounding tolerance from the precision shown; approximate words
    ("10/3 = 3.33", "correct"),
    ("10/3 = 3.2", "incorrect"),
    ("The mean is 22/7 ≈ 3.14.", "correct"),
    ("That is about 1000 / 7 = 143 boxes.", "correct"),
    # identities and equations
    ("(x - 16 + 100) - 25 = x + 84 - 25", "correct"),
    ("(x - 16 + 100) - 25 = x + 69 - 25", "incorrect"),
    ("2(x + 3) + x = 3x + 6", "correct"),
    ("3x + 5 = 20", "unverifiable"),
    ("3x + 5 = 20, so x = 5", "correct"),
    ("3x + 5 = 20, so x = 6", "incorrect"),
    ("3.01B = 4500, so B = 1495.02", "correct"),
    # tested and rejected, labels, incomplete sides
    ("If x = 3, then 9 + 3 = 13, which does not work.", "unverifiable"),
    ("Checking 7: 7 * 7 = 48? No.", "unverifiable"),
    ("Total oranges in 8 boxes = 8 * 20 = 160 oranges.", "correct"),
    ("1 hour = 60 minutes", "unverifiable"),
    ("3 dozen = 36 eggs", "unverifiable"),
    ("The sum of 3 and 4 = 7", "unverifiable"),
    ("1/3 of 18 = 6", "unverifiable"),
    ("sin(30) = 0.5", "unverifiable"),
    ("2250 ÷ 360 = 6 full rotations", "unverifiable"),
    ("410 ÷ 333 = 1 with a remainder of 77", "correct"),
    (r"Divide 706 by 7: \(706 \div 7 = 101\) with a remainder of 1.", "incorrect"),
    ("1529 divided by 6 is 254 R 5", "correct"),
    ("5 + 706 ÷ 7 = 101 r 1", "unverifiable"),
    ("because 187 = 13 * 14 and 77 = 7 * 11", "incorrect"),
    ("She walked 2 + 1 = 3 and 1/2 miles", "unverifiable"),
    # aligned chains, complex numbers, derivations between equations
    ("\\begin{align*} x^2 + x^3 + 2x^2 - 3x^2 + 3x &= x^3 + (x^2 - 3x^2 + 2x^2) + 3x \\\\ &= x^3 + (-3x^2 + 2x^2) + 3x "
     "\\end{align*}", "incorrect"),
    ("\\begin{align*} (x + 1)^2 &= x^2 + 2x + 1 \\\\ &= x^2 + 2x + 2 \\end{align*}", "incorrect"),
    ("\\[ (5 - 8i)(30 + 48i) = 150 + 384 + 240i - 240i = 534 + 240i \\]", "incorrect"),
    ("\\[ (5 - 8i)(30 + 48i) = 534 \\]", "correct"),
    ("0.99B + 1.01B + B = 4500. Combine like terms: 3.01B = 4500.", "incorrect"),
    ("0.99B + 1.01B + B = 4500. Combine like terms: 3B = 4500.", "unverifiable"),
    ("x/3 = 2, which simplifies to 0.33x = 2.", "unverifiable"),
    ("x^3 = 4x. Dividing by x gives x^2 = 4.", "unverifiable"),
    (r"\( x^2 - 11 = 0 \) gives \( x = \pm \sqrt{11} \). The denominator \( x + 1 = 0 \) gives \( x = -1 \).", "correct"),
    ("If Sam had 70 loaves, then the bakery has 7 * 70 - 40 = 470 - 40 = 430 loaves.", "incorrect"),
    (r"\(1 - \frac{x}{x-1} = \frac{x-1-x}{x-1}\)", "correct"),
    (r"\[ a^4 + b^4 = (a^2 + b^2)^2 - 2a^2b^2 = (6^2 - 4)^2 - 2(ab)^2 \]", "correct"),
    ("Multiples of 3 or 5 = 100 + 60 - 20 = 140", "correct"),
    ("We know 2(lw + lh + wh) = 52.", "unverifiable"),
    ("There are no numbers here.", "unverifiable"),
]


@pytest.mark.parametrize("step, verdict", CASES)
def test_step_verdicts(step, verdict):
    assert verify_step(step).verdict == verdict


def test_evidence_names_claim_and_values():
    result = verify_step("So 7 * 8 = 54 apples.")
    claim = result.claims[0]
    assert (claim.text, claim.kind, claim.verdict, claim.value_found, claim.value_claimed) == (
        "7 * 8 = 54", "arithmetic", "incorrect", "56", "54")


HOSTILE = [
    "__import__('os').system('touch {marker}') = 1",
    "9**9**9**9 = 1",
    "10000! = 3",
    "(" * 5000 + "1" + ")" * 5000 + " = 1",
    "1 = " + "1+" * 500_000 + "1",  # a 1 MB step
    "x = " + "9^" * 100 + "9",
]


def test_hostile_steps_end_unverifiable_quickly_without_side_effects(tmp_path):
    marker = tmp_path / "pwned"
    steps = [h.replace("{marker}", str(marker)) for h in HOSTILE]
    started = time.monotonic()
    with StepVerifier() as verifier:
        results = verifier.verify(steps + ["2 + 2 = 4"])
    assert [r.verdict for r in results] == ["unverifiable"] * len(HOSTILE) + ["correct"]
    assert time.monotonic() - started < 20
    assert not marker.exists()


def test_a_claim_over_its_time_budget_is_cut_off():
    with StepVerifier(seconds_per_claim=0.05) as verifier:
        verifier._worker.fn = _sleepy
        results = verifier.verify(["1 + 1 = 2"])
        assert results[0].verdict == "unverifiable" and results[0].claims[0].kind == "timeout"
        assert verifier.timeouts == 1


def _sleepy(steps):
    time.sleep(30)


def _node(qid, node_id, steps):
    return {"question_id": qid, "node_id": node_id, "parent_id": None if node_id == "0" else "0", "depth": len(steps),
            "steps": steps, "mc_value": 0.5, "num_rollouts": 2, "num_correct": 1, "visits": 0, "complete": len(steps) == 2, "rollouts": [],
            "strategy": "mc", "segmentation": "blank_line"}


def test_stage_writes_a_verdict_per_step_node_and_checks_final_answers(tmp_path):
    from prmfactory.store import Run
    from prmfactory.stages import execute
    from prmfactory.verify.config import VerifyConfig
    from tests.store.test_store import problem

    run = Run(tmp_path / "run")
    right = ["Ann has 3 + 4 = 7 apples.", "So 7 * 2 = 14. The answer is \\boxed{14}."]
    wrong = ["Ann has 3 + 4 = 8 apples.", "The answer is \\boxed{16}."]
    with run.writing():
        text = "Ann has 3 apples and buys 4 more. Then she doubles them. How many apples does Ann have?"
        run.commit({"problems": [dict(problem(q), problem=text, answer="14") for q in ("q1", "q2")],
                    "nodes": [_node("q1", "0", []), _node("q1", "1", right[:1]), _node("q1", "2", right),
                              _node("q2", "0", []), _node("q2", "1", wrong[:1]), _node("q2", "2", wrong)]})
    report = execute("verify", run, VerifyConfig(quiet=True))
    rows = {(r["question_id"], r["node_id"], r["step_index"]): r for r in run.read("verdicts").to_pylist()}
    # complete solutions (node 2) get a verdict per step; other nodes one for their last step
    assert set(rows) == {("q1", "1", 0), ("q1", "2", 0), ("q1", "2", 1), ("q2", "1", 0), ("q2", "2", 0), ("q2", "2", 1)}
    assert rows[("q1", "2", 1)]["verdict"] == "correct"
    assert [c["kind"] for c in rows[("q1", "2", 1)]["claims"]] == ["arithmetic", "final_answer"]
    assert rows[("q2", "1", 0)]["verdict"] == "incorrect" and rows[("q2", "2", 0)]["verdict"] == "incorrect"
    final = rows[("q2", "2", 1)]["claims"][-1]
    assert (final["kind"], final["verdict"], final["value_claimed"]) == ("final_answer", "incorrect", "16")
    assert report.counts == {"correct": 3, "incorrect": 3, "unverifiable": 0, "claim_timeouts": 0}
    again = execute("verify", run, VerifyConfig(quiet=True))
    assert again.skipped_done == 2 and again.already_done and run.read("verdicts").num_rows == 6


def test_processbench_metrics_match_eval_on_the_same_predictions(tmp_path):
    from typer.testing import CliRunner

    from prmfactory.cli import app

    data = tmp_path / "pb"
    data.mkdir()
    records = [
        {"id": "a", "problem": "p", "steps": ["2 + 2 = 4", "4 * 3 = 13", "So 13."], "label": 1},
        {"id": "b", "problem": "p", "steps": ["2 + 2 = 4", "done"], "label": -1},
        {"id": "c", "problem": "p", "steps": ["x is big", "so 5 - 1 = 4"], "label": 0},
    ]
    (data / "toy.json").write_text(json.dumps(records))
    runner = CliRunner()
    result = runner.invoke(app, ["verify", "--processbench", str(data), "--output", str(tmp_path / "v")])
    assert result.exit_code == 0, result.output
    verified = json.loads((tmp_path / "v" / "metrics.json").read_text())
    assert verified["splits"]["toy"] == {"acc_err": 0.5, "acc_cor": 1.0, "f1": 0.6667, "n": 3}
    stats = verified["flag_statistics"]["toy"]
    assert stats["flags"] == 1 and stats["flags_at_first_error"] == 1 and stats["steps"] == 7
    result = runner.invoke(app, ["eval", "processbench", "--data", str(data), "--predictions",
                                 str(tmp_path / "v" / "predictions.jsonl"), "--output", str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    evaluated = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert evaluated["splits"] == verified["splits"] and evaluated["average_f1"] == verified["average_f1"]
    assert (tmp_path / "e" / "metrics.png").stat().st_size > 0 and "| toy | 3 |" in (tmp_path / "e" / "metrics.md").read_text()


@pytest.mark.parametrize("problem_text, earlier, step, verdict", [
    # every operand given by the problem (digits or number words) or by an earlier step: correct
    ("Ann has 30 cards and triples them.", [], "Ann has 30 * 3 = 90.", "correct"),
    ("Ann has 30 cards and triples them.", ["Ann has 30 * 3 = 90."], "She gives away 90 - 1 = 89.", "correct"),
    ("A shirt costs $1,250 and is 20% off.", [], "The discount is 1250 * 0.2 = 250.", "correct"),
    ("Half of the 18 eggs break.", [], "18 * 0.5 = 9 eggs break.", "correct"),
    # right arithmetic on a quantity nobody gave: the step's own words never ground it
    ("Ann has 30 cards and triples them.", [], "The number is doubled, so Ann has 30 * 2 = 60.", "unverifiable"),
    ("Ann has 30 cards and triples them.", ["Ann has 30 * 3 = 90."], "Ann has 80 - 5 = 75.", "unverifiable"),
    # a wrong computation stays wrong whatever its operands
    ("Ann has 30 cards and triples them.", [], "Ann has 30 * 2 = 70.", "incorrect"),
])
def test_grounding_keeps_correct_only_for_computations_on_given_numbers(problem_text, earlier, step, verdict):
    from prmfactory.verify.grounding import given_before_each, with_grounding

    result = with_grounding(verify_step(step), given_before_each(problem_text, [*earlier, step])[-1])
    assert result.verdict == verdict
    if verdict == "unverifiable":
        assert [c["kind"] for c in result.claim_rows()] == ["ungrounded"]
