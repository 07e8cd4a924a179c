"""The ``probe`` head: step spans, the soft minimum, a frozen base, and a probe that learns to check steps."""

from __future__ import annotations

import json
import random

import pytest

from prmfactory.errors import UsageError
from prmfactory.models import TOY_MODELS
from prmfactory.prm import PRM
from prmfactory.stages import StageInput, execute
from prmfactory.store import Run
from prmfactory.toy.critique import corrupt
from prmfactory.toy.oracle import first_error
from prmfactory.toy.problems import generate
from prmfactory.train.config import TrainPrmConfig
from prmfactory.prm.encoding import StepEncoder


@pytest.fixture(scope="module")
def probe_prm(shards, tmp_path_factory):
    """A probe PRM on the numerate toy base, trained for 40 steps on the oracle-labelled shards."""
    output = tmp_path_factory.mktemp("prm-probe")
    config = TrainPrmConfig(head="probe", base="toy-base", max_steps=40, learning_rate=1e-2, threads=1, quiet=True)
    return output, execute("train-prm", Run(output), config, source=StageInput(shards)).details


def test_step_spans_cover_each_step_and_its_separator_once():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TOY_MODELS["toy"])
    encoder = StepEncoder(tokenizer, "\n\n", max_length=512)
    steps = ["Dan has 3 + 4 = 7.", "", "The answer is \\boxed{7}."]
    encoded = encoder.encode("Dan has 3 toys.", steps)
    spans = encoded.step_spans
    assert spans[0][0] == encoded.prompt_length and spans[-1][1] == len(encoded.input_ids)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert [tokenizer.decode(encoded.input_ids[a:b]) for a, b in spans] == [s + "\n\n" for s in steps]


def test_a_step_is_as_wrong_as_its_least_plausible_token():
    import torch

    from prmfactory.prm.heads.probe import step_logits

    margins = torch.tensor([5.0, 6.0, -3.0, 7.0, 4.0])
    logits = step_logits(margins, [(0, 2), (2, 5)])
    assert torch.allclose(logits, torch.stack([-torch.logsumexp(-margins[:2], 0), -torch.logsumexp(-margins[2:], 0)]))
    assert logits[1] < -3.0 < 4.0 < logits[0] < 5.0


def test_probe_loss_pools_each_labelled_step_alone_also_when_only_the_last_is_labelled():
    import torch

    from prmfactory.prm.encoding import IGNORE_INDEX
    from prmfactory.prm.heads.probe import ProbeHead, step_logits

    probe_loss = ProbeHead().loss

    margins = torch.tensor([[9.0, 9.0, 2.0, -1.0, 3.0, 0.5, 4.0, 0.0]])
    positions, prompt_length = torch.tensor([[3, 5, -1]]), torch.tensor([1])  # steps [1, 4) and [4, 6); one pad
    labels = torch.full((1, 8), float(IGNORE_INDEX))
    labels[0, 5] = 1.0  # last step only
    expected = torch.nn.functional.binary_cross_entropy_with_logits(step_logits(margins[0], [(4, 6)]), torch.ones(1))
    assert torch.allclose(probe_loss(margins, labels, prompt_length, positions), expected)
    labels[0, 3] = 0.0
    both = torch.nn.functional.binary_cross_entropy_with_logits(step_logits(margins[0], [(1, 4), (4, 6)]),
                                                                torch.tensor([0.0, 1.0]))
    assert torch.allclose(probe_loss(margins, labels, prompt_length, positions), both)


def test_probe_refuses_what_it_cannot_do():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="discriminative head"):
        TrainPrmConfig(kind="generative", head="probe")
    with pytest.raises(ValidationError, match="lora_r must be 0"):
        TrainPrmConfig(head="probe", lora_r=8)


def _auc(right: list[float], wrong: list[float]) -> float:
    return sum((r > w) + 0.5 * (r == w) for r in right for w in wrong) / (len(right) * len(wrong))


@pytest.mark.slow
def test_probe_trains_only_its_head_and_learns_to_find_wrong_steps(probe_prm):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    output, report = probe_prm
    assert report["last_logged_loss"] < report["first_logged_loss"]
    assert set(load_file(str(output / "probe.safetensors"))) == {"weight", "bias"}
    base = AutoModelForCausalLM.from_pretrained(TOY_MODELS["toy-base"]).state_dict()
    saved = AutoModelForCausalLM.from_pretrained(output).state_dict()
    assert all(torch.equal(base[k], saved[k]) for k in base)  # the base is frozen: saved as it was
    meta = json.loads((output / "prm.json").read_text())
    assert meta["head"] == "probe" and meta["hyperparameters"]["head"] == "probe"
    assert "probe" in (output / "README.md").read_text()

    prm = PRM.from_pretrained(output)
    rng, right, wrong = random.Random(7), [], []
    for problem in generate(40, "test", 3):
        _, steps = corrupt(problem, rng)
        error = first_error(problem, steps)
        scores = prm.score(problem.text, steps)
        assert len(scores) == len(steps) and all(0 <= s <= 1 for s in scores)
        for index, score in enumerate(scores[:None if error == -1 else error + 1]):
            (wrong if index == error else right).append(score)
    assert wrong and _auc(right, wrong) > 0.85
    # One solution scored alone and in a padded batch: the same scores.
    problem = generate(2, "test", 4)
    alone = prm.score(problem[0].text, problem[0].reference_steps)
    batch = prm.score_batch([(p.text, p.reference_steps) for p in problem])[0]
    assert alone == pytest.approx(batch, abs=1e-5)


def test_probe_prm_is_not_scored_by_vllm(probe_prm):
    with pytest.raises(UsageError, match="scored with backend transformers"):
        PRM.from_pretrained(probe_prm[0], backend="vllm")


def test_written_log_likelihoods_match_the_full_logits_in_any_chunking(tiny_model_dir, monkeypatch):
    """The chunked reading equals log_softmax over the model's own full logits, on real tokens, however
    many tokens a chunk holds; padding and the first token read 0."""
    import torch
    from transformers import AutoModelForCausalLM

    from prmfactory.prm.heads import probe

    lm = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    torch.manual_seed(1)
    ids = torch.randint(3, lm.config.vocab_size, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:], mask[2, 4:] = 0, 0  # right padding, as the collator pads
    with torch.no_grad():
        logits = lm(input_ids=ids, attention_mask=mask).logits
        expected = torch.zeros(ids.shape)
        expected[:, 1:] = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        expected *= mask * mask.roll(1, 1)
        hidden = lm.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
        for chunk_bytes in (4 * lm.config.vocab_size, 5 * 4 * lm.config.vocab_size, probe.LOGIT_CHUNK_BYTES):
            monkeypatch.setattr(probe, "LOGIT_CHUNK_BYTES", chunk_bytes)
            written = probe.written_log_likelihoods(lm, hidden, ids, mask)
            assert torch.allclose(written, expected, atol=1e-5)
    assert (written[:, 0] == 0).all() and (written[1, 7:] == 0).all() and written[0].ne(0).sum() == 10
