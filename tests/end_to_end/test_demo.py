"""The demo end to end on a reduced setting: every artefact exists, the report adds up, a rerun reuses the work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prmfactory.demo import SIZES, run_demo


@pytest.mark.slow
def test_quick_demo_runs_end_to_end_and_a_rerun_reuses_everything(quick_demo):
    output, report = quick_demo
    saved = json.loads((output / "report.json").read_text())
    for name, path in saved["artefacts"].items():
        assert Path(path).exists(), name
    assert set(saved["rules"]) == {"mc", "hybrid", "rpe", "grounded"}
    assert saved["processbench"]["splits"]["toy"]["n"] == SIZES["quick"].test_solutions
    assert saved["bon"]["problems"] == SIZES["quick"].bon_problems and saved["bon"]["samples"] == SIZES["quick"].bon_samples
    assert 0 <= report["headline"]["prm_processbench_f1"] <= 1
    markdown = (output / "report.md").read_text()
    assert "labels.png" in markdown and "eval-bon/bon.png" in markdown and (output / "labels.png").exists()
    assert markdown.index("| headline | measured | goal | met |") < markdown.index("## Step labels")
    card = (output / "run" / "prm" / "README.md").read_text()
    assert "processbench:processbench" in card and "best_of_4" in card

    candidates = (output / "eval-bon" / "candidates.jsonl").read_text()
    steps = (output / "run" / "steps").iterdir().__next__().stat().st_mtime
    again = run_demo(output, SIZES["quick"], quiet=True)
    assert again["bon"] == report["bon"] and again["processbench"] == report["processbench"]
    assert (output / "eval-bon" / "candidates.jsonl").read_text() == candidates
    assert next((output / "run" / "steps").iterdir()).stat().st_mtime == steps
    assert (output / "run" / "prm" / "log.txt").read_text().count("[train-prm] training") == 1
