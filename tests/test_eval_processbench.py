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
