"""serve and the RL adapters: status codes, batching, the OpenRLHF endpoint, a real server under load."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from prmfactory.prm import PRM
from prmfactory.rl import grpo_reward, openrlhf_reward_func, verl_compute_score
from prmfactory.serve.app import create_app
from prmfactory.toy.problems import generate

PROBLEM = generate(1, "test", 0)[0]


@pytest.fixture(scope="module")
def prm(discriminative_prm):
    return PRM.from_pretrained(discriminative_prm[0])


@pytest.fixture(scope="module")
def client(prm):
    with TestClient(create_app(prm, api_key="sesame", max_body_bytes=20_000)) as test_client:
        test_client.headers["Authorization"] = "Bearer sesame"
        yield test_client


def test_score_steps_and_responses_match_in_process_scores(client, prm):
    response = "\n\n".join(PROBLEM.reference_steps)
    body = {"aggregate": "min", "items": [{"id": "a", "prompt": PROBLEM.text, "steps": PROBLEM.reference_steps},
                                          {"id": 7, "prompt": PROBLEM.text, "response": response}]}
    reply = client.post("/v1/prm/score", json=body)
    assert reply.status_code == 200, reply.text
    first, second = reply.json()["results"]
    expected = prm.score(PROBLEM.text, PROBLEM.reference_steps)
    assert first["id"] == "a" and second["id"] == 7
    assert first["step_scores"] == pytest.approx(expected, abs=1e-5) == second["step_scores"]
    assert first["aggregate"] == pytest.approx(min(expected), abs=1e-5)
    assert first["first_error"] == next((i for i, s in enumerate(expected) if s < 0.5), -1)


def test_openrlhf_get_reward(client, prm):
    response = "\n\n".join(PROBLEM.reference_steps)
    reply = client.post("/get_reward", json={"query": [PROBLEM.text + response], "prompts": [PROBLEM.text],
                                              "labels": ["x"]})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["rewards"] == body["scores"] and len(body["extra_logs"]["prm_first_error"]) == 1
    assert body["rewards"][0] == pytest.approx(min(prm.score(PROBLEM.text, PROBLEM.reference_steps)), abs=1e-5)


@pytest.mark.parametrize("headers,body,status,message", [
    ({"Authorization": ""}, {"items": []}, 401, "bearer token"),
    ({"Authorization": "Bearer wrong"}, {"items": []}, 401, "bearer token"),
    ({}, {"items": [{"id": 1, "prompt": "p", "steps": ["x" * 30_000]}]}, 413, "over 20000 bytes"),
    ({}, {"items": [{"id": 1, "prompt": "p", "steps": ["a"]}, {"id": 2, "steps": ["a"]}]}, 422, "items[1].prompt: Field required"),
    ({}, {"items": [{"id": 1, "prompt": "p"}]}, 422, "items[0]: Value error, give exactly one of 'steps' or 'response'"),
    ({}, {"items": [{"id": 1, "prompt": "p", "steps": ["a"]}], "aggregate": "max"}, 422, "aggregate"),
])
def test_bad_requests_get_the_right_status_and_the_server_keeps_serving(client, headers, body, status, message):
    reply = client.post("/v1/prm/score", json=body, headers=headers)
    assert reply.status_code == status and message in reply.json()["detail"]
    assert client.get("/health").json()["status"] == "ok"


def test_health_and_the_openapi_page_answer_without_a_token_and_everything_else_keeps_it(prm):
    with TestClient(create_app(prm, api_key="sesame", name="toy-prm", threshold=0.4)) as anonymous:
        assert anonymous.get("/health").status_code == 200  # load balancers probe without credentials
        assert anonymous.head("/health").status_code in (200, 405)
        schema = anonymous.get("/openapi.json").json()
        assert {"/v1/prm/score", "/get_reward", "/v1/models", "/health"} <= set(schema["paths"])
        assert anonymous.get("/docs").status_code == 200
        for method, path in (("get", "/v1/models"), ("post", "/v1/prm/score"), ("post", "/get_reward"),
                             ("post", "/health")):
            assert getattr(anonymous, method)(path).status_code == 401, (method, path)
        models = anonymous.get("/v1/models", headers={"Authorization": "Bearer sesame"}).json()
    assert models["object"] == "list" and len(models["data"]) == 1
    card = models["data"][0]
    assert (card["id"], card["object"], card["format"], card["threshold"]) == ("toy-prm", "model", "prmfactory", 0.4)
    assert (card["kind"], card["segmentation"], card["max_length"]) == (prm.meta.kind, prm.meta.segmentation,
                                                                       prm.meta.max_length)


def test_the_threshold_decides_the_first_error(prm):
    steps = PROBLEM.reference_steps
    scores = prm.score(PROBLEM.text, steps)
    body = {"items": [{"id": 1, "prompt": PROBLEM.text, "steps": steps}]}
    for threshold in (0.0, 1.01):  # nothing is below 0; everything is below 1.01
        with TestClient(create_app(prm, threshold=threshold)) as open_client:
            first_error = open_client.post("/v1/prm/score", json=body).json()["results"][0]["first_error"]
        assert first_error == (-1 if threshold == 0.0 else 0), (threshold, scores)


@pytest.mark.parametrize("content, status, message", [
    (b'{"items": [' + b'{"id": 1, "prompt": "p", "steps": ["' + b"x" * 30_000 + b'"]}]}', 413, "over 20000 bytes"),
    (b'{"items": "\xff\xfe"}', 422, "body: not valid UTF-8"),
    (b'{"a": ' * 1_000 + b'1' + b'}' * 1_000, 422, "nested deeper than"),
    (b"[" * 9_000 + b"]" * 9_000, 422, "nested deeper than"),
    (b'{"items": ' + b"[" * 40 + b"]" * 40 + b"}", 422, "nested deeper than 32"),
    (b'{"items": [1, }', 422, "body: invalid JSON"),
])
def test_chunked_oversize_undecodable_and_deep_bodies(client, content, status, message):
    def chunks():  # no content-length: the server only learns the size while reading
        for start in range(0, len(content), 4096):
            yield content[start:start + 4096]

    reply = client.post("/v1/prm/score", content=chunks(), headers={"Content-Type": "application/json"})
    assert reply.status_code == status and message in reply.json()["detail"], reply.text[:300]
    assert client.get("/health").json()["status"] == "ok"


def test_grpo_reward_function_logs_step_scores(prm):
    from prmfactory.rl import GRPOReward

    reward = GRPOReward(prm, "last")
    logged, metrics = {}, {}
    completions = [[{"role": "assistant", "content": "\n\n".join(PROBLEM.reference_steps)}], "The answer is \\boxed{1}."]
    prompts = [[{"role": "user", "content": PROBLEM.text}], PROBLEM.text]
    values = reward(prompts=prompts, completions=completions, log_extra=logged.__setitem__,
                    log_metric=metrics.__setitem__)
    assert len(values) == 2 and reward.__name__ == "prm_last"
    assert values[0] == pytest.approx(prm.score(PROBLEM.text, PROBLEM.reference_steps)[-1], abs=1e-6)
    assert len(json.loads(logged["prm_step_scores"][0])) == len(PROBLEM.reference_steps)
    assert 0 <= metrics["prm/flagged_fraction"] <= 1


@pytest.fixture(scope="module")
def server(discriminative_prm):
    """`prmfactory serve` in its own process on 127.0.0.1, stopped by its PID."""
    from prmfactory.serve.client import running_server

    with running_server(discriminative_prm[0], api_key="sesame") as url:
        yield url


@pytest.mark.slow
def test_server_under_load_and_faults(server, prm):
    """1,000 requests at concurrency 32: no errors; then faults; the server keeps serving."""
    import httpx

    from prmfactory.serve.client import RemotePRM, load_test

    problems = generate(50, "test", 9)
    result = load_test(server, [p.text for p in problems], ["\n\n".join(p.reference_steps) for p in problems],
                       requests=1000, concurrency=32, api_key="sesame")
    print(f"\nserve load: {result}")
    assert result["errors"] == 0, result["first_errors"]
    assert httpx.post(f"{server}/v1/prm/score", json={"items": []}).status_code == 401
    auth = {"Authorization": "Bearer sesame"}
    big = {"items": [{"id": 1, "prompt": "p", "steps": ["x" * 5_000_000]}]}
    assert httpx.post(f"{server}/v1/prm/score", json=big, headers=auth).status_code == 413
    assert httpx.post(f"{server}/v1/prm/score", json={"items": [{"id": 1}]}, headers=auth).status_code == 422
    assert RemotePRM(server, "sesame").rewards([PROBLEM.text], ["\n\n".join(PROBLEM.reference_steps)])[0].reward > 0
    remote = RemotePRM(server, "sesame").scored_steps([PROBLEM.text], ["\n\n".join(PROBLEM.reference_steps)])[0]
    local = prm.scored_steps([PROBLEM.text], ["\n\n".join(PROBLEM.reference_steps)])[0]
    assert remote.spans == local.spans and remote.scores == pytest.approx(local.scores, abs=1e-5)


@pytest.mark.slow
def test_verl_and_openrlhf_adapters_through_the_server(server, monkeypatch):
    from prmfactory import rl

    monkeypatch.setenv("PRMFACTORY_PRM_URL", server)
    monkeypatch.setenv("PRMFACTORY_API_KEY", "sesame")
    rl._environment_source.cache_clear()
    response = "\n\n".join(PROBLEM.reference_steps)
    verl = verl_compute_score("toy", response, str(PROBLEM.answer), {"question": PROBLEM.text})
    openrlhf = openrlhf_reward_func([PROBLEM.text + response], [PROBLEM.text], [str(PROBLEM.answer)])
    assert 0 <= verl["score"] <= 1
    assert float(openrlhf["rewards"][0]) == pytest.approx(verl["score"], abs=1e-5)
    in_process = grpo_reward(url=server, api_key="sesame")(prompts=[PROBLEM.text], completions=[response])
    assert in_process[0] == pytest.approx(verl["score"], abs=1e-5)
    rl._environment_source.cache_clear()
