"""publish: the dry-run folder loads with datasets, the card's counts match the shards, uploads go through huggingface_hub."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from prmfactory.cli import app
from prmfactory.filter.config import FilterConfig
from prmfactory.stages import execute
from prmfactory.hub import LARGE_FOLDER_BYTES, upload
from tests.filter.test_filter import labelled_run  # noqa: F401  (fixture)

runner = CliRunner()


@pytest.fixture
def filtered_run(labelled_run):  # noqa: F811
    execute("filter", labelled_run, FilterConfig(rule="mc", quiet=True))
    return labelled_run


def test_dry_run_folder_loads_with_datasets_and_the_card_matches_the_shards(filtered_run, tmp_path):
    from datasets import load_dataset

    folder = tmp_path / "dataset"
    result = runner.invoke(app, ["publish", "--run", str(filtered_run.root), "--repo-id", "org/toy-prm",
                                 "--dry-run", str(folder), "--license", "apache-2.0"])
    assert result.exit_code == 0, result.output
    steps = load_dataset(str(folder), split="train")
    assert steps.num_rows == filtered_run.read("steps").num_rows
    assert {"prompt", "completions", "labels", "soft_labels"} <= set(steps.features)
    problems = load_dataset(str(folder), "problems", split="train")
    assert problems.num_rows == 2

    card = (folder / "README.md").read_text()
    _, header, body = card.split("---\n", 2)
    meta = yaml.safe_load(header)
    assert meta["license"] == "apache-2.0"
    configs = {c["config_name"]: c for c in meta["configs"]}
    assert configs["steps"]["default"] is True and set(configs) == {"steps", "problems", "nodes", "verdicts", "judgements"}
    labels = [label for row in filtered_run.read("steps").column("labels").to_pylist() for label in row]
    assert f"| training rows | {len(steps)} |" in body
    assert f"| steps labelled correct | {labels.count(True)} |" in body
    assert f"| steps labelled wrong | {labels.count(False)} |" in body
    for name in configs:
        assert f"| {name} | {sum(s['rows'] for s in filtered_run.shards(name))} |" in body
    assert "| dedupe |" in body and "arXiv:2406.06592" in body
    assert (folder / "run.yaml").exists()
    assert "token" not in card.lower()


def test_dry_run_refuses_a_run_without_steps_and_a_non_empty_folder(labelled_run, tmp_path):  # noqa: F811
    result = runner.invoke(app, ["publish", "--run", str(labelled_run.root), "--repo-id", "o/n", "--dry-run",
                                 str(tmp_path / "x")])
    assert result.exit_code == 2 and "no steps/ shards" in result.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    execute("filter", labelled_run, FilterConfig(rule="mc", quiet=True))
    result = runner.invoke(app, ["publish", "--run", str(labelled_run.root), "--repo-id", "o/n", "--dry-run",
                                 str(tmp_path / "full")])
    assert result.exit_code == 2 and "not empty" in result.output


class RecordingHub:
    """Stands in for huggingface_hub.HfApi (no network here); records the calls publish makes."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
        return call


def test_upload_creates_the_repo_then_uploads_the_folder(tmp_path, monkeypatch):
    (tmp_path / "README.md").write_text("card")
    hub = RecordingHub()
    upload(tmp_path, "org/name", private=True, revision="v1", create_pr=True, api=hub)
    assert [c[0] for c in hub.calls] == ["create_repo", "upload_folder"]
    assert hub.calls[0][2] == {"repo_type": "dataset", "private": True, "exist_ok": True}
    assert hub.calls[1][2]["create_pr"] is True and hub.calls[1][2]["revision"] == "v1"
    monkeypatch.setattr("prmfactory.hub.LARGE_FOLDER_BYTES", 1)
    hub = RecordingHub()
    upload(tmp_path, "org/name", revision="v1", api=hub)
    assert [c[0] for c in hub.calls] == ["create_repo", "create_branch", "upload_large_folder"]
    assert LARGE_FOLDER_BYTES > 2**30
