"""prmfactory import: public PRM datasets into TRL stepwise Parquet; every unmappable record rejected with a reason."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from prmfactory.cli import app
from prmfactory.errors import UsageError
from prmfactory.public_data import import_dataset
from tests.conftest import FIXTURES


def _rows(folder):
    return pq.read_table(folder / "part-00000.parquet").to_pylist()


def _rejects(folder):
    return [json.loads(line) for line in (folder / "rejects.jsonl").read_text().splitlines()]


def _shepherd(problem, steps, verdicts):
    text = problem + " " + "\n".join(f"Step {i + 1}: {s} ки" for i, s in enumerate(steps))
    label = problem + " " + "\n".join(f"Step {i + 1}: {s} {v}" for i, (s, v) in enumerate(zip(steps, verdicts)))
    return {"input": text, "label": label, "task": "GSM8K"}


def test_math_shepherd_sample_file(tmp_path):
    report = import_dataset("math-shepherd", FIXTURES / "math_shepherd_samples.jsonl", tmp_path / "out", quiet=True)
    rows = _rows(tmp_path / "out")
    assert report["rows"] == len(rows) == 7 and report["rejected"] == 0
    first = rows[0]
    assert first["prompt"].startswith("Janet pays $40/hour") and first["prompt"].endswith("in a year?")
    assert first["labels"] == [True, True, True, True, False] and len(first["completions"]) == 5
    assert first["completions"][0].startswith("Step 1: Janet spends") and "ки" not in "".join(first["completions"])
    assert first["completions"][-1].endswith("The answer is: 13520")
    assert all(r["segmentation"] == "line" and r["subset"] == "GSM8K" for r in rows)
    assert [r["source_line"] for r in rows] == list(range(1, 8))
    assert len({r["question_id"] for r in rows}) == 7 and rows[0]["question_id"].startswith("sha256:")


def test_math_shepherd_malformed_rows_are_rejected_with_reasons(tmp_path):
    good = _shepherd("What is 2 + 3?", ["2 + 3 = 5", "The answer is: 5"], "+-")
    lines = [
        json.dumps(good),
        json.dumps({**good, "label": good["label"].replace(" -", " x")}),  # a tag replaced by neither + nor -
        json.dumps({"input": "Mr. Rocky has 3 ки apples. How many? Step 1: 3 ки",  # a tag inside the problem
                    "label": "Mr. Rocky has 3 + apples. How many? Step 1: 3 +"}),
        json.dumps({"input": "No tags here", "label": "No tags here"}),
        json.dumps({**good, "input": good["input"] + "\nStep 3: untagged", "label": good["label"] + "\nStep 3: untagged"}),
        json.dumps({"input": "What? First I add. ки", "label": "What? First I add. +"}),  # no "Step 1:"
        "{not json",
        json.dumps([1, 2]),  # not an object: unreadable as a record
        json.dumps({"label": "x"}),
    ]
    data = tmp_path / "shepherd.jsonl"
    data.write_text("\n".join(lines) + "\n")
    report = import_dataset("math-shepherd", data, tmp_path / "out", quiet=True)
    assert [r["labels"] for r in _rows(tmp_path / "out")] == [[True, False]]
    reasons = {r["source_line"]: r["reason"] for r in _rejects(tmp_path / "out")}
    assert reasons == {2: "label_mismatch", 3: "tag_in_problem", 4: "no_tags", 5: "untagged_step", 6: "no_step_1",
                       7: "unreadable_line", 8: "unreadable_line", 9: "missing_field"}
    assert report["rejected"] == 8 and sum(report["rejected_by_reason"].values()) == 8
    assert "rejected as label_mismatch: 1" in (tmp_path / "out" / "log.txt").read_text()


def _prm800k(steps):
    return {"question": {"problem": "What is 1 + 1?"}, "label": {"steps": steps, "finish_reason": "solution"}}


def test_prm800k_mapping_follows_trls_conversion(tmp_path):
    record = _prm800k([
        {"completions": [{"text": "A", "rating": 1}, {"text": "B", "rating": -1}], "chosen_completion": 0,
         "human_completion": None},
        {"completions": [{"text": "C", "rating": 0}], "chosen_completion": None, "human_completion": {"text": "H"}},
        {"completions": [{"text": "D", "rating": 1}, {"text": "E", "rating": 7}], "chosen_completion": 0,
         "human_completion": None},
        {"completions": None, "chosen_completion": None, "human_completion": None},
    ])
    data = tmp_path / "prm800k.jsonl"
    data.write_text(json.dumps(record) + "\n" + json.dumps(_prm800k([{"completions": [{"text": "A", "rating": 1}],
                                                                        "chosen_completion": 3}])) + "\n")
    import_dataset("prm800k", data, tmp_path / "out", quiet=True)
    rows = [(r["completions"], r["labels"], r["subset"]) for r in _rows(tmp_path / "out")]
    assert rows == [(["B"], [False], "alternative"), (["A", "C"], [True, False], "alternative"),
                    (["A", "H", "D"], [True, True, True], "chosen")]
    assert [(r["source_line"], r["reason"]) for r in _rejects(tmp_path / "out")] == [(1, "bad_rating"),
                                                                                   (2, "bad_chosen_completion")]
    import_dataset("prm800k", data, tmp_path / "out", neutral_is_correct=True, force=True, quiet=True)
    assert _rows(tmp_path / "out")[1]["labels"] == [True, True]


def test_prm800k_sample_file(tmp_path):
    report = import_dataset("prm800k", FIXTURES / "prm800k_samples.jsonl", tmp_path / "out", quiet=True)
    rows = _rows(tmp_path / "out")
    assert report["rejected"] == 0 and len(rows) == report["rows"] == 37
    assert sum(r["subset"] == "chosen" for r in rows) == 6
    assert all(len(r["labels"]) == len(r["completions"]) > 0 for r in rows)


def test_processbench_rows_stop_at_the_first_error(tmp_path):
    import_dataset("processbench", FIXTURES / "processbench", tmp_path / "out", quiet=True)
    rows = _rows(tmp_path / "out")
    records = {str(r["id"]): r for split in ("gsm8k", "math")
               for r in json.loads((FIXTURES / "processbench" / f"{split}.json").read_text())}
    assert len(rows) == len(records)
    for row in rows:
        label = records[row["source_id"]]["label"]
        if label == -1:
            assert row["labels"] == [True] * len(records[row["source_id"]]["steps"])
        else:
            assert row["labels"] == [True] * label + [False]
    assert {r["subset"] for r in rows} == {"gsm8k", "math"}


def test_prmbench_rows_are_the_benchmarks_samples(tmp_path):
    report = import_dataset("prmbench", FIXTURES / "prmbench", tmp_path / "out", quiet=True)
    rows = _rows(tmp_path / "out")
    from prmfactory.eval.prmbench import load_samples

    samples = {s.id: s for s in load_samples([FIXTURES / "prmbench"])}
    clean = [s for s in samples.values() if not s.steps_out_of_range]
    assert report["rows"] == len(clean) and {r["source_id"] for r in rows} == {s.id for s in clean}
    for row in rows:
        sample = samples[row["source_id"]]
        assert row["labels"] == [i not in sample.error_steps for i in range(len(sample.steps))]
    assert any(r["subset"] == "correct" and all(r["labels"]) for r in rows)


def test_a_rejected_prmbench_step_reference_is_counted(tmp_path):
    record = json.loads((FIXTURES / "prmbench" / "prm800k_test_p1_4o_circular.jsonl").read_text().splitlines()[0])
    data = tmp_path / "bench.jsonl"
    data.write_text(json.dumps(record) + "\n" + json.dumps({**record, "idx": "other", "error_steps": [99]}) + "\n")
    report = import_dataset("prmbench", data, tmp_path / "out", quiet=True)
    assert report["rows"] == 1 and report["rejected_by_reason"] == {"error_step_out_of_range": 1}


def test_the_output_folder_is_never_clobbered(tmp_path):
    source = FIXTURES / "math_shepherd_samples.jsonl"
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(UsageError, match="not empty and not an earlier import"):
        import_dataset("math-shepherd", source, foreign, quiet=True)
    assert (foreign / "notes.txt").read_text() == "keep me" and len(list(foreign.iterdir())) == 1
    out = tmp_path / "out"
    import_dataset("math-shepherd", source, out, quiet=True)
    with pytest.raises(UsageError, match="--force replaces it"):
        import_dataset("math-shepherd", source, out, quiet=True)
    (out / "mine.parquet").write_bytes(b"x")
    with pytest.raises(UsageError, match="holds mine.parquet"):
        import_dataset("math-shepherd", source, out, force=True, quiet=True)
    (out / "mine.parquet").unlink()
    assert import_dataset("math-shepherd", source, out, force=True, quiet=True)["rows"] == 7
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial folder left behind


def test_nothing_importable_is_an_error_with_the_rejects_kept(tmp_path):
    data = tmp_path / "x.jsonl"
    data.write_text(json.dumps({"input": "no tags", "label": "no tags"}) + "\n")
    result = CliRunner().invoke(app, ["import", "math-shepherd", "--input", str(data), "--output", str(tmp_path / "out")])
    assert result.exit_code == 2 and "no row could be imported" in result.output
    assert _rejects(tmp_path / "out")[0]["reason"] == "no_tags"
    assert CliRunner().invoke(app, ["import", "shepherd", "--input", str(data), "--output", str(tmp_path / "o2")]).exit_code == 2


@pytest.mark.slow
@pytest.mark.parametrize("dataset, source", [("math-shepherd", "math_shepherd_samples.jsonl"),
                                             ("prm800k", "prm800k_samples.jsonl")])
def test_train_prm_takes_an_import_as_is(dataset, source, tmp_path):
    runner = CliRunner()
    data = tmp_path / "data"
    result = runner.invoke(app, ["import", dataset, "--input", str(FIXTURES / source), "--output", str(data), "-q"])
    assert result.exit_code == 0, result.output
    prm = tmp_path / "prm"
    result = runner.invoke(app, ["train-prm", "--data", str(data), "--output", str(prm), "--max-steps", "2",
                                 "--threads", "1", "-q"])
    assert result.exit_code == 0, result.output
    meta = json.loads((prm / "prm.json").read_text())
    rows = _rows(data)
    assert meta["lineage"]["rows"] == len(rows) and meta["segmentation"] == rows[0]["segmentation"]


def test_include_imports_only_the_folders_files_it_names(tmp_path):
    report = import_dataset("prmbench", FIXTURES / "prmbench", tmp_path / "out", quiet=True, include="*_circular*")
    assert [i["file"].rsplit("/", 1)[1] for i in report["inputs"]] == ["prm800k_test_p1_4o_circular.jsonl"]
    assert {r["subset"] for r in _rows(tmp_path / "out")} <= {"circular", "correct"}
    with pytest.raises(UsageError, match="no .jsonl files whose names match '\\*_train_\\*'"):
        import_dataset("prmbench", FIXTURES / "prmbench", tmp_path / "none", quiet=True, include="*_train_*")
    with pytest.raises(UsageError, match="selects files of a folder"):
        import_dataset("prmbench", FIXTURES / "prmbench" / "prm800k_test_p1_4o_circular.jsonl", tmp_path / "file",
                       quiet=True, include="*")
    assert not (tmp_path / "none").exists() and not (tmp_path / "file").exists()
