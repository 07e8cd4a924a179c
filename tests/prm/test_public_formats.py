"""Public PRM formats on tiny random-weight replicas: the positions scored are the step ends, the scores
are the upstream recipes' own (read the way their model cards read them), batches equal single items."""

from __future__ import annotations

import json
import math

import pytest

from prmfactory.errors import UsageError
from prmfactory.prm import PRM
from tests.conftest import FIXTURES
from tests.prm_replicas import REPLICAS

ITEMS = [
    ("What is 2 + 3?", ["2 + 3 = 5.", "The answer is \\boxed{5}."]),
    ("Add 4 and 4, then double it.", ["4 + 4 = 8", "8 * 2 = 16", "so the answer is 16"]),
    ("What is 7 - 2?", ["7 - 2 = 5 and the answer is 5."]),
]


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    return {name: build(tmp_path_factory.mktemp(name)) for name, build in REPLICAS.items()}


@pytest.fixture(scope="module")
def loaded(replicas):
    return {name: PRM.from_pretrained(path, format=name) for name, path in replicas.items()}


def _decoded_up_to(prm, problem, steps):
    encoded = prm.scorer.encode(problem, steps)
    return encoded, [prm.scorer.tokenizer.decode(encoded.input_ids[:p + 1]) for p in encoded.label_positions]


def test_qwen_reads_the_head_at_each_extra_0(loaded):
    prm = loaded["qwen2.5-math-prm"]
    problem, steps = ITEMS[1]
    encoded, prefixes = _decoded_up_to(prm, problem, steps)
    assert len(encoded.label_positions) == len(steps)
    for index, prefix in enumerate(prefixes):
        assert prefix.endswith("<|im_start|>assistant\n" + "".join(s + "<extra_0>" for s in steps[:index + 1]))
    assert "Please reason step by step" in prm.scorer.tokenizer.decode(encoded.input_ids)


def test_math_shepherd_reads_each_tag(loaded):
    prm = loaded["math-shepherd"]
    problem, steps = ITEMS[1]
    encoded, prefixes = _decoded_up_to(prm, problem, steps)
    expected = f"{problem} " + "".join(f"Step {i + 1}: {s} ки\n" for i, s in enumerate(steps))
    for index, prefix in enumerate(prefixes):
        assert expected.startswith(prefix.removeprefix("<s>").removeprefix(" "))
        assert prefix.endswith(f"Step {index + 1}: {steps[index]} ки")


def test_rlhflow_reads_where_each_answer_is_predicted(loaded):
    prm = loaded["rlhflow"]
    problem, steps = ITEMS[1]
    encoded, prefixes = _decoded_up_to(prm, problem, steps)
    plus = prm.scorer.candidates[0]
    assert [encoded.input_ids[p + 1] for p in encoded.label_positions] == [plus] * len(steps)
    for index, prefix in enumerate(prefixes):
        turn = f"{problem} {steps[0]}" if index == 0 else steps[index]
        assert prefix.endswith(f"user<|end_header_id|>\n\n{turn}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")


def _upstream_scores(name, prm, problem, steps):
    """Each model card's own recipe, written out here: the mask of separator tokens (Qwen, Math-Shepherd),
    the conversation cut after step k read at position -3 (RLHFlow's Llama-3 recipe)."""
    import torch

    scorer, tokenizer = prm.scorer, prm.scorer.tokenizer
    if name == "rlhflow":
        scores = []
        for k in range(len(steps)):
            conversation = []
            for index, step in enumerate(steps[:k + 1]):
                conversation += [{"role": "user", "content": f"{problem} {step}" if index == 0 else step},
                                 {"role": "assistant", "content": "+"}]
            ids = tokenizer.apply_chat_template(conversation, return_tensors="pt", return_dict=False)
            logits = scorer.model(ids).logits[:, -3, scorer.candidates]
            scores.append(logits.softmax(dim=-1)[0, 0].item())
        return scores
    ids = torch.tensor([scorer.encode(problem, steps).input_ids])
    with torch.inference_mode():
        logits = scorer.model(ids).logits[0]
    if name == "qwen2.5-math-prm":
        return logits.softmax(dim=-1)[ids[0] == scorer.separator_id][:, 1].tolist()
    return logits[:, scorer.candidates].softmax(dim=-1)[:, 0][ids[0] == scorer.tag_id].tolist()


@pytest.mark.parametrize("name", list(REPLICAS))
def test_scores_are_the_upstream_recipe_and_batches_equal_single_items(name, loaded):
    prm = loaded[name]
    batch = prm.score_batch(ITEMS)
    single = [prm.score(problem, steps) for problem, steps in ITEMS]
    assert [len(s) for s in batch] == [len(steps) for _, steps in ITEMS]
    assert max(abs(a - b) for x, y in zip(batch, single) for a, b in zip(x, y)) < 1e-5
    for (problem, steps), scores in zip(ITEMS, batch):
        assert scores == pytest.approx(_upstream_scores(name, prm, problem, steps), abs=1e-5)
        assert all(0.0 < s < 1.0 for s in scores)


@pytest.mark.parametrize("name", list(REPLICAS))
def test_a_separator_inside_a_step_is_not_a_step_end(name, loaded):
    prm = loaded[name]
    steps = ["2 + 3 = 5 <extra_0> ки +", "The answer is 5."]
    assert len(prm.scorer.encode("What is 2 + 3?", steps).label_positions) == 2
    assert len(prm.score("What is 2 + 3?", steps)) == 2


@pytest.mark.parametrize("name", list(REPLICAS))
def test_steps_past_max_length_are_unscored(name, replicas):
    steps = [f"{i} + {i} = {2 * i}, which we keep for the next step" for i in range(12)]
    whole = PRM.from_pretrained(replicas[name], format=name).scorer.encode("Double each number.", steps)
    cut = whole.label_positions[5] + 2  # room for six steps' positions, not the seventh's
    prm = PRM.from_pretrained(replicas[name], format=name, max_length=cut)
    scores = prm.score("Double each number.", steps)
    assert len(scores) == 12
    assert not any(math.isnan(s) for s in scores[:6]) and all(math.isnan(s) for s in scores[6:])
    full = PRM.from_pretrained(replicas[name], format=name).score("Double each number.", steps)
    assert scores[:6] == pytest.approx(full[:6], abs=1e-5)


def test_format_detection(replicas, tmp_path):
    qwen = PRM.from_pretrained(replicas["qwen2.5-math-prm"])
    assert qwen.format == "qwen2.5-math-prm" and qwen.meta.segmentation == "blank_line"
    for name in ("math-shepherd", "rlhflow"):
        with pytest.raises(UsageError, match="--prm-format math-shepherd or --prm-format rlhflow"):
            PRM.from_pretrained(replicas[name])
    with pytest.raises(UsageError, match="--prm-format: expected auto or one of"):
        PRM.from_pretrained(replicas["rlhflow"], format="shepherd")
    with pytest.raises(UsageError, match="not a PRM folder"):
        PRM.from_pretrained(tmp_path)
    with pytest.raises(UsageError, match="backend transformers"):
        PRM.from_pretrained(replicas["rlhflow"], format="rlhflow", backend="vllm")


def test_a_folder_without_the_heads_weights_is_refused(replicas):
    with pytest.raises(UsageError, match=r"not a qwen2.5-math-prm PRM: \d+ weights missing"):
        PRM.from_pretrained(replicas["rlhflow"], format="qwen2.5-math-prm")


def test_rewards_split_a_response_with_the_formats_segmentation(loaded):
    prm = loaded["math-shepherd"]
    reward = prm.rewards(["What is 2 + 3?"], ["Step 1: 2 + 3 = 5\nStep 2: The answer is 5"])[0]
    assert len(reward.step_scores) == 2 and reward.reward == min(reward.step_scores)


@pytest.mark.parametrize("name", list(REPLICAS))
def test_eval_processbench_cli_on_each_replica(name, replicas, tmp_path):
    from typer.testing import CliRunner

    from prmfactory.cli import app

    output = tmp_path / "out"
    result = CliRunner().invoke(app, ["eval", "processbench", "--prm", str(replicas[name]), "--prm-format", name,
                                      "--data", str(FIXTURES / "processbench"), "--output", str(output), "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["prm_format"] == name and set(metrics["splits"]) == {"gsm8k", "math"}
    lines = [json.loads(line) for line in (output / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 10 and all(len(line["step_scores"]) > 0 for line in lines)
    assert not (replicas[name] / "prm.json").exists()  # a public PRM's folder is left as it is
