"""The PRM as the reward of online RL: TRL GRPO, OpenRLHF and verl adapters.

Every adapter asks a *reward source* — an in-process :class:`~prmfactory.prm.PRM` or a
:class:`~prmfactory.serve.client.RemotePRM` pointing at ``prmfactory serve`` — for one
:class:`~prmfactory.prm.StepReward` per (prompt, response): the response split into steps with
the PRM's separator, each step scored, the scores aggregated (min / last / prod / mean); or, for
dense rewards, for each step's score with its character span (``scored_steps``).

TRL (``GRPOTrainer(reward_funcs=[...])``) — one scalar per completion; for per-step credit use
:class:`prmfactory.grpo.StepCreditGRPOTrainer`::

    from prmfactory.rl import grpo_reward
    reward = grpo_reward("runs/demo/run/prm")                   # in process
    reward = grpo_reward(url="http://127.0.0.1:8000")           # through the server
    trainer = GRPOTrainer(model=..., reward_funcs=[reward], ...)

OpenRLHF (checked against 0.11.2; 0.10.2 and later take ``--reward.remote_url``, earlier ``--remote_rm_url``): the server's
``http://HOST:PORT/get_reward``, started with ``--policy-template POLICY`` so the policy's chat
template is stripped from OpenRLHF's prompts (or ``--question-from label``). OpenRLHF sends no
``Authorization`` header: serve it keyless on loopback (the default without ``--api-key``), or use
the file route — a ``.py`` file containing ``from prmfactory.rl import openrlhf_reward_func as
reward_func`` given as the URL, with ``PRMFACTORY_PRM_URL`` + ``PRMFACTORY_API_KEY`` (or
``PRMFACTORY_PRM_PATH``) and ``PRMFACTORY_POLICY_TEMPLATE`` set: it calls the server with the key.

verl (checked against 0.9.1; verl ≥ 0.7.1 reads only the ``reward.`` keys, and since 0.9 the legacy
top-level ``custom_reward_function`` / ``reward_model.reward_manager`` keys are ignored) — one score per
response, or dense step rewards with the reward manager::

    reward.custom_reward_function.path=pkg://prmfactory.rl reward.custom_reward_function.name=verl_compute_score
    # or, dense:
    reward.reward_manager.source=importlib reward.reward_manager.name=VerlPRMRewardManager
    reward.reward_manager.module.path=pkg://prmfactory.rl
    # env: PRMFACTORY_PRM_URL=http://127.0.0.1:8000 (or PRMFACTORY_PRM_PATH=runs/demo/run/prm);
    # the problem is read from extra_info["question"] (or ["prompt"]); a response without one is refused.

Every cached source loads once under a lock and an in-process PRM scores under its own lock, so the
thread pools verl and OpenRLHF call these functions from get the single-threaded rewards.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import threading
from pathlib import Path
from typing import Any, Optional, Sequence

from prmfactory.errors import UsageError
from prmfactory.serve.openrlhf import OpenRLHFQueries

logger = logging.getLogger("prmfactory.rl")


def completion_text(message: Any) -> str:
    """Text of a plain string or of a chat conversation's last message."""
    if isinstance(message, str):
        return message
    if isinstance(message, list) and message and isinstance(message[-1], dict):
        return str(message[-1].get("content", ""))
    raise TypeError(f"expected a string or a list of chat messages, got {type(message).__name__}")


def prompt_text(prompt: Any) -> str:
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
        rewards = self.source.rewards([prompt_text(p) for p in prompts], [completion_text(c) for c in completions],
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


def _loaded_once(load):
    """``load()``'s value, computed once per process and under a lock.

    verl's reward loop calls ``compute_score`` from a thread pool and OpenRLHF's file route runs
    ``reward_func`` in ``asyncio.to_thread``, so the first calls arrive together: without the lock
    each would load its own PRM at once (transformers' loading is not thread-safe), and the one kept
    could be corrupt, silently, for every later reward. ``cache_clear`` forgets the value (tests)."""
    lock = threading.Lock()
    cached = functools.lru_cache(maxsize=1)(load)

    @functools.wraps(load)
    def get():
        with lock:
            return cached()

    get.cache_clear = cached.cache_clear
    return get


@_loaded_once
def _environment_source():
    """The reward source the environment names (verl and OpenRLHF call plain functions)."""
    url, path = os.environ.get("PRMFACTORY_PRM_URL"), os.environ.get("PRMFACTORY_PRM_PATH")
    if not url and not path:
        raise RuntimeError("set PRMFACTORY_PRM_URL (a `prmfactory serve` address) or PRMFACTORY_PRM_PATH (a PRM folder)")
    return reward_source(path if not url else None, url=url, api_key=os.environ.get("PRMFACTORY_API_KEY"))


def _aggregate() -> str:
    return os.environ.get("PRMFACTORY_AGGREGATE", "min")


def _verl_problem(extra_info: Optional[dict], where: str) -> str:
    info = extra_info or {}
    problem = info.get("question") or info.get("prompt")
    if not isinstance(problem, str) or not problem.strip():
        raise ValueError(f"{where}: extra_info has no 'question' (or 'prompt'): the PRM would score the steps without "
                         "their problem; put the raw problem text in extra_info['question'] when preprocessing "
                         "the dataset (verl's own math_dataset.py does not)")
    return problem


def verl_compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: Optional[dict] = None,
                       **kwargs) -> dict[str, Any]:
    """verl's ``custom_reward_function``: the PRM reward of one response (and its first flagged step).

    verl passes the response, not the prompt: the problem comes from ``extra_info['question']`` (or
    ``['prompt']``), and a response without one is refused rather than scored against an empty problem."""
    problem = _verl_problem(extra_info, "verl_compute_score")
    reward = _environment_source().rewards([problem], [solution_str], _aggregate())[0]
    return {"score": reward.reward, "prm_first_error": reward.first_error}


def dense_step_rewards(source, tokenizer, problems: Sequence[str], response_ids: Sequence[Sequence[int]]
                       ) -> list[list[float]]:
    """Per-token rewards: each step's PRM score on the last policy token of that step, 0 elsewhere.

    The response is decoded and split into steps by characters (:meth:`PRM.scored_steps`), so the
    PRM's tokenizer need not be the policy's; an unscored step (cut off by the PRM's length) gives 0."""
    from prmfactory.credit import token_char_ends, token_steps

    responses = [tokenizer.decode(ids, skip_special_tokens=True) for ids in response_ids]
    dense = []
    for ids, scored in zip(response_ids, source.scored_steps(list(problems), responses)):
        rewards = [0.0] * len(ids)
        owners = token_steps(token_char_ends(tokenizer, ids), scored.spans)
        for position, owner in enumerate(owners):
            last_of_step = position + 1 == len(owners) or owners[position + 1] != owner
            if last_of_step and owner < len(scored.scores) and not math.isnan(scored.scores[owner]):
                rewards[position] = scored.scores[owner]
        dense.append(rewards)
    return dense


VERL_CHECKED = "0.9.1"  # the verl version whose reward loop these adapters were driven with (tests/test_rl_clients.py)


def check_verl_config(config: Any) -> None:
    """Refuse a verl configuration that would build the reward manager and never call it; warn about the
    legacy top-level keys that verl ≥ 0.9 no longer reads (verl PR #6710), which would leave a user
    training with verl's rule-based scorer instead of the PRM without a word."""
    if config is None:
        return
    reward = config.get("reward") or {}
    if (reward.get("reward_model") or {}).get("enable") and not (reward.get("custom_reward_function") or {}).get("path"):
        raise ValueError("verl config: reward.reward_model.enable is true and reward.custom_reward_function.path is "
                         "unset, so verl scores with its own reward model and never calls VerlPRMRewardManager; set "
                         "reward.reward_model.enable=false")
    legacy = {"custom_reward_function.path": (config.get("custom_reward_function") or {}).get("path"),
              "reward_model.reward_manager": (config.get("reward_model") or {}).get("reward_manager"),
              "reward_model.reward_loop_source": (config.get("reward_model") or {}).get("reward_loop_source")}
    ignored = [key for key, value in legacy.items() if value is not None]
    if ignored:
        logger.warning("verl config sets %s: verl >= 0.9 ignores these legacy keys; use the reward.* keys "
                       "(reward.custom_reward_function.*, reward.reward_manager.*)", ", ".join(ignored))


class VerlPRMRewardManager:
    """A verl reward manager with dense PRM rewards: each step's score on the last response token of that step.

    The contract is verl 0.9's reward loop (``verl/experimental/reward_loop``: ``reward_loop.py`` and
    ``reward_manager/base.py`` at v0.9.1): each reward worker builds the manager as
    ``cls(config=, tokenizer=, compute_score=, reward_router_address=, reward_model_tokenizer=)`` and awaits
    ``run_single(data)`` for one sample, which returns ``{"reward_score": float, "reward_extra_info": dict}``;
    the trainer's reward-loop manager then calls the class's ``assemble_rm_scores(data, scores)`` for the
    ``(batch, response_length)`` reward tensor. ``reward_score`` here is a :class:`~prmfactory.credit.TokenRewards`:
    the sum of the step scores, carrying where each goes, so ``assemble_rm_scores`` places every step's
    score on its last token — token-level estimators (GAE, REINFORCE++) get dense step rewards, GRPO-style
    ones (which sum a row) the sum; on verl's agent-loop path, which puts ``reward_score`` on the last token
    itself, a row gets the same sum. Configure it with the ``reward.`` keys (verl ≥ 0.7.1; the legacy
    top-level keys are ignored since 0.9)::

        reward.reward_manager.source=importlib reward.reward_manager.name=VerlPRMRewardManager
        reward.reward_manager.module.path=pkg://prmfactory.rl

    The PRM comes from ``PRMFACTORY_PRM_URL`` (a server) or ``PRMFACTORY_PRM_PATH`` (loaded once per worker);
    the problem from ``extra_info["question"]`` (or ``["prompt"]``).
    """

    def __init__(self, config: Any = None, tokenizer: Any = None, compute_score: Any = None,
                 reward_router_address: Optional[str] = None, reward_model_tokenizer: Any = None, **kwargs):
        if tokenizer is None:
            raise ValueError("VerlPRMRewardManager needs the policy's tokenizer (verl passes it as tokenizer=)")
        check_verl_config(config)
        self.tokenizer = tokenizer

    async def run_single(self, data) -> dict[str, Any]:
        import asyncio

        from prmfactory.credit import TokenRewards

        item = data[len(data) - 1]  # a multi-sequence sample is scored on its last sequence, as verl's own managers do
        responses = item.batch["responses"]
        length = int(item.batch["attention_mask"][-responses.shape[-1]:].sum())
        problem = _verl_problem(item.non_tensor_batch.get("extra_info"), "VerlPRMRewardManager")
        ids = responses[:length].tolist()
        tokens = (await asyncio.to_thread(lambda: dense_step_rewards(_environment_source(), self.tokenizer,
                                                                     [problem], [ids])))[0]
        reward = TokenRewards(tokens)
        return {"reward_score": reward, "reward_extra_info": {"prm_step_sum": float(reward),
                                                              "prm_steps": sum(1 for v in tokens if v)}}

    @classmethod
    def assemble_rm_scores(cls, data, scores: Sequence[float]):
        """The (batch, response_length) reward tensor: each sample's step scores where its steps end (a plain
        scalar, from another manager, on its last response token as verl's default puts it)."""
        import torch

        responses = data.batch["responses"]
        lengths = data.batch["attention_mask"][:, data.batch["prompts"].size(1):].sum(dim=1)
        reward = torch.zeros_like(responses, dtype=torch.float32)
        for row, score in enumerate(scores):
            tokens = getattr(score, "tokens", None)
            if tokens is None:
                reward[row, int(lengths[row]) - 1] = float(score)
            else:
                reward[row, :len(tokens)] = torch.tensor(tokens, dtype=torch.float32)
        return reward


@_loaded_once
def _environment_queries() -> OpenRLHFQueries:
    return OpenRLHFQueries(os.environ.get("PRMFACTORY_POLICY_TEMPLATE"), os.environ.get("PRMFACTORY_QUESTION_FROM", "prompt"))


def openrlhf_reward_func(queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any] = (), **kwargs
                         ) -> dict[str, Any]:
    """OpenRLHF's reward-function file API (``reward_func(queries, prompts, labels)``): ``queries`` are
    prompt + response; the policy's template comes from ``PRMFACTORY_POLICY_TEMPLATE``, the problem
    from the prompt or, with ``PRMFACTORY_QUESTION_FROM=label``, the label."""
    import torch

    problems, responses, matched = _environment_queries().split(queries, prompts, labels)
    rewards = _environment_source().rewards(problems, responses, _aggregate())
    values = torch.tensor([r.reward for r in rewards], dtype=torch.float32)
    return {"rewards": values, "scores": values,
            "extra_logs": {"prm_first_error": torch.tensor([float(r.first_error) for r in rewards]),
                           "prm_query_cut": torch.tensor([float(not m) for m in matched])}}
