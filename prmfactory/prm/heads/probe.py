"""The ``probe`` head of a discriminative PRM: what the frozen base model already knows, read per step.

Each token t of a step gets a margin ``z_t = a(h_t) + softplus(b(h_t)) · log p(x_t | x_<t)``: ``h_t`` is
the base's last hidden state, ``(a, b)`` one linear layer — the only trained weights — and the
log-likelihood is the base's own next-token probability of the token that was written. A step's
logit is the soft minimum ``−log Σ_t exp(−z_t)`` over its tokens (its text and the separator after
it), so one token the base finds implausible can make the step wrong, and the gate ``b`` learns
which tokens count (on arithmetic, the written results). The score is ``sigmoid(step logit)``.

Why: a small model fine-tuned as a token classifier read at the separator learns the label prior
and little more (toy domain, BENCHMARKS.md "What limits the toy PRM"), while its base predicts the
right results: the base's surprise at the written result alone separates right from wrong steps.
The base stays frozen, so training costs one forward pass per row and cannot erode that knowledge.

References: probing a frozen LM's hidden states for truthfulness (Azaria & Mitchell 2023,
arXiv:2304.13734); token log-likelihoods of the policy as process rewards (implicit PRM, Yuan et
al. 2024, arXiv:2412.01981). Written by hand: no library has this head.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Sequence

import torch
from torch import nn
from transformers.modeling_outputs import TokenClassifierOutput

from prmfactory.prm.encoding import IGNORE_INDEX, step_spans

if TYPE_CHECKING:
    from prmfactory.prm.encoding import EncodedSolution

PROBE_FILE = "probe.safetensors"  # the head's weights, beside the base's own files


LOGIT_CHUNK_BYTES = 256 * 2**20  # float32 logits computed at once while reading log-likelihoods


def written_log_likelihoods(lm, hidden: torch.Tensor, input_ids: torch.Tensor,
                            attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``log p(x_t | x_<t)`` of each written token (B, T), float32; 0 at the first token and at padding.

    The LM head runs on the hidden states of real tokens only, a chunk of tokens at a time, so the
    (B, T, vocab) logits are never held at once: padding costs nothing and memory stays bounded
    (``LOGIT_CHUNK_BYTES``) however long the batch. Gemma-style final soft-capping is applied."""
    output = lm.get_output_embeddings()
    cap = getattr(lm.config, "final_logit_softcapping", None)
    real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    rows, columns = torch.nonzero(real[:, 1:] & real[:, :-1], as_tuple=True)  # token t + 1 read from position t
    written = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
    chunk = max(1, LOGIT_CHUNK_BYTES // (4 * output.out_features))
    for start in range(0, len(rows), chunk):
        row, column = rows[start:start + chunk], columns[start:start + chunk]
        logits = output(hidden[row, column]).float()
        if cap:
            logits = cap * torch.tanh(logits / cap)
        # cross-entropy's fused log-softmax: one pass over the vocabulary, where logsumexp takes several
        written[row, column + 1] = -nn.functional.cross_entropy(logits, input_ids[row, column + 1], reduction="none")
    return written


class LikelihoodProbe(nn.Module):
    """A frozen causal LM and the probe: ``forward`` gives each token's margin ``z_t`` as ``logits`` (B, T)."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm.requires_grad_(False).eval()
        self.head = nn.Linear(lm.config.hidden_size, 2, dtype=torch.float32)
        nn.init.zeros_(self.head.weight)
        # At the start every token passes (a = 4), so a step's margin begins near 4 − log(tokens) > 0.
        with torch.no_grad():
            self.head.bias.copy_(torch.tensor([4.0, 0.0]))

    @property
    def config(self):
        return self.lm.config

    def train(self, mode: bool = True) -> "LikelihoodProbe":
        super().train(mode)
        self.lm.eval()  # frozen: no dropout, whatever the trainer sets
        return self

    def forward(self, input_ids, attention_mask=None) -> TokenClassifierOutput:
        with torch.no_grad():
            hidden = self.lm.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            written = written_log_likelihoods(self.lm, hidden, input_ids, attention_mask)
        bias, gate = self.head(hidden.float()).unbind(-1)
        return TokenClassifierOutput(logits=bias + nn.functional.softplus(gate) * written)

    def save_pretrained(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        self.lm.save_pretrained(path)
        save_file({k: v.contiguous() for k, v in self.head.state_dict().items()}, str(Path(path) / PROBE_FILE))

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype=torch.float32) -> "LikelihoodProbe":
        """The base from ``path``, with the trained head when ``path`` holds one (a PRM folder)."""
        from safetensors.torch import load_file
        from transformers import AutoModelForCausalLM

        probe = cls(AutoModelForCausalLM.from_pretrained(path, dtype=dtype))
        if (Path(path) / PROBE_FILE).is_file():
            probe.head.load_state_dict(load_file(str(Path(path) / PROBE_FILE)))
        return probe


def step_logits(margins: torch.Tensor, spans: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Each step's logit: the soft minimum of its tokens' margins (``margins``: one row, (T,))."""
    return torch.stack([-torch.logsumexp(-margins[start:end], dim=0) for start, end in spans])


class ProbeHead:
    """The probe on a frozen base: trained by BCE of its pooled step logits against the soft targets."""

    name: ClassVar[str] = "probe"
    backends: ClassVar[tuple[str, ...]] = ("transformers",)  # vLLM's pooling runner has no head reading log-likelihoods
    adapters: ClassVar[bool] = False  # the base stays frozen
    files: ClassVar[tuple[str, ...]] = (PROBE_FILE,)
    card: ClassVar[str] = ("the base model is kept frozen; a linear probe on its last hidden state and its own "
                           "log-likelihood of each written token gives every token a margin, and a step's score is "
                           "the sigmoid of the soft minimum of its tokens' margins (`probe.safetensors` holds the "
                           "probe; prmfactory's `prm/heads/probe.py` defines it).")

    def for_training(self, base: str) -> LikelihoodProbe:
        return LikelihoodProbe.from_pretrained(base)

    def from_folder(self, path: str, dtype) -> LikelihoodProbe:
        return LikelihoodProbe.from_pretrained(path, dtype=dtype)

    def loss(self, margins, labels, prompt_lengths, label_positions):
        """BCE of the step logits of the labelled steps; a step's tokens are
        :func:`~prmfactory.prm.encoding.step_spans` of all its row's steps (``label_positions``,
        padded with −1), so training on the last step only pools that step alone, as scoring does."""
        logits, targets = [], []
        for row, start in enumerate(prompt_lengths.tolist()):
            positions = [p for p in label_positions[row].tolist() if p >= 0]
            labelled = [(span, p) for span, p in zip(step_spans(start, positions), positions)
                        if labels[row, p] != IGNORE_INDEX]
            if labelled:
                logits.append(step_logits(margins[row], [span for span, _ in labelled]))
                targets.append(labels[row, [p for _, p in labelled]].float())
        return nn.functional.binary_cross_entropy_with_logits(torch.cat(logits), torch.cat(targets))

    def read(self, margins: torch.Tensor, item: "EncodedSolution") -> list[float]:
        """P(step is correct) for each kept step of one encoded solution."""
        return torch.sigmoid(step_logits(margins.float(), item.step_spans)).tolist()
