"""Qwen2.5-Math-PRM's process-reward model, without remote code.

The Hub checkpoints (Qwen/Qwen2.5-Math-PRM-7B, -72B) name ``Qwen2ForProcessRewardModel`` from their own
``modeling_qwen2_rm.py``, which ``trust_remote_code`` would run. This is the same network under the same
parameter names — the Qwen2 decoder (``model.*``) and the head ``score`` = Linear(h, h) → ReLU →
Linear(h, 2) — as vLLM's ``Qwen2ForProcessRewardModel`` also defines it, so the published weights load
into it as they are. Written by hand because transformers has no such class.
"""

from __future__ import annotations

from torch import nn
from transformers import Qwen2Config, Qwen2Model, Qwen2PreTrainedModel
from transformers.modeling_outputs import TokenClassifierOutput


class Qwen2ProcessRewardModel(Qwen2PreTrainedModel):
    """Qwen2 decoder with Qwen2.5-Math-PRM's two-class head on every token."""

    config_class = Qwen2Config

    def __init__(self, config: Qwen2Config):
        super().__init__(config)
        self.model = Qwen2Model(config)
        self.score = nn.Sequential(nn.Linear(config.hidden_size, config.hidden_size), nn.ReLU(),
                                   nn.Linear(config.hidden_size, 2))
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, **kwargs) -> TokenClassifierOutput:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        return TokenClassifierOutput(logits=self.score(hidden))
