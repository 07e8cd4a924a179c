"""Any OpenAI-compatible server (``vllm serve``, SGLang, a hosted API) as a generation backend.

Uses ``/chat/completions``. A step prefix is sent as a final assistant message with
``continue_final_message`` (a vLLM/SGLang extension); hosted APIs without it can still serve
prompts without a prefix (e.g. the judge). Concurrency is bounded by a semaphore; connection
errors, 429 and 5xx answers are retried with exponential backoff; when the server stays
unreachable the stage stops with :class:`EngineUnavailableError` rather than failing every
question. The API key is read from an environment variable and never stored.

Per-completion token counts: the API reports only the total for all ``n`` choices, so it is
apportioned to the choices by their length in characters.
"""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

from prmfactory.engines.base import Completion, EngineFailure, EngineStats, Prompt, SamplingSpec, replicate
from prmfactory.errors import PrmfactoryError


class EngineUnavailableError(EngineFailure):
    """The server cannot be reached or keeps failing; retrying questions would not help."""


class OpenAIEngine:
    def __init__(self, model: str, *, base_url: str, api_key_env: str = "OPENAI_API_KEY", max_concurrency: int = 64,
                 max_retries: int = 4, request_timeout_s: float = 600.0, transport: Any = None, seed: int | None = None):
        """``seed`` is accepted like every backend's and not sent: servers seed their own sampling."""
        import httpx

        self.model = model
        self.base_url = base_url.rstrip("/")
        key = os.environ.get(api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.AsyncClient(base_url=self.base_url, headers=headers,
                                         timeout=httpx.Timeout(request_timeout_s, connect=10.0), transport=transport)
        self._slots = asyncio.Semaphore(max_concurrency)
        self.max_retries = max_retries
        self.stats = EngineStats()

    def _body(self, prompt: Prompt, spec: SamplingSpec) -> dict[str, Any]:
        messages = [{"role": m.role, "content": m.content} for m in prompt.messages]
        body: dict[str, Any] = {"model": self.model, "messages": messages, "n": spec.distinct_samples,
                                "temperature": spec.temperature, "top_p": spec.top_p, "max_tokens": spec.max_tokens}
        if spec.stop:
            body.update(stop=list(spec.stop), include_stop_str_in_output=True)
        if prompt.prefix:
            messages.append({"role": "assistant", "content": prompt.prefix})
            body.update(continue_final_message=True, add_generation_prompt=False)
        return body

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        last_error = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(min(30.0, 0.5 * 2 ** (attempt - 1)) * (0.5 + random.random()))
            try:
                response = await self._client.post("/chat/completions", json=body)
            except httpx.TransportError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                last_error = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            if response.status_code >= 400:
                raise PrmfactoryError(f"{self.base_url} refused the request: HTTP {response.status_code}: "
                                      f"{response.text[:300]}")
            return response.json()
        raise EngineUnavailableError(f"{self.base_url}: server unavailable after {self.max_retries + 1} attempts "
                                     f"({last_error})")

    async def generate(self, prompt: Prompt, spec: SamplingSpec) -> list[Completion]:
        async with self._slots:
            self.stats.begin(spec.n)
            tokens = 0
            try:
                data = await self._post(self._body(prompt, spec))
                choices = sorted(data["choices"], key=lambda c: c["index"])
                texts = [c["message"]["content"] or "" for c in choices]
                tokens = int((data.get("usage") or {}).get("completion_tokens") or 0)
                chars = sum(len(t) for t in texts) or 1
                return replicate([Completion(t, round(tokens * len(t) / chars), c.get("finish_reason"))
                                  for t, c in zip(texts, choices)], spec)
            finally:
                self.stats.end(spec.n, tokens)

    def metrics(self) -> dict[str, float]:
        return self.stats.summary()

    async def close(self) -> None:
        await self._client.aclose()
