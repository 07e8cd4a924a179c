"""The PRM as the reward of online RL: TRL GRPO, OpenRLHF and verl adapters.

Every adapter asks a *reward source* — an in-process :class:`~prmfactory.prm.PRM` or a
:class:`~prmfactory.serve.client.RemotePRM` pointing at ``prmfactory serve`` — for one
:class:`~prmfactory.prm.StepReward` per (prompt, response): the response split into steps with
the PRM's separator, each step scored, the scores aggregated (min / last / prod / mean); or, for
dense rewards, for each step's score with its character span (``scored_steps``).

TRL (``GRPOTrainer(reward_funcs=[...])``) — one scalar per completion; for per-step credit use
:class:`prmfactory.grpo.StepCreditGRPOTrainer`::

    from prmfactory.rl import grpo_reward
    reward = grpo_reward("runs/demo/prm")                       # in process
    reward = grpo_reward(url="http://127.0.0.1:8000")           # through the server
    trainer = GRPOTrainer(model=..., reward_funcs=[reward], ...)

OpenRLHF (v0.10.2 and later: ``--reward.remote_url``; earlier ``--remote_rm_url``): the server's
``http://HOST:PORT/get_reward``, started with ``--policy-template POLICY`` so the policy's chat
template is stripped from OpenRLHF's prompts (or ``--question-from label``). OpenRLHF sends no
``Authorization`` header: serve it keyless on loopback (the default without ``--api-key``), or use
the file route — a ``.py`` file containing ``from prmfactory.rl import openrlhf_reward_func as
reward_func`` given as the URL, with ``PRMFACTORY_PRM_URL`` + ``PRMFACTORY_API_KEY`` (or
``PRMFACTORY_PRM_PATH``) and ``PRMFACTORY_POLICY_TEMPLATE`` set: it calls the server with the key.

verl — one score per response (``custom_reward_function``) or dense step rewards (a reward manager)::

    custom_reward_function: {path: /path/to/site-packages/prmfactory/rl.py, name: verl_compute_score}
    reward_model:
      reward_manager: {source: importlib, name: VerlPRMRewardManager,
                       module: {path: /path/to/site-packages/prmfactory/rl.py}}
    # env: PRMFACTORY_PRM_URL=http://127.0.0.1:8000 (or PRMFACTORY_PRM_PATH=runs/demo/prm);
    # the problem is read from extra_info["question"] (or ["prompt"]); a response without one is refused.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Optional, Sequence

from prmfactory.errors import UsageError

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


@functools.lru_cache(maxsize=1)
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


class VerlPRMRewardManager:
    """A verl reward manager with dense PRM rewards: each step's score on its last response token.

    verl's contract (``verl/workers/reward_manager/naive.py`` at b178a3c): built with ``tokenizer``,
    ``num_examine``, ``compute_score`` and ``reward_fn_key``; called with a ``DataProto`` whose items
    hold ``prompts``, ``responses`` and ``attention_mask`` tensors and ``extra_info``; returns a
    ``(batch, response_length)`` reward tensor (or ``{"reward_tensor", "reward_extra_info"}``).
    Load it with ``reward_model.reward_manager.source=importlib``, ``.name=VerlPRMRewardManager`` and
    ``.module.path=.../prmfactory/rl.py``; the PRM comes from ``PRMFACTORY_PRM_URL`` or ``PRMFACTORY_PRM_PATH``.
    """

    def __init__(self, tokenizer, num_examine: int = 0, compute_score=None, reward_fn_key: str = "data_source",
                 **kwargs):
        self.tokenizer = tokenizer

    def __call__(self, data, return_dict: bool = False):
        import torch

        reward = torch.zeros_like(data.batch["responses"], dtype=torch.float32)
        problems, response_ids = [], []
        for index in range(len(data)):
            item = data[index]
            prompt_length = item.batch["prompts"].shape[-1]
            length = int(item.batch["attention_mask"][prompt_length:].sum())
            response_ids.append(item.batch["responses"][:length].tolist())
            problems.append(_verl_problem(item.non_tensor_batch.get("extra_info"), f"VerlPRMRewardManager: item {index}"))
        dense = dense_step_rewards(_environment_source(), self.tokenizer, problems, response_ids)
        for index, row in enumerate(dense):
            reward[index, :len(row)] = torch.tensor(row, dtype=torch.float32)
        if not return_dict:
            return reward
        return {"reward_tensor": reward, "reward_extra_info": {
            "prm_steps": [sum(1 for v in row if v) for row in dense]}}


class OpenRLHFQueries:
    """What OpenRLHF sends, turned back into (problem, response).

    OpenRLHF (``openrlhf/utils/agent.py`` at 3c3be62, ``SingleTurnAgentExecutor``) posts
    ``{"query": [decode(prompt_ids + response_ids, skip_special_tokens=False)], "prompts": [prompt],
    "labels": [label]}`` with no header, where ``prompt`` already carries the policy's chat template and
    the prompt ids may have been cut from the left to fit ``max_len``. So: the problem is the prompt
    with the policy's template stripped (``policy_template``: a tokenizer name or path), or the label
    (``question_from="label"``, for datasets whose label column holds the raw question); the response is
    the query after the prompt, or — when the query does not start with the prompt — after the
    template's last generation prompt, with a warning; the policy's special tokens are removed from it.
    """

    def __init__(self, policy_template: Optional[str] = None, question_from: str = "prompt"):
        if question_from not in ("prompt", "label"):
            raise UsageError(f"--question-from: expected prompt or label, got {question_from!r}")
        self.question_from = question_from
        self.head = self.tail = ""
        self.special: list[str] = []
        if policy_template:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(policy_template)
            mark = "\x00PRMFACTORY\x00"
            rendered = tokenizer.apply_chat_template([{"role": "user", "content": mark}], tokenize=False,
                                                     add_generation_prompt=True)
            self.head, self.tail = rendered.split(mark)
            self.special = sorted((t for t in tokenizer.all_special_tokens if t), key=len, reverse=True)

    def problem(self, prompt: str, label: Any) -> str:
        if self.question_from == "label":
            if not isinstance(label, str) or not label.strip():
                raise ValueError("question_from=label, but the label is not the problem text")
            return label
        if self.head or self.tail:
            if prompt.startswith(self.head) and prompt.endswith(self.tail):
                return prompt[len(self.head):len(prompt) - len(self.tail)]
            logger.warning("OpenRLHF prompt does not match the policy's chat template; scored as given: %.80r", prompt)
        return prompt

    def response(self, query: str, prompt: str) -> tuple[str, bool]:
        """The response, and whether the query started with the prompt (False: OpenRLHF cut the prompt)."""
        matched = query.startswith(prompt)
        if matched:
            text = query[len(prompt):]
        else:
            cut = query.rfind(self.tail) if self.tail.strip() else -1
            text = query[cut + len(self.tail):] if cut >= 0 else query
            logger.warning("OpenRLHF query does not start with its prompt (truncated to max_len?); scoring %s",
                           "the text after the last generation prompt" if cut >= 0 else "the whole query")
        for token in self.special:
            text = text.replace(token, "")
        return text, matched

    def split(self, queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any]
              ) -> tuple[list[str], list[str], list[bool]]:
        labels = list(labels) or [None] * len(queries)
        pairs = [self.response(q, p) for q, p in zip(queries, prompts)]
        return ([self.problem(p, l) for p, l in zip(prompts, labels)], [r for r, _ in pairs], [m for _, m in pairs])


@functools.lru_cache(maxsize=1)
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
