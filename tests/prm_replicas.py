"""Tiny random-weight replicas of public PRMs, built locally (the real weights cannot be downloaded here).

Each has the upstream architecture class, the upstream special tokens and a chat template shaped like
the upstream one, so the scorers meet the same separator handling:

* Qwen2.5-Math-PRM: a Qwen2 decoder with the process-reward head, ``config.json`` naming
  ``Qwen2ForProcessRewardModel`` (as the Hub checkpoint does), ``<extra_0>`` and ``<|im_start|>`` tokens;
* Math-Shepherd: MistralForCausalLM with ``ки`` as one token;
* RLHFlow: LlamaForCausalLM with Llama-3's header tokens and turn layout.
"""

from __future__ import annotations

import json
from pathlib import Path

TEXTS = [f"Step {i}: {i} + {i * 3 % 17} = {i + i * 3 % 17}. The answer is \\boxed{{{i}}}. + - ки\n\n"
         for i in range(300)]
QWEN_TEMPLATE = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
                 "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
LLAMA3_TEMPLATE = ("{{ '<|begin_of_text|>' }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + "
                   "'<|end_header_id|>\n\n' + m['content'] + '<|eot_id|>' }}{% endfor %}"
                   "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
SIZES = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
             max_position_embeddings=1024)


def _tokenizer(special: list[str], template: str | None, plain: list[str] = ()):
    from tokenizers import AddedToken

    from prmfactory.toy.build import train_tokenizer

    tokenizer = train_tokenizer(TEXTS, vocab_size=320)
    tokenizer.add_special_tokens({"additional_special_tokens": special})
    tokenizer.add_tokens([AddedToken(t, normalized=False) for t in plain])
    tokenizer.chat_template = template
    return tokenizer


def _save(model, tokenizer, path: Path, architecture: str | None = None) -> Path:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    if architecture:  # save_pretrained names the class that saved it; the Hub checkpoint names its own
        config = json.loads((path / "config.json").read_text())
        config["architectures"] = [architecture]
        (path / "config.json").write_text(json.dumps(config))
    return path


def qwen_math_prm(path: Path) -> Path:
    import torch
    from transformers import Qwen2Config

    from prmfactory.prm.qwen2 import Qwen2ProcessRewardModel

    torch.manual_seed(0)
    tokenizer = _tokenizer(["<|im_start|>", "<|im_end|>", "<extra_0>"], QWEN_TEMPLATE)
    config = Qwen2Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **SIZES)
    return _save(Qwen2ProcessRewardModel(config), tokenizer, path, "Qwen2ForProcessRewardModel")


def math_shepherd(path: Path) -> Path:
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    tokenizer = _tokenizer([], None, plain=["ки"])
    config = MistralConfig(vocab_size=len(tokenizer), head_dim=64, bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id, **SIZES)
    return _save(MistralForCausalLM(config), tokenizer, path)


def rlhflow(path: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = _tokenizer(["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
                           LLAMA3_TEMPLATE)
    config = LlamaConfig(vocab_size=len(tokenizer), head_dim=64, **SIZES)
    return _save(LlamaForCausalLM(config), tokenizer, path)


REPLICAS = {"qwen2.5-math-prm": qwen_math_prm, "math-shepherd": math_shepherd, "rlhflow": rlhflow}
