"""Talking to ``prmfactory serve``: a client with the same ``rewards`` call as an in-process PRM, a
load test, and a helper that runs the server in a child process."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence

from prmfactory.prm import StepReward

if TYPE_CHECKING:
    from prmfactory.credit import ScoredSteps


class RemotePRM:
    """``POST /v1/prm/score`` over httpx; responses are split into steps by the server."""

    def __init__(self, url: str, api_key: Optional[str] = None, timeout_s: float = 120.0):
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout_s = timeout_s

    def payload(self, prompts: Sequence[str], responses: Sequence[str], how: str) -> dict[str, Any]:
        return {"aggregate": how, "items": [{"id": i, "prompt": p, "response": r}
                                             for i, (p, r) in enumerate(zip(prompts, responses))]}

    @staticmethod
    def parse(body: dict[str, Any]) -> list[StepReward]:
        return [StepReward([math.nan if s is None else s for s in r["step_scores"]], r["first_error"], r["aggregate"])
                for r in body["results"]]

    def _post(self, prompts: Sequence[str], responses: Sequence[str], how: str) -> dict[str, Any]:
        import httpx

        response = httpx.post(f"{self.url}/v1/prm/score", json=self.payload(prompts, responses, how),
                              headers=self.headers, timeout=self.timeout_s)
        response.raise_for_status()
        return response.json()

    def rewards(self, prompts: Sequence[str], responses: Sequence[str], how: str = "min") -> list[StepReward]:
        return self.parse(self._post(prompts, responses, how))

    def scored_steps(self, prompts: Sequence[str], responses: Sequence[str]) -> list["ScoredSteps"]:
        """Each response's step spans (split by the server) and step scores, as ``PRM.scored_steps``."""
        from prmfactory.credit import ScoredSteps

        return [ScoredSteps([tuple(span) for span in r["step_spans"]],
                            [math.nan if s is None else s for s in r["step_scores"]])
                for r in self._post(prompts, responses, "min")["results"]]

    async def arewards(self, client, prompts: Sequence[str], responses: Sequence[str], how: str = "min") -> list[StepReward]:
        """The same call on a shared ``httpx.AsyncClient`` (for many concurrent requests)."""
        response = await client.post(f"{self.url}/v1/prm/score", json=self.payload(prompts, responses, how),
                                     headers=self.headers, timeout=self.timeout_s)
        response.raise_for_status()
        return self.parse(response.json())


def load_test(url: str, prompts: Sequence[str], responses: Sequence[str], *, requests: int = 1000,
              concurrency: int = 32, api_key: Optional[str] = None) -> dict[str, Any]:
    """``requests`` single-solution score requests, ``concurrency`` at a time: latency percentiles and errors.

    Cycles through (prompt, response) pairs; an error is any request that raised or returned a
    result of the wrong shape.
    """
    import asyncio
    import time

    import httpx

    remote = RemotePRM(url, api_key)
    latencies: list[float] = []
    errors: list[str] = []

    async def run() -> float:
        limit = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient() as client:
            async def one(index: int) -> None:
                prompt, response = prompts[index % len(prompts)], responses[index % len(responses)]
                async with limit:
                    started = time.perf_counter()
                    try:
                        result = await remote.arewards(client, [prompt], [response])
                        if len(result) != 1:
                            errors.append(f"request {index}: {len(result)} results")
                    except Exception as exc:  # counted, not raised: the load test reports every failure
                        errors.append(f"request {index}: {exc!r}")
                    latencies.append(time.perf_counter() - started)

            started = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(requests)))
            return time.perf_counter() - started

    wall = asyncio.run(run())
    latencies.sort()

    def percentile(q: float) -> float:
        return round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1)

    return {"requests": requests, "concurrency": concurrency, "errors": len(errors), "first_errors": errors[:3],
            "p50_ms": percentile(0.50), "p99_ms": percentile(0.99), "requests_per_second": round(requests / wall, 1)}


@contextlib.contextmanager
def running_server(prm: str | Path, *, api_key: Optional[str] = None, port: Optional[int] = None,
                   start_timeout_s: float = 120.0, extra_args: Sequence[str] = ()) -> Iterator[str]:
    """``prmfactory serve`` in a child process on 127.0.0.1; yields its URL once /health answers, stops it by PID.

    The API key goes through the environment, never the command line (where `ps` would show it).
    """
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    import httpx

    if port is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    env = dict(os.environ, **({"PRMFACTORY_API_KEY": api_key} if api_key else {}))
    process = subprocess.Popen([sys.executable, "-c", "from prmfactory.cli import main; main()", "serve", "--prm",
                                str(prm), "--port", str(port), *extra_args], env=env)
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            try:
                if httpx.get(f"{url}/health", headers=headers).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the PRM server for {prm} did not start (exit code {process.poll()})")
            time.sleep(0.5)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
