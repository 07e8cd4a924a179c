"""A client of the PRM server with the same ``rewards`` call as an in-process :class:`~prmfactory.prm.PRM`."""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

from prmfactory.prm import StepReward


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

    def rewards(self, prompts: Sequence[str], responses: Sequence[str], how: str = "min") -> list[StepReward]:
        import httpx

        response = httpx.post(f"{self.url}/v1/prm/score", json=self.payload(prompts, responses, how),
                              headers=self.headers, timeout=self.timeout_s)
        response.raise_for_status()
        return self.parse(response.json())

    async def arewards(self, client, prompts: Sequence[str], responses: Sequence[str], how: str = "min") -> list[StepReward]:
        """The same call on a shared ``httpx.AsyncClient`` (for many concurrent requests)."""
        response = await client.post(f"{self.url}/v1/prm/score", json=self.payload(prompts, responses, how),
                                     headers=self.headers, timeout=self.timeout_s)
        response.raise_for_status()
        return self.parse(response.json())
