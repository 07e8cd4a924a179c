"""The OpenAI-compatible backend: retries, errors, and a real `vllm serve` of a tiny model."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import httpx
import pytest

from prmfactory.engines.base import Message, Prompt, SamplingSpec
from prmfactory.engines.openai import EngineUnavailableError, OpenAIEngine
from prmfactory.errors import PrmfactoryError

PROMPT = Prompt((Message("user", "What is 2 + 3?"),), prefix="Step 1: 2 + 3 = 5.\n\n")


def reply(n=2):
    return {"choices": [{"index": i, "message": {"content": "x" * (i + 1)}, "finish_reason": "stop"} for i in range(n)],
            "usage": {"completion_tokens": 9}}


def engine_with(handler, **kwargs):
    return OpenAIEngine("m", base_url="http://server/v1", transport=httpx.MockTransport(handler), **kwargs)


def test_request_body_continues_the_prefix_and_counts_tokens():
    seen = []

    def handler(request):
        seen.append(json.loads(request.content))
        return httpx.Response(200, json=reply())

    async def go():
        engine = engine_with(handler)
        try:
            return await engine.generate(PROMPT, SamplingSpec(n=2, max_tokens=7, stop=("\n\n",)))
        finally:
            await engine.close()

    completions = asyncio.run(go())
    body = seen[0]
    assert body["messages"][-1] == {"role": "assistant", "content": PROMPT.prefix}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["n"] == 2 and body["max_tokens"] == 7 and body["stop"] == ["\n\n"]
    assert [c.text for c in completions] == ["x", "xx"] and sum(c.num_tokens for c in completions) == 9


def test_greedy_asks_for_one_sample_and_repeats_it():
    seen = []

    def handler(request):
        seen.append(json.loads(request.content))
        return httpx.Response(200, json=reply(1))

    async def go():
        engine = engine_with(handler)
        try:
            return await engine.generate(PROMPT, SamplingSpec(n=3, temperature=0.0))
        finally:
            await engine.close()

    completions = asyncio.run(go())
    assert seen[0]["n"] == 1 and [c.text for c in completions] == ["x", "x", "x"]


def test_transient_errors_are_retried_with_backoff():
    answers = iter([httpx.Response(503, text="busy"), httpx.Response(429, text="slow down"),
                    httpx.Response(200, json=reply(1))])
    calls = []

    def handler(request):
        calls.append(time.monotonic())
        return next(answers)

    async def go():
        engine = engine_with(handler, max_retries=3)
        try:
            return await engine.generate(PROMPT, SamplingSpec())
        finally:
            await engine.close()

    assert asyncio.run(go())[0].text == "x"
    # exponential backoff with jitter: waits of 0.5 s then 1 s, each scaled by 0.5-1.5
    assert len(calls) == 3 and calls[1] - calls[0] >= 0.24 and calls[2] - calls[1] >= 0.49


def test_client_errors_are_not_retried():
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(400, text="prompt too long")

    async def go():
        engine = engine_with(handler)
        try:
            await engine.generate(PROMPT, SamplingSpec())
        finally:
            await engine.close()

    with pytest.raises(PrmfactoryError, match="HTTP 400: prompt too long"):
        asyncio.run(go())
    assert len(calls) == 1


def test_concurrency_is_bounded():
    active, peak = [0], [0]

    async def handler(request):
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        await asyncio.sleep(0.02)
        active[0] -= 1
        return httpx.Response(200, json=reply(1))

    async def go():
        engine = engine_with(handler, max_concurrency=3)
        try:
            await asyncio.gather(*(engine.generate(PROMPT, SamplingSpec()) for _ in range(12)))
        finally:
            await engine.close()

    asyncio.run(go())
    assert peak[0] == 3


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down_is_a_clear_error():
    async def go():
        engine = OpenAIEngine("m", base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=1)
        try:
            await engine.generate(PROMPT, SamplingSpec())
        finally:
            await engine.close()

    with pytest.raises(EngineUnavailableError, match="server unavailable after 2 attempts"):
        asyncio.run(go())


@pytest.fixture(scope="module")
def vllm_server(tiny_model_dir, tmp_path_factory):
    """`vllm serve` of the tiny model on 127.0.0.1, stopped by its PID."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    command = [sys.executable, "-m", "prmfactory.engines.vllm_serve", "serve", str(tiny_model_dir), "--host",
               "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "512", "--enforce-eager",
               "--served-model-name", "tiny", "--kv-cache-memory-bytes", str(256 * 2**20), "--block-size", "32"]
    with open(log, "w") as handle:
        server = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                                  env=dict(os.environ, HF_HUB_OFFLINE="1"))
    try:
        deadline = time.time() + 300
        while True:
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, "server did not come up"
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@pytest.mark.slow
def test_mcts_against_a_real_vllm_server(vllm_server, tmp_path):
    from prmfactory.store import Run

    cli = [sys.executable, "-c", "from prmfactory.cli import main; main()"]
    problems = tmp_path / "p.jsonl"
    subprocess.run(cli + ["toy", "problems", "--n", "6", "--output", str(problems)], check=True, capture_output=True)
    result = subprocess.run(cli + ["mcts", "--input", str(problems), "--output", str(tmp_path / "run"), "--policy",
                                   "tiny", "--base-url", vllm_server, "--rollouts", "4", "--max-new-tokens", "32",
                                   "--strategy", "mc", "--num-solutions", "2", "--quiet"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    run = Run(tmp_path / "run")
    questions = run.read("questions").to_pylist()
    assert len(questions) == 6 and all(q["status"] == "searched" for q in questions)
    assert all(q["generated_tokens"] > 0 for q in questions)
    nodes = run.read("nodes").to_pylist()
    assert sum(n["depth"] == 0 and n["num_rollouts"] == 2 for n in nodes) == 6
    assert all(n["depth"] > 0 for n in nodes if n["node_id"] != "0")
    assert run.read_report("mcts")["engine"]["requests"] >= 6


@pytest.mark.slow
def test_prefix_continuation_through_the_server(vllm_server):
    async def go():
        engine = OpenAIEngine("tiny", base_url=vllm_server)
        try:
            return await engine.generate(PROMPT, SamplingSpec(n=3, max_tokens=8, temperature=1.0))
        finally:
            await engine.close()

    completions = asyncio.run(go())
    assert len(completions) == 3 and all(c.finish_reason in ("stop", "length") for c in completions)
    assert not any(c.text.startswith(PROMPT.prefix) for c in completions)
