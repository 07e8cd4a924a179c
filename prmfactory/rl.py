"""The PRM as the reward of online RL: TRL GRPO, OpenRLHF and verl adapters.

Every adapter asks a *reward source* — an in-process :class:`~prmfactory.prm.PRM` or a
:class:`~prmfactory.serve.client.RemotePRM` pointing at ``prmfactory serve`` — for one
:class:`~prmfactory.prm.StepReward` per (prompt, response): the response split into steps with
the PRM's separator, each step scored, the scores aggregated (min / last / prod / mean).

TRL (``GRPOTrainer(reward_funcs=[...])``)::

    from prmfactory.rl import grpo_reward
    reward = grpo_reward("runs/demo/prm")                       # in process
    reward = grpo_reward(url="http://127.0.0.1:8000")           # through the server
    trainer = GRPOTrainer(model=..., reward_funcs=[reward], ...)

OpenRLHF: point ``--remote_rm_url`` at the server's ``http://HOST:PORT/get_reward``, or at a file
containing ``from prmfactory.rl import openrlhf_reward_func as reward_func``, with
``PRMFACTORY_PRM_URL`` (or ``PRMFACTORY_PRM_PATH``) set.

verl (``custom_reward_function``)::

    custom_reward_function:
      path: /path/to/site-packages/prmfactory/rl.py
      name: verl_compute_score
    # env: PRMFACTORY_PRM_URL=http://127.0.0.1:8000 (or PRMFACTORY_PRM_PATH=runs/demo/prm);
    # the prompt is read from extra_info["question"] (or extra_info["prompt"]).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any, Optional, Sequence


def completion_text(message: Any) -> str:
    """Text of a plain string or of a chat conversation's last message."""
    if isinstance(message, str):
        return message
    if isinstance(message, list) and message and isinstance(message[-1], dict):
        return str(message[-1].get("content", ""))
    raise TypeError(f"expected a string or a list of chat messages, got {type(message).__name__}")


def _prompt_text(prompt: Any) -> str:
    """The problem of a prompt: the string, or the last user message of a conversation."""
    if isinstance(prompt, list):
        users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return completion_text(users[-1:] or prompt)
    return completion_text(prompt)


def reward_source(prm: str | Path | None = None, *, url: Optional[str] = None, api_key: Optional[str] = None):
    """An in-process PRM (``prm`` folder) or the PRM server at ``url``."""
    if (prm is None) == (url is None):
        raise ValueError("give exactly one of a PRM folder or a server url")
    if url is not None:
        from prmfactory.serve.client import RemotePRM

        return RemotePRM(url, api_key)
    from prmfactory.prm import PRM

    return PRM.from_pretrained(prm)


class GRPOReward:
    """A TRL GRPOTrainer reward function: one scalar per completion; step scores go to the completions table."""

    def __init__(self, source, aggregate: str = "min"):
        self.source, self.aggregate = source, aggregate
        self.__name__ = f"prm_{aggregate}"

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], log_extra=None, log_metric=None,
                 **kwargs) -> list[float]:
        rewards = self.source.rewards([_prompt_text(p) for p in prompts], [completion_text(c) for c in completions],
                                      self.aggregate)
        if log_extra is not None:
            log_extra("prm_step_scores", [json.dumps([round(s, 4) for s in r.step_scores]) for r in rewards])
            log_extra("prm_first_error", [r.first_error for r in rewards])
        if log_metric is not None:
            log_metric("prm/flagged_fraction", sum(r.first_error != -1 for r in rewards) / max(len(rewards), 1))
        return [r.reward for r in rewards]


def grpo_reward(prm: str | Path | None = None, *, url: Optional[str] = None, api_key: Optional[str] = None,
                aggregate: str = "min") -> GRPOReward:
    """The reward function for ``GRPOTrainer(reward_funcs=[...])`` from a PRM folder or a server url."""
    return GRPOReward(reward_source(prm, url=url, api_key=api_key), aggregate)


@functools.lru_cache(maxsize=1)
def _environment_source():
    """The reward source the environment names (verl and OpenRLHF call plain functions)."""
    url, path = os.environ.get("PRMFACTORY_PRM_URL"), os.environ.get("PRMFACTORY_PRM_PATH")
    if not url and not path:
        raise RuntimeError("set PRMFACTORY_PRM_URL (a `prmfactory serve` address) or PRMFACTORY_PRM_PATH (a PRM folder)")
    return reward_source(path if not url else None, url=url, api_key=os.environ.get("PRMFACTORY_API_KEY"))


def _aggregate() -> str:
    return os.environ.get("PRMFACTORY_AGGREGATE", "min")


def verl_compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: Optional[dict] = None,
                       **kwargs) -> dict[str, Any]:
    """verl's ``custom_reward_function``: the PRM reward of one response (and its first flagged step)."""
    info = extra_info or {}
    prompt = str(info.get("question") or info.get("prompt") or "")
    reward = _environment_source().rewards([prompt], [solution_str], _aggregate())[0]
    return {"score": reward.reward, "prm_first_error": reward.first_error}


def openrlhf_reward_func(queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any] = ()) -> dict[str, Any]:
    """OpenRLHF's reward-function file API: ``queries`` are prompt + response."""
    import torch

    responses = [q[len(p):] if q.startswith(p) else q for q, p in zip(queries, prompts)]
    rewards = _environment_source().rewards(list(prompts), responses, _aggregate())
    values = torch.tensor([r.reward for r in rewards], dtype=torch.float32)
    return {"rewards": values, "scores": values,
            "extra_logs": {"prm_first_error": torch.tensor([float(r.first_error) for r in rewards])}}
