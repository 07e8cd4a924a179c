"""train-prm: the one tokenisation, training that learns (hard, soft, LoRA, generative), scoring, Best-of-N."""

from __future__ import annotations

import json
import math
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prmfactory.errors import UsageError
from prmfactory.eval.best_of_n import bon_metrics, majority_correct, sizes
from prmfactory.eval.sampling import Candidate
from prmfactory.prm import PRM, aggregate
from prmfactory.stages import StageInput, execute
from prmfactory.store import Run
from prmfactory.models import TOY_MODELS
from prmfactory.toy.critique import corrupt
from prmfactory.toy.oracle import first_error
from prmfactory.toy.problems import generate
from prmfactory.train.config import TrainPrmConfig
from prmfactory.prm.encoding import IGNORE_INDEX, CritiqueEncoder, StepEncoder


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOY_MODELS["toy"])


def test_each_label_sits_on_the_last_separator_token_after_its_step(tokenizer):
    encoder = StepEncoder(tokenizer, "\n\n", max_length=512)
    steps = ["Dan has 3 + 4 = 7.", "a step with\n\na separator inside", "", "The answer is \\boxed{7}."]
    encoded = encoder.encode("Dan has 3 toys.", steps)
    assert encoded.steps_kept == 4 and not encoded.truncated
    separator = encoder.separator_ids
    for position in encoded.label_positions:
        assert encoded.input_ids[position - len(separator) + 1:position + 1] == separator
    # The empty step is its separator alone; the inner separator does not add a label.
    assert encoded.label_positions[2] - encoded.label_positions[1] == len(separator)
    labels = encoder.labelled(encoded, [1.0, 0.0, 0.5, 1.0])
    assert [labels[p] for p in encoded.label_positions] == [1.0, 0.0, 0.5, 1.0]
    assert sum(label != IGNORE_INDEX for label in labels) == 4


def test_truncation_keeps_whole_steps_and_their_labels(tokenizer):
    steps = [f"Dan adds {i}, so Dan has {i} + {i} = {2 * i}." for i in range(12)]
    full = StepEncoder(tokenizer, "\n\n", max_length=4096).encode("Dan has 1 toy.", steps)
    short_encoder = StepEncoder(tokenizer, "\n\n", max_length=full.label_positions[4] + 3)
    short = short_encoder.encode("Dan has 1 toy.", steps)
    assert short.steps_kept == 5 and short.truncated and short.steps_total == 12
    assert short.label_positions == full.label_positions[:5]
    assert len(short.input_ids) <= short_encoder.max_length
    labels = short_encoder.labelled(short, [1.0] * 12)
    assert sum(label != IGNORE_INDEX for label in labels) == 5
    only_last = short_encoder.labelled(short, [1.0] * 12, last_step_only=True)
    assert [i for i, label in enumerate(only_last) if label != IGNORE_INDEX] == [short.label_positions[-1]]
    assert StepEncoder(tokenizer, "\n\n", max_length=8).encode("Dan has 1 toy.", steps).steps_kept == 0


def test_critique_transcript_gives_each_step_before_its_check_and_learns_only_the_checks(tokenizer):
    encoder = CritiqueEncoder(tokenizer, max_length=512)
    steps = ["3 + 4 = 7", "7 * 2 = 15"]
    ids, mask, kept = encoder.encode("Dan has 3 toys.", steps, ["3 + 4 = 7, ok", "7 * 2 = 14, not 15"], [True, False])
    assert kept == 2 and len(ids) == len(mask)
    prompt = encoder.prompt_ids("Dan has 3 toys.")
    assert mask[:len(prompt)] == [0] * len(prompt)
    given = tokenizer.decode([t for t, m in zip(ids[len(prompt):], mask[len(prompt):]) if not m])
    learnt = tokenizer.decode([t for t, m in zip(ids, mask) if m])
    assert given == "[0] 3 + 4 = 7\nCheck: [1] 7 * 2 = 15\nCheck: "  # the steps are given, never learnt
    assert learnt == "3 + 4 = 7, ok \\boxed{correct}\n7 * 2 = 14, not 15 \\boxed{incorrect}\n"
    assert encoder.verdict_token(True) != encoder.verdict_token(False)
    short = CritiqueEncoder(tokenizer, max_length=len(ids) - 1)
    assert short.encode("Dan has 3 toys.", steps, ["a", "b"], [True, False])[2] == 2
    assert short.encode("Dan has 3 toys.", steps, ["3 + 4 = 7, ok", "7 * 2 = 14, not 15"], [True, False])[2] == 1


def _weights_changed(base, trained) -> bool:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForTokenClassification

    before = AutoModelForCausalLM.from_pretrained(base).model.layers[0].mlp.up_proj.weight
    after = AutoModelForTokenClassification.from_pretrained(trained).model.layers[0].mlp.up_proj.weight
    return not torch.allclose(before, after)


@pytest.mark.slow
def test_discriminative_training_learns_and_saves_a_loadable_prm_with_a_card(discriminative_prm, tokenizer):
    output, stage_report = discriminative_prm
    report = stage_report.details
    assert report["last_logged_loss"] < report["first_logged_loss"]
    assert _weights_changed(TOY_MODELS["toy"], output)
    meta = json.loads((output / "prm.json").read_text())
    assert meta["kind"] == "discriminative" and meta["lineage"]["rows"] == 96
    card = (output / "README.md").read_text()
    assert "| rows | 96 |" in card and "arXiv:2312.08935" in card and "base_model: toy" in card
    prm = PRM.from_pretrained(output)
    problem = generate(1, "test", 0)[0]
    scores = prm.score(problem.text, problem.reference_steps)
    assert len(scores) == len(problem.reference_steps) and all(0 <= s <= 1 for s in scores)
    # Training and scoring read the same positions: the trainer's labelled tokens are the scorer's.
    from datasets import Dataset

    from prmfactory.train.discriminative import tokenize_stepwise

    row = {"prompt": [problem.text], "completions": [problem.reference_steps], "labels": [[True] * len(scores)]}
    dataset, _ = tokenize_stepwise(Dataset.from_dict(row), prm.scorer.encoder, soft_labels=False, last_step_only=False)
    trained_positions = [i for i, label in enumerate(dataset[0]["labels"]) if label != IGNORE_INDEX]
    assert trained_positions == prm.scorer.encoder.encode(problem.text, problem.reference_steps).label_positions


@pytest.mark.slow
def test_soft_labels_and_lora_train_and_merge(shards, tmp_path):
    from transformers import AutoModelForTokenClassification

    report = execute("train-prm", Run(tmp_path), TrainPrmConfig(soft_labels=True, lora_r=8, max_steps=30,
                                                                learning_rate=2e-3, threads=1, quiet=True),
                     source=StageInput(shards)).details
    assert report["last_logged_loss"] < report["first_logged_loss"]
    model = AutoModelForTokenClassification.from_pretrained(tmp_path)  # merged: a plain model, no adapter files
    assert not (tmp_path / "adapter_config.json").exists() and model.config.num_labels == 2
    assert _weights_changed(TOY_MODELS["toy"], tmp_path)


@pytest.mark.slow
def test_generative_prm_trains_with_sft_and_scores_each_step(shards, tmp_path):
    report = execute("train-prm", Run(tmp_path), TrainPrmConfig(kind="generative", max_steps=20, learning_rate=1e-3,
                                                                threads=1, quiet=True), source=StageInput(shards)).details
    assert report["last_logged_loss"] < report["first_logged_loss"]
    prm = PRM.from_pretrained(tmp_path)
    problem = generate(1, "test", 1)[0]
    scores = prm.score(problem.text, problem.reference_steps)
    assert len(scores) == len(problem.reference_steps) and all(0 <= s <= 1 for s in scores)
    with pytest.raises(UsageError, match="cannot be scored with backend 'vllm'"):
        PRM.from_pretrained(tmp_path, backend="vllm")


def test_bad_training_data_names_file_row_and_field(tmp_path):
    from prmfactory.train.stage import load_training_data

    missing = tmp_path / "missing.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": "p", "completions": ["a"]}]), missing)
    with pytest.raises(UsageError, match=r"missing.parquet: column 'labels': missing"):
        load_training_data(missing, None)
    uneven = tmp_path / "uneven.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": "p", "completions": ["a"], "labels": [True]},
                                         {"prompt": "p", "completions": ["a", "b"], "labels": [True]}]), uneven)
    with pytest.raises(UsageError, match=r"uneven.parquet: row 1: field 'labels': 1 labels for 2 steps"):
        load_training_data(uneven, None)


def test_aggregations_skip_steps_that_did_not_fit():
    scores = [0.9, 0.5, math.nan]
    assert aggregate(scores, "min") == 0.5 and aggregate(scores, "last") == 0.5
    assert aggregate(scores, "prod") == pytest.approx(0.45) and aggregate(scores, "mean") == pytest.approx(0.7)
    assert aggregate([], "min") == 0.0


def test_best_of_n_against_majority_and_pass_by_hand():
    def c(answer, correct):
        return Candidate("", [], answer, correct)

    assert majority_correct([c("1", False), c("2", True), c("2", True), c("1", False)]) is False  # tie: earliest
    assert majority_correct([c(None, False), c("2", True)]) is True
    assert sizes(16) == [1, 2, 4, 8, 16] and sizes(6) == [1, 2, 4, 6]
    candidates = [[c("5", False), c("7", True), c("5", False), c("7", True)],
                  [c("3", True), c("4", False), c("4", False), c("9", False)]]
    scores = [[[0.9, 0.2], [0.8, 0.7], [0.1], [0.6, 0.6]],
              [[0.4], [0.9], [0.2], [0.3]]]
    result = bon_metrics(candidates, scores)
    assert result["curves"]["pass"] == {1: 0.5, 2: 1.0, 4: 1.0}
    assert result["curves"]["majority"] == {1: 0.5, 2: 0.5, 4: 0.0}
    assert result["curves"]["prm_min"] == {1: 0.5, 2: 0.5, 4: 0.5}  # problem 1: candidate 1 (min 0.7) wins
    assert result["curves"]["prm_last"][2] == 0.5  # problem 1: 0.7 > 0.2 → right; problem 2: 0.9 → wrong
    # PRM-weighted vote, by min score: at 4, problem 1's "7" has 0.7 + 0.6 against "5" 0.2 + 0.1, where
    # majority ties to the wrong "5"; problem 2's "4" has 0.9 + 0.2 against "3" 0.4
    assert result["curves"]["prm_vote"] == {1: 0.5, 2: 0.5, 4: 0.5}
    assert majority_correct([c("1", False), c("2", True), c("2", True)], [0.9, 0.3, 0.3]) is False


@pytest.fixture(scope="module")
def qwen2_prm(tmp_path_factory, tokenizer):
    """A random-weight Qwen2ForTokenClassification PRM folder (head_dim 64) with the toy tokenizer."""
    import torch
    from transformers import Qwen2Config, Qwen2ForTokenClassification

    from prmfactory.prm.folder import PRMMeta

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("qwen2-prm")
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512, num_labels=2,
                         pad_token_id=tokenizer.pad_token_id)
    Qwen2ForTokenClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    PRMMeta(kind="discriminative", max_length=512, base="random qwen2").save(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
def test_vllm_pooling_scores_match_transformers(architecture, discriminative_prm, qwen2_prm):
    output = discriminative_prm[0] if architecture == "llama" else qwen2_prm
    items = [(p.text, p.reference_steps) for p in generate(8, "test", 3)]
    expected = PRM.from_pretrained(output).score_batch(items)
    prm = PRM.from_pretrained(output, backend="vllm", kv_cache_gib=0.25)
    try:
        got = prm.score_batch(items)
    finally:
        prm.close()
    assert [len(s) for s in got] == [len(s) for s in expected]
    assert max(abs(a - b) for g, e in zip(got, expected) for a, b in zip(g, e)) < 1e-3


@pytest.mark.slow
def test_cli_trains_evaluates_and_reranks(shards, tmp_path):
    from typer.testing import CliRunner

    from prmfactory.cli import app
    from prmfactory.eval.best_of_n import write_candidates

    runner = CliRunner()
    prm_dir = tmp_path / "prm"
    train = ["train-prm", "--data", str(shards), "--output", str(prm_dir), "--max-steps", "3", "--threads", "1", "-q"]
    result = runner.invoke(app, train)
    assert result.exit_code == 0, result.output
    assert "already holds this PRM" in runner.invoke(app, train).output
    changed = runner.invoke(app, train[:-1] + ["--learning-rate", "0.01"])
    assert changed.exit_code == 2 and "--force" in changed.output

    rng = random.Random(1)
    records = []
    for index, problem in enumerate(generate(6, "test", 5)):
        _, steps = corrupt(problem, rng)
        records.append({"id": index, "problem": problem.text, "steps": steps, "label": first_error(problem, steps)})
    bench = tmp_path / "toy.jsonl"
    bench.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = runner.invoke(app, ["eval", "processbench", "--prm", str(prm_dir), "--data", str(bench),
                                 "--output", str(tmp_path / "pb"), "-q"])
    assert result.exit_code == 0, result.output
    predictions = [json.loads(line) for line in (tmp_path / "pb" / "predictions.jsonl").read_text().splitlines()]
    assert [len(p["step_scores"]) for p in predictions] == [len(r["steps"]) for r in records]
    assert {"metrics.json", "metrics.md", "metrics.png"} <= {p.name for p in (tmp_path / "pb").iterdir()}
    assert "processbench:toy.jsonl" in json.loads((prm_dir / "prm.json").read_text())["evals"]

    problems = [{"question_id": str(r["id"]), "problem": r["problem"], "answer": "1"} for r in records]
    candidates = [[Candidate("", r["steps"], "1", r["label"] == -1), Candidate("", r["steps"][:1], "2", False)]
                  for r in records]
    write_candidates(tmp_path / "candidates.jsonl", problems, candidates)
    result = runner.invoke(app, ["eval", "bon", "--prm", str(prm_dir), "--candidates", str(tmp_path / "candidates.jsonl"),
                                 "--output", str(tmp_path / "bon"), "-q"])
    assert result.exit_code == 0, result.output
    bon = json.loads((tmp_path / "bon" / "bon.json").read_text())
    assert bon["samples"] == 2 and set(bon["curves"]) == {"pass", "majority", "prm_min", "prm_last", "prm_prod", "prm_mean",
                                                       "prm_vote"}
    assert (tmp_path / "bon" / "bon.png").exists() and "| prm_min |" in (prm_dir / "README.md").read_text()


def test_training_data_takes_the_segmentation_its_rows_were_split_with(tmp_path):
    from prmfactory.train.stage import load_training_data
    from tests.conftest import stepwise_rows

    rows = [dict(r, segmentation="step_prefix") for r in stepwise_rows(4)]
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    assert load_training_data(path, None).segmentation == "step_prefix"
    with pytest.raises(UsageError, match="split with step_prefix, not blank_line"):
        load_training_data(path, "blank_line")
    pq.write_table(pa.Table.from_pylist([dict(rows[0], segmentation="blank_line"), rows[1]]), path)
    with pytest.raises(UsageError, match="field 'segmentation': rows split in 2 ways"):
        load_training_data(path, None)



def test_critiques_find_the_claims_of_a_row_cut_after_its_first_error(tmp_path):
    """The cut row ("a", "b") has no node of its own: its claims come from the complete solution's verdicts."""
    from prmfactory.filter.config import FilterConfig
    from prmfactory.stages import execute
    from prmfactory.store import Run
    from prmfactory.train.stage import load_training_data, with_verifications
    from tests.filter.test_filter import node
    from tests.store.test_store import problem

    def claim(text, verdict, found):
        return {"text": text, "kind": "arithmetic", "verdict": verdict, "value_found": found,
                "value_claimed": text.split(" = ")[1]}

    run = Run(tmp_path / "run")
    claims = [[claim("1 + 1 = 2", "correct", "2")], [claim("2 + 2 = 5", "incorrect", "4")], []]
    with run.writing():
        run.commit({"problems": [problem("q1")],
                    "nodes": [node("q1", "0", [], 0.5, 8), node("q1", "3", ["a", "b", "c"], 0.0, 1, complete=True)],
                    "verdicts": [{"question_id": "q1", "node_id": "3", "step_index": i, "verdict": v, "claims": c}
                                 for i, (v, c) in enumerate(zip(["correct", "incorrect", "unverifiable"], claims))]})
    execute("filter", run, FilterConfig(rule="grounded", quiet=True))
    (row,) = with_verifications(load_training_data(run.root, None, with_claims=True))
    assert row["completions"] == ["a", "b"] and row["source_node_ids"][-1] is None
    assert row["verifications"] == ["1 + 1 = 2, ok", "2 + 2 = 4, not 5"]


@pytest.mark.parametrize("claim, verdict, check", [
    ("16 + 4 = 19", "incorrect", "4 + 16 = 20, not 19"),  # the sum is redone, never copied from the step
    ("16 + 4 = 20", "correct", "4 + 16 = 20, ok"),
    ("40 - 26 = 15", "incorrect", "15 + 26 = 41, not 40"),  # a difference is checked by adding back
    ("24 / 4 = 6", "correct", "6 * 4 = 24, ok"),
    ("8 * 3 = 25", "incorrect", "3 * 8 = 24, not 25"),
    ("1.5 * 2 = 3", "correct", "1.5 * 2 = 3, ok"),  # not two integers: recomputed as written
])
def test_a_critique_checks_each_computation_the_other_way_round(claim, verdict, check):
    from prmfactory.train.generative import verification_text

    found = {"1.5 * 2 = 3": "3"}.get(claim, "unused")
    claims = [{"text": claim, "kind": "arithmetic", "verdict": verdict, "value_found": found,
               "value_claimed": claim.split(" = ")[1]},
              {"text": "\\boxed{7}", "kind": "final_answer", "verdict": "incorrect", "value_found": "8",
               "value_claimed": "7"}]
    assert verification_text(verdict, claims) == f"{check}; answer 7"  # never the reference answer 8


def test_a_prm_scores_in_bfloat16_close_to_float32_and_refuses_other_dtypes(discriminative_prm):
    output, _ = discriminative_prm
    problem = generate(1, "test", 4)[0]
    full = PRM.from_pretrained(output).score(problem.text, problem.reference_steps)
    half = PRM.from_pretrained(output, dtype="bfloat16").score(problem.text, problem.reference_steps)
    assert len(half) == len(full) and max(abs(a - b) for a, b in zip(full, half)) < 0.05
    with pytest.raises(UsageError, match="not one of float32"):
        PRM.from_pretrained(output, dtype="int8")


def test_a_mixture_takes_each_source_weight_times_and_records_where_its_labels_came_from(tmp_path):
    from prmfactory.cli.stage_commands import parse_mix
    from prmfactory.train.stage import _content, load_mixture, load_training_data
    from tests.conftest import stepwise_rows

    main, other = tmp_path / "imported", tmp_path / "factory.parquet"
    main.mkdir()
    pq.write_table(pa.Table.from_pylist([dict(r, source="prmbench") for r in stepwise_rows(6)]), main / "part-00000.parquet")
    pq.write_table(pa.Table.from_pylist([dict(r, segmentation="line") for r in stepwise_rows(10)]), other)

    assert load_mixture([(main, 1.0)], None).lineage == load_training_data(main, None).lineage  # one source: as before
    data = load_mixture([(main, 2.0), (other, 0.5)], None, seed=3)
    main_part, other_part = data.lineage["mixture"]
    assert (main_part["rows"], main_part["rows_used"], other_part["rows"], other_part["rows_used"]) == (6, 12, 10, 5)
    assert data.lineage["label_sources"] == {"prmbench": 12, "as given": 5} and data.lineage["rows"] == len(data.rows) == 17
    assert data.segmentation == "blank_line"  # the first source's; the other's steps are joined with its separator
    assert data.lineage["steps"] == main_part["steps_used"] + other_part["steps_used"]
    again = load_mixture([(main, 2.0), (other, 0.5)], None, seed=3)
    assert again.rows == data.rows  # the sampled half is seeded
    moved = tmp_path / "moved.parquet"
    moved.write_bytes(other.read_bytes())
    assert _content(load_mixture([(main, 2.0), (moved, 0.5)], None, seed=3).lineage) == _content(data.lineage)
    assert _content(load_mixture([(main, 2.0), (other, 1.0)], None, seed=3).lineage) != _content(data.lineage)

    assert parse_mix(["runs/a=b=0.25", "x.parquet=2"]) == {"runs/a=b": 0.25, "x.parquet": 2.0}
    for bad in ("runs/toy", "=0.5", "runs/toy=half"):
        with pytest.raises(UsageError, match="expected DATA=WEIGHT"):
            parse_mix([bad])
    with pytest.raises(Exception, match="must be above 0"):
        TrainPrmConfig(mix={"runs/toy": 0})
