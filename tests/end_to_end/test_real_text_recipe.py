"""The real-text recipe (``pipelines/real_text.yaml``) end to end on a handful of rows, offline: import of
public labels, train-prm with the factory's own rows mixed in, ProcessBench with a threshold calibrated on
one split, and a model card that records the label sources, their counts and the numbers."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from prmfactory.cli import app
from prmfactory.resources import resource_dir
from tests.conftest import FIXTURES
from tests.tiny_gguf import write_tiny_llama_gguf

pytestmark = pytest.mark.slow


def _invoke(args: list) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_the_real_text_recipe_runs_end_to_end_on_a_tiny_gguf(quick_demo, tmp_path, monkeypatch):
    from prmfactory import models

    monkeypatch.setenv("PRMFACTORY_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "_VERIFIED", set())
    base = write_tiny_llama_gguf(tmp_path / "tiny-llama.gguf")
    imported, prm, evaluated = tmp_path / "prmbench-train", tmp_path / "real-text", tmp_path / "real-text-processbench"
    factory_run = quick_demo[0] / "run"

    _invoke(["import", "prmbench", "--input", FIXTURES / "prmbench", "--include", "*_4o_c*", "--output", imported,
             "--quiet"])
    imported_rows = json.loads((imported / "import.json").read_text())["rows"]
    _invoke(["train-prm", "--config", resource_dir("pipelines") / "real_text.yaml", "--data", imported,
             "--output", prm, "--base", base, "--max-steps", 2, "--batch-size", 2, "--max-length", 256,
             "--mix", f"{factory_run}=0.5", "--quiet"])

    lineage = json.loads((prm / "prm.json").read_text())["lineage"]
    imported_part, factory_part = lineage["mixture"]
    assert imported_part["label_sources"] == {"prmbench": imported_rows} == imported_part["label_sources_used"]
    assert imported_part["weight"] == 1 and imported_part["rows_used"] == imported_rows
    (factory_source,) = factory_part["label_sources"]
    assert factory_source.startswith("prmfactory (") and factory_part["weight"] == 0.5
    assert factory_part["rows_used"] == round(factory_part["rows"] / 2)
    assert lineage["rows"] == imported_rows + factory_part["rows_used"]
    assert lineage["label_sources"] == {"prmbench": imported_rows, factory_source: factory_part["rows_used"]}

    output = _invoke(["eval", "processbench", "--prm", prm, "--data", FIXTURES / "processbench",
                      "--output", evaluated, "--threshold", "auto", "--calibrate-on", "gsm8k", "--quiet"])
    metrics = json.loads((evaluated / "metrics.json").read_text())
    assert set(metrics["splits"]) == {"math"} and metrics["calibration"]["split"] == "gsm8k"
    assert "threshold" in output
    card = (prm / "README.md").read_text()
    assert f"prmbench: {imported_rows} rows" in card and f"{factory_source}: {factory_part['rows_used']} rows" in card
    assert f"| {factory_run} | {factory_source} | 0.5 | {factory_part['rows']} | {factory_part['rows_used']} |" in card
    assert "processbench" in card and str(metrics["threshold"]) in card
