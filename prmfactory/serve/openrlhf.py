"""OpenRLHF's reward requests turned back into (problem, response), for the server's ``/get_reward`` and
:func:`prmfactory.rl.openrlhf_reward_func`. Written by hand: OpenRLHF sends the prompt with the
policy's chat template already applied, and no library undoes that."""

from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

from prmfactory.errors import UsageError

logger = logging.getLogger("prmfactory")


class OpenRLHFQueries:
    """What OpenRLHF sends, turned back into (problem, response).

    OpenRLHF (``openrlhf/utils/agent.py`` in 0.11.2, ``SingleTurnAgentExecutor``) posts
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
