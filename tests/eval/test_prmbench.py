"""PRMBench protocol: samples built as its loader builds them, metrics checked by hand, predictions checked."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from prmfactory.cli import app
from prmfactory.errors import UsageError
from prmfactory.eval.prmbench import load_samples, prmbench_metrics, read_predictions, strip_step_number
from tests.conftest import FIXTURES


def _record(idx, classification, steps, errors, **extra):
    return {"idx": idx, "classification": classification, "modified_question": f"Q{idx}?",
            "modified_process": steps, "error_steps": errors, "original_question": f"Q{idx}?",
            "original_process": [f"{i + 1}. fine {i}" for i in range(3)], **extra}


@pytest.fixture
def bench(tmp_path):
    folder = tmp_path / "bench"
    folder.mkdir()
    (folder / "a_circular.jsonl").write_text("\n".join(json.dumps(r) for r in [
        _record("p0", "circular", ["1. a", "2. b", "3. c", "4. d"], [2, 3]),
        _record("p1", "circular", ["Step 1. a", "Step 2. b"], [2]),
    ]) + "\n")
    (folder / "b_redundency.jsonl").write_text("\n".join(json.dumps(r) for r in [
        _record("p0", "redundency", ["1. a", "2. b", "3. c"], [3, 9]),  # 9: past the last step
        _record("p0", "redundency", ["1. other"], [1]),  # same sample id: skipped, as PRMBench's loader does
    ]) + "\n")
    return folder


def test_samples_are_built_as_prmbench_builds_them(bench):
    samples = {s.id: s for s in load_samples([bench])}
    assert set(samples) == {"circular_p0", "circular_p1", "redundency_p0", "correct_p0"}
    assert samples["circular_p0"].steps == ["a", "b", "c", "d"] and samples["circular_p0"].error_steps == {1, 2}
    assert samples["circular_p1"].steps == ["a", "b"]
    assert samples["correct_p0"].error_steps == frozenset() and samples["correct_p0"].steps == ["fine 0", "fine 1", "fine 2"]
    assert samples["redundency_p0"].error_steps == {2} and samples["redundency_p0"].steps_out_of_range == 1
    assert strip_step_number("  12. x = 3.5") == "x = 3.5" and strip_step_number("Step 3. y") == "y"


def _predict(tmp_path, lines):
    path = tmp_path / "predictions.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def test_metrics_by_hand(bench, tmp_path):
    samples = load_samples([bench])
    predictions = _predict(tmp_path, [
        # wrong steps 1, 2: predicted [valid, invalid, valid, invalid] -> TP 1 (step 0), TN 1 (step 1), FP 1 (step 2), FN 1 (step 3)
        {"idx": "circular_p0", "step_scores": [0.9, 0.2, 0.7, 0.1]},
        # wrong step 1: [valid, valid] -> TP 1, FP 1; the first error is missed
        {"idx": "circular_p1", "step_labels": [True, True]},
        # wrong step 2; step 1 unscored (null) -> TP 1, TN 1
        {"idx": "redundency_p0", "step_scores": [0.8, None, 0.5]},  # 0.5 is not above 0.5: invalid
        {"idx": "correct_p0", "step_labels": [True, False, True]},
    ])
    result = prmbench_metrics(samples, read_predictions(predictions, samples))
    circular = result["categories"]["circular"]
    assert circular["confusion"] == {"TP": 2, "FP": 2, "TN": 1, "FN": 1}
    # F1 on valid steps: P 2/4, R 2/3 -> 4/7; on wrong steps: P 1/2, R 1/3 -> 0.4; PRMScore (4/7 + 0.4) / 2
    assert circular["f1"] == pytest.approx(4 / 7, abs=1e-4) and circular["negative_f1"] == pytest.approx(0.4)
    assert circular["prm_score"] == pytest.approx((4 / 7 + 0.4) / 2, abs=1e-4)
    assert circular["first_error_acc"] == 0.5 and circular["samples"] == 2
    redundancy = result["categories"]["redundency"]
    assert redundancy["confusion"] == {"TP": 1, "FP": 0, "TN": 1, "FN": 0} and redundancy["prm_score"] == 1.0
    correct = result["categories"]["correct"]
    assert correct["confusion"] == {"TP": 2, "FP": 0, "TN": 0, "FN": 1}
    assert correct["negative_f1"] is None and correct["prm_score"] is None  # no wrong step: undefined, not -1
    # overall: every category but correct
    assert result["overall"]["confusion"] == {"TP": 3, "FP": 2, "TN": 2, "FN": 1} and result["overall"]["samples"] == 3
    assert result["unscored_steps"] == 1 and result["samples_with_error_steps_out_of_range"] == 1


@pytest.mark.parametrize("line, message", [
    ({"idx": "circular_p9", "step_labels": [True]}, "not a sample of the data"),
    ({"idx": "circular_p1", "step_labels": [True]}, "1 entries for 2 steps"),
    ({"idx": "circular_p1", "step_scores": [0.5, 1.5]}, "step_scores"),
    ({"idx": "circular_p1", "step_scores": [0.5, 0.5], "step_labels": [True, True]}, "exactly one of"),
])
def test_bad_predictions_are_one_line_errors(bench, tmp_path, line, message):
    with pytest.raises(UsageError, match=message):
        read_predictions(_predict(tmp_path, [line]), load_samples([bench]))


def test_a_sample_without_prediction_is_an_error(bench, tmp_path):
    with pytest.raises(UsageError, match="no prediction for 3 sample"):
        read_predictions(_predict(tmp_path, [{"idx": "circular_p1", "step_labels": [True, True]}]), load_samples([bench]))


def test_a_bad_record_names_file_line_and_field(tmp_path):
    (tmp_path / "x.jsonl").write_text(json.dumps(_record("p0", "circular", [], [])) + "\n")
    with pytest.raises(UsageError, match=r"x.jsonl:1: field 'modified_process'"):
        load_samples([tmp_path])


def test_cli_with_predictions_on_the_shared_sample_files(tmp_path):
    samples = load_samples([FIXTURES / "prmbench"])
    predictions = _predict(tmp_path, [{"idx": s.id, "step_labels": [i not in s.error_steps for i in range(len(s.steps))]}
                                      for s in samples])
    result = CliRunner().invoke(app, ["eval", "prmbench", "--predictions", str(predictions),
                                      "--data", str(FIXTURES / "prmbench"), "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(metrics["categories"]) == {"circular", "confidence", "correct", "counterfactual", "deception",
                                          "domain_inconsistency", "missing_condition", "multi_solutions", "redundency",
                                          "step_contradiction"}
    assert metrics["overall"]["prm_score"] == 1.0  # the truth itself scores 1
    assert (tmp_path / "out" / "metrics.png").stat().st_size > 0


def test_cli_scores_with_a_prm_and_records_it_in_the_card(tmp_path):
    import torch
    from transformers import Qwen2Config, Qwen2ForTokenClassification

    from prmfactory.prm.folder import PRMMeta
    from prmfactory.toy.build import train_tokenizer
    from tests.prm_replicas import SIZES, TEXTS

    torch.manual_seed(0)
    prm = tmp_path / "prm"
    tokenizer = train_tokenizer(TEXTS, vocab_size=300)
    Qwen2ForTokenClassification(Qwen2Config(vocab_size=len(tokenizer), num_labels=2, **SIZES)).save_pretrained(prm)
    tokenizer.save_pretrained(prm)
    PRMMeta(kind="discriminative", max_length=512, base="random qwen2",  # what train-prm records, made up
            lineage={"rows": 1, "steps": 2, "positive_steps": 1},
            training={"data": {"rows_truncated": 0, "rows_dropped_too_long": 0, "steps_dropped": 0}, "steps": 1,
                      "train_loss": 0.7, "seconds": 1}).save(prm)
    result = CliRunner().invoke(app, ["eval", "prmbench", "--prm", str(prm), "--data", str(FIXTURES / "prmbench"),
                                      "--output", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == len(load_samples([FIXTURES / "prmbench"]))
    evals = json.loads((prm / "prm.json").read_text())["evals"]
    assert "prm_score" in evals["prmbench:prmbench"] and "circular_prm_score" in evals["prmbench:prmbench"]
    assert "prmbench:prmbench" in (prm / "README.md").read_text()


def test_a_folder_gives_its_test_files_and_an_empty_cell_says_why(tmp_path):
    import shutil

    data = tmp_path / "prmbench"
    shutil.copytree(FIXTURES / "prmbench", data)
    (data / "prm800k_train_p1_first400_4o_circular.jsonl").write_text(
        (data / "prm800k_test_p1_4o_circular.jsonl").read_text().replace('"idx": "', '"idx": "train-'))
    test_samples = load_samples([FIXTURES / "prmbench"])
    assert len(load_samples([data])) == len(test_samples)  # the train file is left out
    assert len(load_samples([data, data / "prm800k_train_p1_first400_4o_circular.jsonl"])) > len(test_samples)
    everything_wrong = _predict(tmp_path, [{"idx": s.id, "step_labels": [False] * len(s.steps)} for s in test_samples])
    result = CliRunner().invoke(app, ["eval", "prmbench", "--predictions", str(everything_wrong), "--data", str(data),
                                      "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "1 training files (*_train_*) left out" in result.output
    assert "–: circular: the PRM marks no step valid" in (tmp_path / "out" / "metrics.md").read_text()
