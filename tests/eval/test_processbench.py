import json

import pytest

from prmfactory.errors import UsageError
from prmfactory.eval.processbench import metrics, read_predictions, split_metrics
from prmfactory.prm import first_below


def test_hand_computed_f1():
    labels = [-1, -1, -1, -1, 2, 0, 3, 1]
    predictions = [-1, -1, 1, -1, 2, 0, 1, -1]
    # correct samples: 3 of 4 right -> 0.75; erroneous: 2 of 4 exact -> 0.5; F1 = 2*.5*.75/1.25 = 0.6
    assert split_metrics(labels, predictions) == {"acc_err": 0.5, "acc_cor": 0.75, "f1": 0.6, "n": 8}


def test_average_over_splits_and_missing_prediction():
    splits = {"a": [{"id": 1, "label": -1}, {"id": 2, "label": 0}], "b": [{"id": 3, "label": 1}]}
    result = metrics(splits, {1: -1, 2: 0, 3: 0})
    assert result["splits"]["a"]["f1"] == 1.0 and result["splits"]["b"]["f1"] == 0.0 and result["average_f1"] == 0.5
    with pytest.raises(UsageError, match="no prediction"):
        metrics(splits, {1: -1})


def test_threshold_protocol_and_prediction_file(tmp_path):
    assert first_below([0.9, 0.7, 0.4, 0.1]) == 2 and first_below([0.9, 0.6]) == -1
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "x", "step_scores": [0.9, 0.3]}) + "\n" + json.dumps({"id": "y", "prediction": -1}) + "\n")
    splits = {"s": [{"id": "x", "steps": ["a", "b"], "label": 1}, {"id": "y", "steps": ["c"], "label": -1}]}
    assert read_predictions(path, splits) == {"x": 1, "y": -1}
    assert read_predictions(path, splits, threshold=0.2) == {"x": -1, "y": -1}
    path.write_text('{"id": "x", "step_scores": "high"}\n')
    with pytest.raises(UsageError, match=":1: field 'step_scores'"):
        read_predictions(path, splits)


def test_threshold_calibration_picks_the_best_dev_threshold(tmp_path):
    from prmfactory.eval.processbench import calibrate_threshold

    splits = {"dev": [{"id": "a", "steps": ["x", "y"], "label": 1}, {"id": "b", "steps": ["x", "y"], "label": -1}]}
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "step_scores": [0.9, 0.3]}\n{"id": "b", "step_scores": [0.9, 0.4]}\n')
    threshold, f1 = calibrate_threshold(splits, path)  # below 0.3 flags neither, above 0.4 flags both
    assert 0.3 < threshold <= 0.4 and f1 == 1.0


def test_a_predictions_file_as_the_scorer_writes_it_reads_back(tmp_path):
    splits = {"s": [{"id": "a", "steps": ["x", "y", "z"], "label": 1}]}
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "split": "s", "step_scores": [0.9, 0.3, null], "prediction": 1}\n')
    assert read_predictions(path, splits, threshold=0.5) == {"a": 1}
    assert read_predictions(path, splits, threshold=0.2) == {"a": -1}  # the scores decide; null is never an error


def test_scoring_in_length_order_gives_each_solution_its_own_scores():
    from prmfactory.prm import score_with_progress

    class EchoPRM:  # a step's score is its own length, so a mix-up shows
        def score_batch(self, items):
            return [[len(step) / 100 for step in steps] for _, steps in items]

    items = [("p" * (7 * i % 5), ["x" * (i % 7 + 1), "y" * (i % 3 + 1)]) for i in range(150)]
    scores = score_with_progress(EchoPRM(), items, quiet=True, chunk=16)
    assert scores == [[len(a) / 100, len(b) / 100] for _, (a, b) in items]


def calibration_data(tmp_path):
    """Two splits whose scores read right with a threshold in (0.3, 0.4], wrong at 0.5; their predictions file."""
    data = tmp_path / "data"
    data.mkdir()
    dev = [{"id": "d1", "problem": "p", "steps": ["x", "y"], "label": 1},
           {"id": "d2", "problem": "p", "steps": ["x", "y"], "label": -1}]
    test = [{"id": "t1", "problem": "p", "steps": ["x", "y"], "label": 1},
            {"id": "t2", "problem": "p", "steps": ["x", "y"], "label": -1}]
    (data / "dev.json").write_text(json.dumps(dev))
    (data / "test.json").write_text(json.dumps(test))
    scores = {"d1": [0.9, 0.3], "d2": [0.9, 0.4], "t1": [0.8, 0.32], "t2": [0.7, 0.45]}
    predictions = tmp_path / "p.jsonl"
    predictions.write_text("".join(json.dumps({"id": i, "step_scores": s}) + "\n" for i, s in scores.items()))
    return data, predictions


def test_threshold_auto_is_chosen_on_one_split_and_only_the_others_are_reported(tmp_path):
    from tests.cli.test_bad_input import assert_one_line_error, invoke

    data, predictions = calibration_data(tmp_path)
    result = invoke("eval", "processbench", "--data", data, "--predictions", predictions, "--output", tmp_path / "out",
                    "--threshold", "auto", "--calibrate-on", "dev")
    assert result.exit_code == 0, result.output
    metrics_file = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert 0.3 < metrics_file["threshold"] <= 0.4 and metrics_file["calibration"]["split"] == "dev"
    assert list(metrics_file["splits"]) == ["test"] and metrics_file["average_f1"] == 1.0
    fixed = invoke("eval", "processbench", "--data", data, "--predictions", predictions, "--output", tmp_path / "o2")
    assert json.loads((tmp_path / "o2" / "metrics.json").read_text())["average_f1"] == 0.0  # at 0.5 both flagged
    for args, message in ((["--threshold", "auto"], "--threshold auto needs --calibrate-on"),
                          (["--threshold", "auto", "--calibrate-on", "gsm8k"], "not a split of the data"),
                          (["--calibrate-on", "dev"], "--calibrate-on goes with --threshold auto"),
                          (["--threshold", "1.5"], "expected a number in [0, 1] or auto")):
        bad = invoke("eval", "processbench", "--data", data, "--predictions", predictions, "--output",
                     tmp_path / "bad", *args)
        assert_one_line_error(bad, 2, message)


def test_a_calibrated_threshold_is_kept_in_the_prm_and_used_by_serve_and_rl(tmp_path, discriminative_prm):
    import shutil

    from fastapi.testclient import TestClient

    from prmfactory.eval.processbench import evaluate_prm
    from prmfactory.prm import PRM
    from prmfactory.serve.app import create_app

    prm_path = tmp_path / "prm"
    shutil.copytree(discriminative_prm[0], prm_path)
    data, _ = calibration_data(tmp_path)
    result = evaluate_prm(prm_path, data, tmp_path / "out", calibrate_on="dev", quiet=True)
    prm = PRM.from_pretrained(prm_path)
    assert prm.threshold == result["threshold"] == prm.meta.threshold
    assert prm.meta.threshold_calibration["split"] == "dev" and list(result["splits"]) == ["test"]
    scores = prm.score("p", ["x", "y"])
    reward = prm.rewards(["p"], ["x\n\ny"])[0]  # the RL adapters' path
    assert reward.first_error == first_below(scores, prm.threshold)
    with TestClient(create_app(prm)) as client:
        assert client.get("/v1/models").json()["data"][0]["threshold"] == prm.threshold


@pytest.mark.parametrize("choice", ["truncate", "skip", "error"])
def test_a_solution_longer_than_the_prm_is_counted_and_handled_as_chosen(tmp_path, discriminative_prm, choice):
    from tests.cli.test_bad_input import assert_one_line_error, invoke

    prm = discriminative_prm[0]
    data = tmp_path / "pb"
    data.mkdir()
    long_steps = [f"Step {i}: " + "12 + 30 = 42 and 42 - 30 = 12. " * 12 for i in range(20)]  # far past max_length
    records = [{"id": "short", "problem": "What is 1 + 1?", "steps": ["1 + 1 = 2", "The answer is 2."], "label": -1},
               {"id": "wrong", "problem": "What is 1 + 1?", "steps": ["1 + 1 = 3", "The answer is 3."], "label": 0},
               {"id": "long", "problem": "What is 12 + 30?", "steps": long_steps, "label": -1}]
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    output = tmp_path / "out"
    result = invoke("eval", "processbench", "--prm", prm, "--data", data, "--output", output, "--on-too-long", choice,
                    "--quiet")
    if choice == "error":
        assert_one_line_error(result, 2, "'long'", "longer than the PRM's context", "--on-too-long")
        assert not output.exists()
        return
    assert result.exit_code == 0, result.output
    metrics_json = json.loads((output / "metrics.json").read_text())
    unscored = metrics_json["unscored"]
    assert unscored["solutions"] == 1 and 0 < unscored["steps"] < len(long_steps) and unscored["on_too_long"] == choice
    assert unscored["total_steps"] == len(long_steps) + 4 and unscored["splits"]["test"]["solutions"] == 1
    for text in (result.output, (output / "metrics.md").read_text()):
        assert f"Not scored: {unscored['steps']} of {unscored['total_steps']} steps" in text
        assert "in 1 of 3 solutions" in text
    assert metrics_json["splits"]["test"]["n"] == (2 if choice == "skip" else 3)
    predicted = {json.loads(line)["id"] for line in (output / "predictions.jsonl").read_text().splitlines()}
    assert predicted == ({"short", "wrong"} if choice == "skip" else {"short", "wrong", "long"})
    if choice == "skip":
        assert json.loads((output / "skipped.jsonl").read_text())["id"] == "long"
