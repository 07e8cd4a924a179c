"""The RL adapters driven the way their clients call them, written from the clients' code (no framework imported):

* OpenRLHF at 3c3be62, ``openrlhf/utils/agent.py`` (``SingleTurnAgentExecutor.execute`` and
  ``_fetch_rewards_via_http``): the prompt is already chat-templated; the query is
  ``hf_tokenizer.decode(prompt_ids + response_ids, skip_special_tokens=False)`` with the prompt ids cut
  from the left when too long; it POSTs ``{"query": [q], "prompts": [p], "labels": [l]}`` with no
  headers, or calls ``reward_func(queries, prompts, labels)`` from a ``.py`` file.
* verl at b178a3c, ``verl/workers/reward_manager/naive.py``: a manager built with ``tokenizer``,
  ``num_examine``, ``compute_score``, ``reward_fn_key``, called with a ``DataProto`` whose items have
  ``batch["prompts"]`` (left-padded), ``batch["responses"]``, ``batch["attention_mask"]`` and
  ``non_tensor_batch["extra_info"]``; ``compute_score(data_source, solution_str, ground_truth, extra_info)``.
"""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from prmfactory import rl
from prmfactory.models import resolve_model
from prmfactory.prm import PRM
from prmfactory.rl import OpenRLHFQueries, VerlPRMRewardManager, openrlhf_reward_func, verl_compute_score
from prmfactory.serve.app import create_app
from prmfactory.toy.problems import generate

PROBLEM = generate(1, "test", 3)[0]
RESPONSE = "\n\n".join(PROBLEM.reference_steps)


@pytest.fixture(scope="module")
def prm(discriminative_prm):
    return PRM.from_pretrained(discriminative_prm[0])


@pytest.fixture(scope="module")
def policy():
    from transformers import AutoTokenizer

    path = resolve_model("toy")
    return path, AutoTokenizer.from_pretrained(path)


def _openrlhf_request(tokenizer, problem, response, keep_prompt_tokens=None):
    """OpenRLHF's prompt and query for one sample, as agent.py builds them."""
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": problem}], tokenize=False,
                                           add_generation_prompt=True)
    prompt_ids = tokenizer(text=prompt, add_special_tokens=False)["input_ids"]
    if keep_prompt_tokens is not None:
        prompt_ids = prompt_ids[-keep_prompt_tokens:]
    response_ids = tokenizer.encode(response, add_special_tokens=False) + [tokenizer.eos_token_id]
    return prompt, tokenizer.decode(prompt_ids + response_ids, skip_special_tokens=False)


@pytest.fixture
def keyless(prm, policy):
    app = create_app(prm, openrlhf=OpenRLHFQueries(policy[0]))
    with TestClient(app) as client:
        yield client


def test_openrlhf_http_scores_the_raw_problem_and_response(keyless, prm, policy):
    prompt, query = _openrlhf_request(policy[1], PROBLEM.text, RESPONSE)
    assert prompt != PROBLEM.text and query.endswith(policy[1].eos_token)  # templated prompt, EOS text in the query
    reply = keyless.post("/get_reward", json={"query": [query], "prompts": [prompt], "labels": [str(PROBLEM.answer)]})
    assert reply.status_code == 200, reply.text
    expected = min(prm.score(PROBLEM.text, PROBLEM.reference_steps))
    assert reply.json()["rewards"][0] == pytest.approx(expected, abs=1e-5)
    assert reply.json()["extra_logs"]["prm_query_cut"] == [0.0]


def test_openrlhf_without_the_template_would_score_the_templated_prompt(prm, policy):
    prompt, query = _openrlhf_request(policy[1], PROBLEM.text, RESPONSE)
    problems, responses, _ = OpenRLHFQueries().split([query], [prompt], ["x"])
    assert problems == [prompt] and responses[0].endswith(policy[1].eos_token)  # what a template-less server sees
    problems, responses, _ = OpenRLHFQueries(policy[0]).split([query], [prompt], ["x"])
    assert problems == [PROBLEM.text] and responses == [RESPONSE]


def test_a_prompt_cut_by_openrlhf_is_warned_and_the_response_still_found(keyless, policy, caplog):
    prompt, query = _openrlhf_request(policy[1], PROBLEM.text, RESPONSE, keep_prompt_tokens=12)
    assert not query.startswith(prompt)
    with caplog.at_level(logging.WARNING, logger="prmfactory.rl"):
        problems, responses, matched = OpenRLHFQueries(policy[0]).split([query], [prompt], [None])
    assert responses == [RESPONSE] and matched == [False] and "does not start with its prompt" in caplog.text
    reply = keyless.post("/get_reward", json={"query": [query], "prompts": [prompt], "labels": [None]})
    assert reply.json()["extra_logs"]["prm_query_cut"] == [1.0]


def test_the_problem_can_come_from_the_label_column(policy):
    prompt, query = _openrlhf_request(policy[1], "a templated problem", RESPONSE)
    problems, _, _ = OpenRLHFQueries(policy[0], question_from="label").split([query], [prompt], [PROBLEM.text])
    assert problems == [PROBLEM.text]
    with pytest.raises(ValueError, match="label is not the problem"):
        OpenRLHFQueries(question_from="label").split([query], [prompt], [None])


def test_openrlhf_sends_no_header_so_a_keyed_server_refuses_it(prm, policy):
    prompt, query = _openrlhf_request(policy[1], PROBLEM.text, RESPONSE)
    with TestClient(create_app(prm, api_key="sesame")) as client:
        assert client.post("/get_reward", json={"query": [query], "prompts": [prompt], "labels": [None]}).status_code == 401


def test_openrlhf_reward_func_file_route(prm, policy, monkeypatch, discriminative_prm):
    monkeypatch.setenv("PRMFACTORY_PRM_PATH", str(discriminative_prm[0]))
    monkeypatch.setenv("PRMFACTORY_POLICY_TEMPLATE", policy[0])
    rl._environment_source.cache_clear()
    rl._environment_queries.cache_clear()
    prompt, query = _openrlhf_request(policy[1], PROBLEM.text, RESPONSE)
    result = openrlhf_reward_func([query], [prompt], [str(PROBLEM.answer)])
    assert float(result["rewards"][0]) == pytest.approx(min(prm.score(PROBLEM.text, PROBLEM.reference_steps)), abs=1e-5)
    rl._environment_source.cache_clear()
    rl._environment_queries.cache_clear()


def test_verl_compute_score_refuses_a_response_without_its_problem(monkeypatch, discriminative_prm):
    monkeypatch.setenv("PRMFACTORY_PRM_PATH", str(discriminative_prm[0]))
    with pytest.raises(ValueError, match="extra_info has no 'question'"):
        verl_compute_score("math", RESPONSE, "3", {"index": 0})
    with pytest.raises(ValueError, match="extra_info has no 'question'"):
        verl_compute_score("math", RESPONSE, "3", None)


class _Item:
    def __init__(self, batch, non_tensor_batch):
        self.batch, self.non_tensor_batch = batch, non_tensor_batch


class FakeDataProto:
    """The parts of verl's DataProto a reward manager touches (naive.py): ``batch``, ``len``, items."""

    def __init__(self, batch, non_tensor_batch):
        self.batch, self.non_tensor_batch = batch, non_tensor_batch

    def __len__(self):
        return self.batch["responses"].shape[0]

    def __getitem__(self, index):
        return _Item({k: v[index] for k, v in self.batch.items()}, {k: v[index] for k, v in self.non_tensor_batch.items()})


def _verl_batch(tokenizer, problems, responses, prompt_width=160, response_width=256):
    import torch

    pad = tokenizer.pad_token_id
    prompts, answers, masks = [], [], []
    for problem, response in zip(problems, responses):
        p = tokenizer.apply_chat_template([{"role": "user", "content": problem}], tokenize=True,
                                          add_generation_prompt=True, return_dict=False)[-prompt_width:]
        r = (tokenizer.encode(response, add_special_tokens=False) + [tokenizer.eos_token_id])[:response_width]
        prompts.append([pad] * (prompt_width - len(p)) + p)  # verl left-pads prompts, right-pads responses
        answers.append(r + [pad] * (response_width - len(r)))
        masks.append([0] * (prompt_width - len(p)) + [1] * len(p) + [1] * len(r) + [0] * (response_width - len(r)))
    return {"prompts": torch.tensor(prompts), "responses": torch.tensor(answers), "attention_mask": torch.tensor(masks)}


def test_verl_reward_manager_gives_each_step_its_score_on_its_last_token(prm, policy, monkeypatch, discriminative_prm):
    import numpy as np

    monkeypatch.setenv("PRMFACTORY_PRM_PATH", str(discriminative_prm[0]))
    rl._environment_source.cache_clear()
    tokenizer = policy[1]
    problems = generate(2, "test", 5)
    responses = ["\n\n".join(p.reference_steps) for p in problems]
    data = FakeDataProto(_verl_batch(tokenizer, [p.text for p in problems], responses), {
        "extra_info": np.array([{"question": p.text, "index": i} for i, p in enumerate(problems)], dtype=object),
        "data_source": np.array(["toy", "toy"], dtype=object),
        "reward_model": np.array([{"ground_truth": str(p.answer)} for p in problems], dtype=object)})
    manager = VerlPRMRewardManager(tokenizer=tokenizer, num_examine=0, compute_score=None, reward_fn_key="data_source")
    out = manager(data, return_dict=True)
    reward = out["reward_tensor"]
    assert reward.shape == data.batch["responses"].shape
    for row, (problem, response) in enumerate(zip(problems, responses)):
        expected = prm.score(problem.text, problem.reference_steps)
        nonzero = reward[row].nonzero().flatten().tolist()
        assert reward[row][nonzero].tolist() == pytest.approx(expected, abs=1e-5)
        ids = data.batch["responses"][row].tolist()
        for position, step in zip(nonzero, problem.reference_steps):  # each score sits on its step's last token
            assert tokenizer.decode(ids[:position + 1], skip_special_tokens=True).rstrip().endswith(step)
    missing = FakeDataProto(data.batch, {**data.non_tensor_batch,
                                         "extra_info": np.array([{"index": 0}, {"index": 1}], dtype=object)})
    with pytest.raises(ValueError, match="item 0: extra_info has no 'question'"):
        manager(missing)
    rl._environment_source.cache_clear()


def test_score_returns_each_steps_character_span(keyless, prm):
    reply = keyless.post("/v1/prm/score", json={"items": [{"id": 1, "prompt": PROBLEM.text, "response": RESPONSE},
                                                         {"id": 2, "prompt": PROBLEM.text, "steps": ["a"]}]})
    first, second = reply.json()["results"]
    assert [RESPONSE[a:b] for a, b in first["step_spans"]] == PROBLEM.reference_steps and second["step_spans"] is None
    assert first["step_scores"] == pytest.approx(prm.scored_steps([PROBLEM.text], [RESPONSE])[0].scores, abs=1e-5)
