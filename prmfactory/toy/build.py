"""Recipe for the toy policy and judge: tokenizer, tiny Llama models, training on the CPU.

The committed artefacts in ``prmfactory/toy/models/`` are what this recipe produces with the
config in ``pipelines/toy_build.yaml``; ``prmfactory toy build --retrain`` reproduces them
(same seed, same machine and library versions -> same weights: fixed step counts, seeded data
order, one torch thread).

* **Tokenizer**: byte-level BPE trained on the domain, digits split one per token (arithmetic
  is learnt digit by digit), about 480 entries, with a chat template. The template renders
  user and assistant turns only; a system message is ignored because the toy models never saw
  one.
* **Policy**: LlamaForCausalLM (hidden 128, 4 layers, 2 heads of 64 — vLLM's CPU attention needs
  head_dim >= 64), trained on reference solutions with the loss on the solution only.
* **Base** (``toy-base``, the PRM's starting point): the policy trained further on new reference
  solutions. The committed policy is kept weak on purpose (it adds two numbers right about one
  time in five), and a PRM fine-tuned from it cannot check the sums its base cannot do; real PRMs
  likewise start from a stronger math model than the policies they grade.
* **Judge**: the policy's weights fine-tuned on critiques (problem + numbered steps -> one line
  per step that recomputes its equation, then ``\\boxed{k}`` with the first wrong step, −1 if
  none), on corrupted references and on the policy's own samples labelled by the oracle.
"""

from __future__ import annotations

import functools
import json
import random
import time
from pathlib import Path
from typing import Any, Sequence

from pydantic import Field

from prmfactory.config import StageConfig
from prmfactory.toy import critique
from prmfactory.toy.oracle import first_error
from prmfactory.toy.problems import ToyProblem, generate

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}<|user|>\n{{ message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}<|assistant|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
MODELS = ("policy", "judge", "base")  # the folders of models_dir, in build order
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>"]


class ToyBuildConfig(StageConfig):
    """Hyperparameters of the toy models (defaults from the feasibility runs in shared/notes)."""

    seed: int = Field(0, description="Seeds problems, initialisation and data order.")
    vocab_size: int = Field(480, description="BPE vocabulary size including special tokens.")
    hidden_size: int = Field(128, description="Model width.")
    num_layers: int = Field(4, description="Transformer layers.")
    num_heads: int = Field(2, description="Attention heads (head_dim = hidden_size / num_heads >= 64).")
    intermediate_size: int = Field(384, description="MLP width.")
    max_length: int = Field(512, description="Context length of the models.")
    policy_problems: int = Field(30000, description="Training problems for the policy.")
    policy_steps: int = Field(3000, description="Optimizer steps for the policy.")
    policy_lr: float = Field(3e-3, description="Peak learning rate (cosine schedule).")
    batch_size: int = Field(16, description="Sequences per step.")
    base_problems: int = Field(30000, description="New training problems for the PRM base (another seed than the policy's).")
    base_steps: int = Field(1500, description="Optimizer steps that continue the policy's training into the PRM base.")
    base_lr: float = Field(1e-3, description="Peak learning rate of the PRM base (cosine schedule).")
    judge_corrupted: int = Field(6000, description="Critique examples made by corrupting references.")
    judge_policy_samples: int = Field(2000, description="Critique examples from the policy's own samples.")
    judge_sample_temperature: float = Field(1.0, description="Temperature of those samples.")
    judge_steps: int = Field(500, description="Optimizer steps for the judge.")
    judge_lr: float = Field(1e-3, description="Peak learning rate of the judge.")
    threads: int = Field(1, description="torch threads (one per job is fastest on 2 shared cores).")


def train_tokenizer(texts: Sequence[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>",
                                      unk_token="<unk>", pad_token="<pad>",
                                      additional_special_tokens=["<|user|>", "<|assistant|>"])
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def _chat_example(tokenizer, prompt: str, response: str, max_length: int) -> dict[str, list[int]]:
    """Token ids of one chat turn with labels on the response (and its EOS) only."""
    prompt_ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=True,
                                               add_generation_prompt=True, return_dict=False)
    response_ids = tokenizer.encode(response, add_special_tokens=False) + [tokenizer.eos_token_id]
    ids = (list(prompt_ids) + response_ids)[:max_length]
    labels = ([-100] * len(prompt_ids) + response_ids)[:max_length]
    return {"input_ids": ids, "labels": labels}


def _train(model, examples: list[dict[str, list[int]]], *, steps: int, lr: float, batch_size: int, seed: int,
           output: Path, pad_id: int, label: str) -> dict[str, Any]:
    """Fine-tune ``model`` on ``examples`` with transformers' Trainer for a fixed number of steps."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(output / f".trainer-{label}"), max_steps=steps, per_device_train_batch_size=batch_size,
        learning_rate=lr, lr_scheduler_type="cosine", warmup_steps=min(50, steps // 10), weight_decay=0.01,
        logging_steps=50, save_strategy="no", report_to=[], use_cpu=True, seed=seed, data_seed=seed,
        dataloader_num_workers=0,
    )
    collator = functools.partial(_pad_batch, pad_id=pad_id)
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(examples), data_collator=collator)
    started = time.time()
    result = trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"steps": steps, "seconds": round(time.time() - started, 1), "train_loss": round(result.training_loss, 4),
            "first_logged_loss": losses[0] if losses else None, "last_logged_loss": losses[-1] if losses else None}


def _pad_batch(features: list[dict[str, list[int]]], pad_id: int) -> dict[str, Any]:
    """Right-pad ids with ``pad_id`` and labels with -100."""
    import torch

    width = max(len(f["input_ids"]) for f in features)
    pads = [width - len(f["input_ids"]) for f in features]
    return {
        "input_ids": torch.tensor([f["input_ids"] + [pad_id] * n for f, n in zip(features, pads)]),
        "attention_mask": torch.tensor([[1] * len(f["input_ids"]) + [0] * n for f, n in zip(features, pads)]),
        "labels": torch.tensor([f["labels"] + [-100] * n for f, n in zip(features, pads)]),
    }


def build_policy(config: ToyBuildConfig, output: Path) -> dict[str, Any]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(config.seed)
    problems = generate(config.policy_problems, "train", config.seed)
    solutions = ["\n\n".join(p.reference_steps) for p in problems]
    tokenizer = train_tokenizer([p.text for p in problems] + solutions + ["<|user|>\n", "<|assistant|>\n"],
                                config.vocab_size)
    model_config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads, head_dim=config.hidden_size // config.num_heads,
        max_position_embeddings=config.max_length, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(model_config)
    examples = [_chat_example(tokenizer, p.text, s, config.max_length) for p, s in zip(problems, solutions)]
    stats = _train(model, examples, steps=config.policy_steps, lr=config.policy_lr, batch_size=config.batch_size,
                   seed=config.seed, output=output, pad_id=tokenizer.pad_token_id, label="policy")
    model.generation_config.do_sample = True
    model.generation_config.temperature = 0.8
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    return {"parameters": sum(p.numel() for p in model.parameters()), **stats}


def build_base(config: ToyBuildConfig, policy_dir: Path, output: Path) -> dict[str, Any]:
    """The PRM base: the policy's training continued on new problems, until it can do the arithmetic."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    problems = generate(config.base_problems, "train", config.seed + 3)
    examples = [_chat_example(tokenizer, p.text, "\n\n".join(p.reference_steps), config.max_length) for p in problems]
    model = AutoModelForCausalLM.from_pretrained(policy_dir)
    stats = _train(model, examples, steps=config.base_steps, lr=config.base_lr, batch_size=config.batch_size,
                   seed=config.seed, output=output, pad_id=tokenizer.pad_token_id, label="base")
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    return {"examples": len(examples), **stats}


def sample_texts(model, tokenizer, problems: Sequence[ToyProblem], *, max_new_tokens: int, batch_size: int = 64,
                 **sampling: Any) -> list[tuple[str, int]]:
    """Each problem's sampled solution text and its length in tokens (end-of-sequence included), from a
    policy in memory: batched, left-padded ``generate`` on the chat-templated problems; ``sampling``
    goes to ``generate`` as it is (``do_sample``, ``temperature``, ...)."""
    import torch

    tokenizer.padding_side = "left"
    results: list[tuple[str, int]] = []
    for start in range(0, len(problems), batch_size):
        chunk = problems[start:start + batch_size]
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p.text}], tokenize=False,
                                                 add_generation_prompt=True) for p in chunk]
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                 **sampling)
        for row in out[:, batch["input_ids"].shape[1]:]:
            results.append((tokenizer.decode(row, skip_special_tokens=True), int((row != tokenizer.pad_token_id).sum())))
    return results


def sample_solutions(model_dir: Path, problems: list[ToyProblem], *, temperature: float, seed: int,
                     max_new_tokens: int = 200, batch_size: int = 64) -> list[list[str]]:
    """The policy's solutions (as steps), sampled with transformers' generate."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    texts = sample_texts(model, tokenizer, problems, max_new_tokens=max_new_tokens, batch_size=batch_size,
                         do_sample=temperature > 0, temperature=temperature or None)
    return [[s.strip() for s in text.split("\n\n") if s.strip()] for text, _ in texts]


def build_judge(config: ToyBuildConfig, policy_dir: Path, output: Path) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(config.seed)
    rng = random.Random(f"toy-judge:{config.seed}")
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    corrupted = generate(config.judge_corrupted, "train", config.seed + 1)
    cases = [critique.corrupt(p, rng) for p in corrupted]
    sampled = generate(config.judge_policy_samples, "train", config.seed + 2)
    for problem, steps in zip(sampled, sample_solutions(policy_dir, sampled,
                                                        temperature=config.judge_sample_temperature,
                                                        seed=config.seed)):
        if steps:
            cases.append((problem, steps))
    rng.shuffle(cases)
    examples = [_chat_example(tokenizer, critique.judge_prompt(p.text, steps),
                              critique.critique(p, steps), config.max_length) for p, steps in cases]
    model = AutoModelForCausalLM.from_pretrained(policy_dir)
    stats = _train(model, examples, steps=config.judge_steps, lr=config.judge_lr, batch_size=config.batch_size,
                   seed=config.seed, output=output, pad_id=tokenizer.pad_token_id, label="judge")
    model.generation_config.do_sample = True
    model.generation_config.temperature = 0.8
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    labels = [first_error(p, s) for p, s in cases]
    return {"examples": len(examples), "no_error_share": round(labels.count(-1) / len(labels), 3), **stats}


def build(config: ToyBuildConfig, models_dir: Path) -> dict[str, Any]:
    """Train the policy, then the judge and the PRM base from it; write all three and a build report."""
    import shutil

    import torch

    torch.set_num_threads(config.threads)
    report: dict[str, Any] = {"config": config.model_dump()}
    for name in MODELS:
        shutil.rmtree(models_dir / name, ignore_errors=True)
    report["policy"] = build_policy(config, models_dir / "policy")
    report["judge"] = build_judge(config, models_dir / "policy", models_dir / "judge")
    report["base"] = build_base(config, models_dir / "policy", models_dir / "base")
    for name in MODELS:
        shutil.rmtree(models_dir / name / f".trainer-{name}", ignore_errors=True)
    (models_dir / "build_report.json").write_text(json.dumps(report, indent=1))
    return report
