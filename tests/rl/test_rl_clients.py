"""The RL adapters driven by the clients' own code where it installs, and in their call shape otherwise.

``make install`` puts verl 0.9.1 and OpenRLHF 0.11.2 (``rl-clients.txt``) in ``.venv/rl-clients``
without their dependencies; the tests that need them import from there and are skipped, saying so,
where that folder is missing. Nothing is installed at test time.

* verl 0.9.1: the README's ``reward.*`` overrides applied to verl's own generated trainer config,
  ``get_custom_reward_fn`` / ``load_reward_manager`` / ``RewardLoopWorker`` building and calling our
  function and manager on a real ``DataProto``, and the class's ``assemble_rm_scores`` as verl's
  ``RewardLoopManager`` calls it (after the scores crossed a process boundary: pickled).
* OpenRLHF 0.11.2: ``SingleTurnAgentExecutor`` with the HTTP route (a real server on 127.0.0.1,
  keyless and keyed) and the ``.py`` file route, its generation engine replaced by one that returns
  a fixed response (the engine is not what is checked).
* Concurrency: every adapter on a cold cache from the client's own thread pool (verl's
  ``run_in_executor``, OpenRLHF's ``asyncio.to_thread``): the PRM is loaded once and every reward is the
  single-threaded one.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import pickle
import re
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from prmfactory import rl
from prmfactory.models import resolve_model
from prmfactory.prm import PRM
from prmfactory.rl import VERL_CHECKED, OpenRLHFQueries, openrlhf_reward_func, verl_compute_score
from prmfactory.serve.app import create_app
from prmfactory.toy.problems import generate
from tests.conftest import serving

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


def test_score_returns_each_steps_character_span(keyless, prm):
    reply = keyless.post("/v1/prm/score", json={"items": [{"id": 1, "prompt": PROBLEM.text, "response": RESPONSE},
                                                         {"id": 2, "prompt": PROBLEM.text, "steps": ["a"]}]})
    first, second = reply.json()["results"]
    assert [RESPONSE[a:b] for a, b in first["step_spans"]] == PROBLEM.reference_steps and second["step_spans"] is None
    assert first["step_scores"] == pytest.approx(prm.scored_steps([PROBLEM.text], [RESPONSE])[0].scores, abs=1e-5)


# ----- the clients' own code ---------------------------------------------------------------------

CLIENTS = Path(sys.prefix) / "rl-clients"
README = Path(__file__).resolve().parents[2] / "README.md"


def _client(module: str):
    if not (CLIENTS / module.split(".")[0]).is_dir():
        pytest.skip(f"{CLIENTS} has no {module.split('.')[0]}: `make install` installs verl {VERL_CHECKED} and "
                    "OpenRLHF 0.11.2 there (rl-clients.txt)")
    if str(CLIENTS) not in sys.path:
        sys.path.append(str(CLIENTS))  # appended: its top-level `tests` package (OpenRLHF's) never shadows ours
    return importlib.import_module(module)


def _readme_verl_overrides() -> list[list[str]]:
    """The ``reward.*`` overrides of each verl command in README.md, as a user would copy them."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL)
    return [re.findall(r"(reward\.[\w.]+=\S+)", block) for block in blocks if "verl.trainer.main_ppo" in block]


def _verl_config(overrides: list[str], policy_path: str):
    omegaconf = _client("omegaconf")
    verl = _client("verl")
    base = omegaconf.OmegaConf.load(Path(verl.__file__).parent / "trainer/config/_generated_ppo_trainer.yaml")
    return omegaconf.OmegaConf.merge(base, omegaconf.OmegaConf.from_dotlist(
        [*overrides, f"actor_rollout_ref.model.path={policy_path}"]))


def _verl_data(tokenizer, problems):
    import numpy as np
    import torch

    protocol = _client("verl.protocol")
    responses = ["\n\n".join(p.reference_steps) for p in problems]
    tensors = _verl_batch(tokenizer, [p.text for p in problems], responses)
    tensors["input_ids"] = torch.cat([tensors["prompts"], tensors["responses"]], dim=1)
    return protocol.DataProto.from_dict(tensors=tensors, non_tensors={
        "data_source": np.array(["toy"] * len(problems), dtype=object),
        "reward_model": np.array([{"ground_truth": str(p.answer)} for p in problems], dtype=object),
        "extra_info": np.array([{"question": p.text, "index": i} for i, p in enumerate(problems)], dtype=object)})


def _verl_rewards(config, data) -> list[dict]:
    """What verl's RewardLoopWorker returns for each sample (built inside the loop, as a Ray actor builds it)."""
    reward_loop = _client("verl.experimental.reward_loop")

    async def run():
        return await reward_loop.RewardLoopWorker(config).compute_score_batch(data)

    return asyncio.run(run())


@pytest.fixture
def cold_prm(discriminative_prm, monkeypatch):
    """The in-process PRM named by the environment, not yet loaded; counts how often it is loaded."""
    monkeypatch.setenv("PRMFACTORY_PRM_PATH", str(discriminative_prm[0]))
    monkeypatch.delenv("PRMFACTORY_PRM_URL", raising=False)
    loads = []
    real = rl.reward_source

    def counting(*args, **kwargs):
        loads.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(rl, "reward_source", counting)
    rl._environment_source.cache_clear()
    rl._environment_queries.cache_clear()
    yield loads
    rl._environment_source.cache_clear()
    rl._environment_queries.cache_clear()


def test_the_readme_verl_configuration_is_the_one_verl_reads(policy):
    scalar, dense = _readme_verl_overrides()
    reward = _client("verl.trainer.ppo.reward")
    config = _verl_config(scalar, policy[0])
    function = reward.get_custom_reward_fn(config)
    assert function is not None and function.args[0] is verl_compute_score  # the installed module, not a copy
    manager = reward.resolve_reward_manager_cls(_verl_config(dense, policy[0]))
    assert manager is rl.VerlPRMRewardManager
    legacy = _verl_config([f"custom_reward_function.path={rl.__file__}", "custom_reward_function.name=x"], policy[0])
    assert reward.get_custom_reward_fn(legacy) is None  # what verl 0.9 does with the pre-0.7.1 keys


def test_verl_scalar_rewards_from_its_reward_loop_equal_the_single_threaded_ones(prm, policy, cold_prm):
    problems = generate(8, "test", 21)
    data = _verl_data(policy[1], problems)
    outputs = _verl_rewards(_verl_config(_readme_verl_overrides()[0], policy[0]), data)
    expected = [min(prm.score(p.text, p.reference_steps)) for p in problems]
    assert [o["reward_score"] for o in outputs] == pytest.approx(expected, abs=1e-5)
    assert len(cold_prm) == 1  # eight threads, one load


def test_verl_dense_rewards_land_on_each_steps_last_token(prm, policy, cold_prm):
    problems = generate(8, "test", 22)
    data = _verl_data(policy[1], problems)
    config = _verl_config(_readme_verl_overrides()[1], policy[0])
    outputs = pickle.loads(pickle.dumps(_verl_rewards(config, data)))  # worker (Ray actor) -> trainer
    assert len(cold_prm) == 1
    scores = [o["reward_score"] for o in outputs]
    reward_loop = _client("verl.trainer.ppo.reward")
    rm_scores = reward_loop.resolve_reward_manager_cls(config).assemble_rm_scores(data, scores)
    assert rm_scores.shape == data.batch["responses"].shape
    tokenizer = policy[1]
    for row, problem in enumerate(problems):
        expected = prm.score(problem.text, problem.reference_steps)
        nonzero = rm_scores[row].nonzero().flatten().tolist()
        assert rm_scores[row][nonzero].tolist() == pytest.approx(expected, abs=1e-5)
        assert float(scores[row]) == pytest.approx(sum(expected), abs=1e-4)  # the agent-loop path's total
        ids = data.batch["responses"][row].tolist()
        for position, step in zip(nonzero, problem.reference_steps):
            assert tokenizer.decode(ids[:position + 1], skip_special_tokens=True).rstrip().endswith(step)
        assert outputs[row]["reward_extra_info"]["prm_steps"] == len(expected)


def test_verl_dense_rewards_through_the_server_equal_the_servers_step_scores(prm, policy, monkeypatch):
    import httpx

    problems = generate(3, "test", 23)
    data = _verl_data(policy[1], problems)
    with serving(create_app(prm, api_key="sesame")) as url:
        monkeypatch.setenv("PRMFACTORY_PRM_URL", url)
        monkeypatch.setenv("PRMFACTORY_API_KEY", "sesame")
        rl._environment_source.cache_clear()
        try:
            outputs = _verl_rewards(_verl_config(_readme_verl_overrides()[1], policy[0]), data)
            served = httpx.post(f"{url}/v1/prm/score", headers={"Authorization": "Bearer sesame"}, json={"items": [
                {"id": i, "prompt": p.text, "steps": p.reference_steps} for i, p in enumerate(problems)]}).json()
        finally:
            rl._environment_source.cache_clear()
    for output, result in zip(outputs, served["results"]):
        assert [v for v in output["reward_score"].tokens if v] == pytest.approx(result["step_scores"], abs=1e-6)


def test_verl_refuses_a_config_that_would_never_call_the_manager(policy):
    config = _verl_config([*_readme_verl_overrides()[1], "reward.reward_model.enable=true"], policy[0])
    with pytest.raises(ValueError, match="never calls VerlPRMRewardManager"):
        rl.VerlPRMRewardManager(config=config, tokenizer=policy[1], compute_score=None)


def test_verl_warns_about_legacy_keys_it_ignores(policy, caplog):
    config = _verl_config([*_readme_verl_overrides()[1], "reward_model.reward_manager=naive"], policy[0])
    with caplog.at_level(logging.WARNING, logger="prmfactory.rl"):
        rl.VerlPRMRewardManager(config=config, tokenizer=policy[1], compute_score=None)
    assert "reward_model.reward_manager" in caplog.text and "ignores these legacy keys" in caplog.text


class _Engine:
    """OpenRLHF's generation engine, answering every prompt with the same response."""

    def __init__(self, tokenizer, response: str):
        self.ids = tokenizer.encode(response, add_special_tokens=False) + [tokenizer.eos_token_id]

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
        return SimpleNamespace(outputs=[SimpleNamespace(token_ids=list(self.ids), finish_reason="stop",
                                                        logprobs=None)])


def _openrlhf_rewards(executor, tokenizer, problems) -> list:
    """OpenRLHF's executor on each problem at once (its rollout is concurrent), as its vLLM actor calls it."""

    async def run():
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p.text}], tokenize=False,
                                                 add_generation_prompt=True) for p in problems]
        outputs = await asyncio.gather(*[
            executor.execute(prompt, str(p.answer), SimpleNamespace(max_tokens=256, logprobs=None), 2048, tokenizer,
                             _Engine(tokenizer, "\n\n".join(p.reference_steps)))
            for prompt, p in zip(prompts, problems)])
        # one sample's reward: the server's {"rewards": [r]} list, or the file route's one-element tensor
        return [None if o["reward"] is None else float(sum(o["reward"]) if isinstance(o["reward"], list)
                                                       else o["reward"].item()) for o in outputs]

    return asyncio.run(run())


def test_openrlhf_http_route_with_its_executor(prm, policy):
    agent = _client("openrlhf.utils.agent")
    problems = generate(4, "test", 24)
    with serving(create_app(prm, openrlhf=OpenRLHFQueries(policy[0]))) as url:
        rewards = _openrlhf_rewards(agent.SingleTurnAgentExecutor(f"{url}/get_reward"), policy[1], problems)
    expected = [min(prm.score(p.text, p.reference_steps)) for p in problems]
    assert rewards == pytest.approx(expected, abs=1e-5)


def test_openrlhf_http_route_to_a_keyed_server_gets_no_reward_as_the_readme_says(prm, policy):
    """OpenRLHF retries five times a second apart, then logs the error and leaves the reward empty."""
    agent = _client("openrlhf.utils.agent")
    with serving(create_app(prm, api_key="sesame", openrlhf=OpenRLHFQueries(policy[0]))) as url:
        rewards = _openrlhf_rewards(agent.SingleTurnAgentExecutor(f"{url}/get_reward"), policy[1], generate(1, "test", 25))
    assert rewards == [None]


def test_openrlhf_file_route_with_a_key_through_the_server(prm, policy, monkeypatch, tmp_path):
    agent = _client("openrlhf.utils.agent")
    route = tmp_path / "prmfactory_reward.py"
    route.write_text("from prmfactory.rl import openrlhf_reward_func as reward_func\n")
    problems = generate(4, "test", 26)
    with serving(create_app(prm, api_key="sesame")) as url:
        monkeypatch.setenv("PRMFACTORY_PRM_URL", url)
        monkeypatch.setenv("PRMFACTORY_API_KEY", "sesame")
        monkeypatch.setenv("PRMFACTORY_POLICY_TEMPLATE", policy[0])
        rl._environment_source.cache_clear()
        rl._environment_queries.cache_clear()
        try:
            rewards = _openrlhf_rewards(agent.SingleTurnAgentExecutor(str(route)), policy[1], problems)
        finally:
            rl._environment_source.cache_clear()
            rl._environment_queries.cache_clear()
    expected = [min(prm.score(p.text, p.reference_steps)) for p in problems]
    assert rewards == pytest.approx(expected, abs=1e-5)


def test_openrlhf_file_route_in_process_from_its_thread_pool(prm, policy, monkeypatch, tmp_path, cold_prm):
    agent = _client("openrlhf.utils.agent")
    route = tmp_path / "prmfactory_reward.py"
    route.write_text("from prmfactory.rl import openrlhf_reward_func as reward_func\n")
    monkeypatch.setenv("PRMFACTORY_POLICY_TEMPLATE", policy[0])
    problems = generate(8, "test", 27)
    rewards = _openrlhf_rewards(agent.SingleTurnAgentExecutor(str(route)), policy[1], problems)
    expected = [min(prm.score(p.text, p.reference_steps)) for p in problems]
    assert rewards == pytest.approx(expected, abs=1e-5)
    assert len(cold_prm) == 1


def test_the_reward_sources_load_once_from_many_threads(prm, cold_prm):
    """Without the client libraries: verl's and OpenRLHF's call shapes from 8 threads on a cold cache."""
    problems = generate(8, "test", 28)
    barrier = threading.Barrier(len(problems))

    def verl(problem):
        barrier.wait()
        return verl_compute_score("toy", "\n\n".join(problem.reference_steps), str(problem.answer),
                                  {"question": problem.text})["score"]

    with ThreadPoolExecutor(len(problems)) as pool:
        values = list(pool.map(verl, problems))
    assert values == pytest.approx([min(prm.score(p.text, p.reference_steps)) for p in problems], abs=1e-5)
    assert len(cold_prm) == 1
