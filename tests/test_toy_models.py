"""The committed toy policy and judge load and generate in transformers and in vLLM on the CPU."""

import asyncio

import pytest

from prmfactory.engines.base import Message, Prompt, SamplingSpec, chat_messages
from prmfactory.toy import MODEL_ALIASES, resolve_model
from prmfactory.toy.critique import judge_prompt
from prmfactory.toy.problems import generate

pytestmark = pytest.mark.slow


def test_aliases_resolve_to_committed_models():
    for name, path in MODEL_ALIASES.items():
        assert resolve_model(name) == str(path)
        assert (path / "model.safetensors").stat().st_size < 5 * 2**20
        assert (path / "tokenizer.json").exists()
    assert resolve_model("Qwen/Qwen2.5-Math-7B-Instruct") == "Qwen/Qwen2.5-Math-7B-Instruct"


def test_policy_writes_solutions_in_step_format_with_transformers():
    from prmfactory.toy.build import sample_solutions

    problems = generate(8, "test", 11)
    solutions = sample_solutions(MODEL_ALIASES["toy"], problems, temperature=0.0, seed=0)
    assert all(len(steps) >= 2 for steps in solutions)
    assert sum("\\boxed{" in steps[-1] for steps in solutions) >= 6


@pytest.mark.parametrize("name", ["toy", "toy-judge"])
def test_model_generates_through_vllm(name):
    from prmfactory.engines.vllm import VllmEngine

    problem = generate(1, "test", 12)[0]
    if name == "toy":
        prompt = Prompt(chat_messages(problem.text, "ignored by the toy template"))
    else:
        prompt = Prompt((Message("user", judge_prompt(problem.text, problem.reference_steps)),))

    async def go():
        engine = VllmEngine(resolve_model(name), seed=0, dtype="float32", max_model_len=512, kv_cache_gib=0.25,
                            block_size=32)
        try:
            return await engine.generate(prompt, SamplingSpec(n=2, temperature=0.0, max_tokens=256))
        finally:
            await engine.close()

    completions = asyncio.run(go())
    assert len(completions) == 2 and all(c.finish_reason == "stop" for c in completions)
    assert "\\boxed{" in completions[0].text
