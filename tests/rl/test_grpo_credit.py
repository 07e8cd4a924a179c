"""Step-level credit for GRPO: each mode's formula on a hand-computed group, step rewards on another
tokenizer's tokens, and short TRL runs that change the weights under every mode."""

from __future__ import annotations

import math

import pytest

from prmfactory.credit import (EPSILON, ScoredSteps, group_step_advantages, token_char_ends, token_steps)

# completion A: steps rewarded 1, 0; completion B: 1, 1, 1; outcome advantages -1 and +1
GROUP = [[1.0, 0.0], [1.0, 1.0, 1.0]]
OUTCOME = [-1.0, 1.0]


def _z(value, values):
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return (value - mean) / (std + EPSILON)


def test_outcome_is_the_completions_advantage_on_every_step():
    assert group_step_advantages(GROUP, OUTCOME, "outcome") == [[-1.0, -1.0], [1.0, 1.0, 1.0]]


def test_sum_is_deepseekmath_process_supervision():
    every = [1.0, 0.0, 1.0, 1.0, 1.0]
    one, zero = _z(1.0, every), _z(0.0, every)  # 0.447, -1.789
    got = group_step_advantages(GROUP, OUTCOME, "sum")
    assert got[0] == pytest.approx([one + zero, zero])
    assert got[1] == pytest.approx([3 * one, 2 * one, one])


def test_min_normalises_the_minimum_of_the_steps_to_come():
    returns = [0.0, 0.0, 1.0, 1.0, 1.0]  # A: min(1, 0), min(0); B: 1, 1, 1
    got = group_step_advantages(GROUP, OUTCOME, "min")
    assert got[0] == pytest.approx([_z(0.0, returns)] * 2)
    assert got[1] == pytest.approx([_z(1.0, returns)] * 3)


def test_mix_adds_the_weighted_sum_advantage_to_the_outcome():
    summed = group_step_advantages(GROUP, OUTCOME, "sum")
    got = group_step_advantages(GROUP, OUTCOME, "mix", step_weight=0.5)
    assert got == [pytest.approx([o + 0.5 * s for s in row]) for o, row in zip(OUTCOME, summed)]


def test_unscored_steps_and_empty_completions():
    got = group_step_advantages([[1.0, math.nan], [], [0.0]], [0.0, 0.0, 0.0], "sum")
    known = [1.0, 0.0, 0.0]  # the empty completion is one step of reward 0
    assert got[0] == pytest.approx([_z(1.0, known), 0.0]) and got[1] == pytest.approx([_z(0.0, known)])
    assert group_step_advantages([[0.5]], [0.0], "min") == [[0.0]]  # one step: no spread, no advantage
    with pytest.raises(ValueError, match="credit mode"):
        group_step_advantages(GROUP, OUTCOME, "max")


def test_token_steps_by_character_regions():
    # "ab\n\ncd": step 0 is [0, 2), step 1 [4, 6); the separator belongs to step 0
    spans = [(0, 2), (4, 6)]
    assert token_steps([1, 2, 3, 4, 5, 6, 7], spans) == [0, 0, 0, 0, 1, 1, 1]
    assert token_steps([3, 5, 6], spans) == [0, 0, 1]  # "ab\n" | "\nc" starts in step 0 | "d"
    assert token_steps([2, 4], []) == [0, 0]


@pytest.fixture(scope="module")
def two_tokenizers():
    from prmfactory.toy.build import train_tokenizer
    from tests.prm_replicas import TEXTS

    return (train_tokenizer(TEXTS, vocab_size=280),
            train_tokenizer([t.upper() + t for t in TEXTS[::-1]], vocab_size=400))


def test_step_rewards_land_on_the_policys_tokens_whatever_the_prms_tokenizer(two_tokenizers, tmp_path):
    from prmfactory.prm import PRM
    from tests.prm_replicas import math_shepherd

    policy_tokenizer, _ = two_tokenizers
    prm = PRM.from_pretrained(math_shepherd(tmp_path / "prm"), format="math-shepherd")  # its own tokenizer
    response = "Step 1: 12 + 30 = 42.\nStep 2: 42 - 2 = 40.\n\nStep 3: The answer is \\boxed{40}."
    ids = policy_tokenizer.encode(response, add_special_tokens=False) + [policy_tokenizer.eos_token_id]
    assert prm.scorer.tokenizer.encode(response, add_special_tokens=False) != ids[:-1]
    scored = prm.scored_steps(["What is 12 + 30 - 2?"], [response])[0]
    assert [response[a:b] for a, b in scored.spans] == [line.strip() for line in response.split("\n") if line.strip()]
    assert len(scored.scores) == 3 and not any(math.isnan(s) for s in scored.scores)
    owners = token_steps(token_char_ends(policy_tokenizer, ids), scored.spans)
    for step, (start, end) in enumerate(scored.spans):
        text = "".join(policy_tokenizer.decode([t], skip_special_tokens=True) for t, k in zip(ids, owners) if k == step)
        assert text.strip() == response[start:end]
    assert owners[-1] == 2  # the end-of-sequence token goes with the last step


def test_token_char_ends_are_exact_prefix_lengths(two_tokenizers):
    for tokenizer in two_tokenizers:
        text = "Step 1: 7 * 6 = 42.\n\nThe answer is \\boxed{42}."
        ids = tokenizer.encode(text, add_special_tokens=False)
        ends = token_char_ends(tokenizer, ids)
        assert ends[-1] == len(text) and ends == sorted(ends)
        assert all(text[:end] == tokenizer.decode(ids[:i + 1]) for i, end in enumerate(ends))


class DigitSteps:
    """A step reward source for the training test: a step is good when it holds a digit."""

    def __init__(self):
        from prmfactory.steps import Segmenter

        self.segmenter = Segmenter("blank_line")

    def scored_steps(self, prompts, responses):
        out = []
        for response in responses:
            spans = self.segmenter.spans(response)
            out.append(ScoredSteps(spans, [float(any(c.isdigit() for c in response[a:b])) for a, b in spans]))
        return out


def _length_reward(prompts, completions, **kwargs):
    from prmfactory.rl import completion_text

    return [min(len(completion_text(c)), 40) / 40 for c in completions]


@pytest.mark.slow
@pytest.mark.parametrize("credit", ["outcome", "sum", "min", "mix"])
def test_two_grpo_steps_change_the_weights_under_each_mode(credit, tiny_model_dir, tmp_path):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig

    from prmfactory.grpo import StepCreditGRPOTrainer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    seen = []

    class Recording(StepCreditGRPOTrainer):
        def _compute_loss(self, model, inputs):
            seen.append(tuple(inputs["advantages"].shape))
            return super()._compute_loss(model, inputs)

    config = GRPOConfig(output_dir=str(tmp_path / "grpo"), max_steps=2, learning_rate=1e-2, per_device_train_batch_size=4,
                        num_generations=4, max_completion_length=24, temperature=1.0, beta=0.0, logging_steps=1,
                        save_strategy="no", report_to=[], use_cpu=True, seed=0, disable_tqdm=True)
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": f"Step {i}: {i} + {i} ="}]} for i in range(8)])
    trainer = Recording(model=model, reward_funcs=[_length_reward], args=config, train_dataset=dataset,
                        processing_class=tokenizer, step_rewards=DigitSteps(), credit=credit, step_weight=0.5)
    trainer.train()
    changed = sum(not torch.equal(before[n], p) for n, p in model.named_parameters())
    assert changed > 0
    assert seen and all(len(shape) == (1 if credit == "outcome" else 2) for shape in seen)
