"""Process-supervised GRPO: TRL's ``GRPOTrainer`` with per-step credit on the policy's own tokens.

``StepCreditGRPOTrainer`` overrides one method, ``_generate_and_score_completions``: TRL generates and
scores as usual (its ``reward_funcs`` give the outcome reward and the outcome advantage), then the
completions' steps are scored by a *step reward source* — a :class:`~prmfactory.prm.PRM`, a
:class:`~prmfactory.serve.client.RemotePRM`, or anything with ``scored_steps(prompts, responses)``
(the toy oracle in ``benchmarks/grpo_credit.py``) — and the ``(batch,)`` advantages are replaced by
``(batch, tokens)`` ones from :mod:`prmfactory.credit`. TRL 1.16's loss takes advantages of either
shape (``_compute_loss``: "to support subclasses that provide advantages with shape (B, T)"), so
nothing else is overridden; a reward-function-only extension cannot do this, because TRL reduces a
reward function's output to one number per completion before the advantage.

Step rewards reach tokens by characters, not token ids: the completion is decoded, split into steps
with the PRM's segmentation (character spans), and each token takes the credit of the step its text
starts in — so the PRM's tokenizer need not be the policy's (trl #2577).

Usage::

    from prmfactory.grpo import StepCreditGRPOTrainer
    trainer = StepCreditGRPOTrainer(model=..., reward_funcs=[outcome_reward], args=GRPOConfig(...),
                                    train_dataset=..., processing_class=tokenizer,
                                    step_rewards=PRM.from_pretrained("runs/prm"), credit="min")
"""

from __future__ import annotations

import math
from typing import Any

from trl import GRPOTrainer

from prmfactory.credit import CREDIT_MODES, group_step_advantages, token_char_ends, token_steps


class StepCreditGRPOTrainer(GRPOTrainer):
    """GRPO whose advantages are per token, from step rewards (``credit``: outcome, sum, min or mix)."""

    def __init__(self, *args, step_rewards=None, credit: str = "sum", step_weight: float = 1.0, **kwargs):
        if credit not in CREDIT_MODES:
            raise ValueError(f"credit {credit!r}: expected one of {', '.join(CREDIT_MODES)}")
        if credit != "outcome" and step_rewards is None:
            raise ValueError(f"credit {credit!r} needs step_rewards (a PRM, a RemotePRM or another step scorer)")
        super().__init__(*args, **kwargs)
        self.step_rewards, self.credit, self.step_weight = step_rewards, credit, step_weight

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        import torch
        from accelerate.utils import gather_object

        from prmfactory.rl import prompt_text

        output = super()._generate_and_score_completions(inputs)
        if self.credit == "outcome":
            return output
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        mask = output["completion_mask"]
        token_ids = [row[:length].tolist() for row, length in zip(output["completion_ids"], mask.sum(dim=1).tolist())]
        responses = [tokenizer.decode(ids, skip_special_tokens=True) for ids in token_ids]
        scored = self.step_rewards.scored_steps([prompt_text(x["prompt"]) for x in inputs], responses)
        # A group's statistics need all of its completions, which may sit on other processes.
        all_scores = gather_object([s.scores for s in scored])
        all_outcome = gather_object(output["advantages"].tolist())
        group = self.num_generations if self.model.training else self.num_generations_eval
        step_advantages: list[list[float]] = []
        for start in range(0, len(all_scores), group):
            step_advantages += group_step_advantages(all_scores[start:start + group], all_outcome[start:start + group],
                                                     self.credit, self.step_weight)
        local = step_advantages[self.accelerator.process_index * len(inputs):][:len(inputs)]
        advantages = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
        for row, (ids, steps, per_step) in enumerate(zip(token_ids, scored, local)):
            owners = token_steps(token_char_ends(tokenizer, ids), steps.spans)
            advantages[row, :len(ids)] = torch.tensor([per_step[min(k, len(per_step) - 1)] for k in owners])
        output["advantages"] = advantages
        mode = "train" if self.model.training else "eval"
        steps_per_completion = [len(s.spans) for s in scored]
        self._metrics[mode]["credit/steps_per_completion"].append(sum(steps_per_completion) / max(len(scored), 1))
        known = [v for s in scored for v in s.scores if not math.isnan(v)]
        self._metrics[mode]["credit/mean_step_reward"].append(sum(known) / len(known) if known else 0.0)
        return output
