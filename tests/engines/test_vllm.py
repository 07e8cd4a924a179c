"""The in-process vLLM engine on the CPU with a tiny random-weight model (one engine per session)."""

import pytest

from prmfactory.engines.base import Message, Prompt, SamplingSpec

pytestmark = pytest.mark.slow

PROMPT = Prompt((Message("system", "Reason step by step."), Message("user", "What is 2 + 3? " * 12)))


def test_n_samples_per_prompt(vllm_engine):
    engine, loop = vllm_engine
    completions = loop.run(engine.generate(PROMPT, SamplingSpec(n=4, temperature=1.0, max_tokens=16)))
    assert len(completions) == 4
    assert all(0 < c.num_tokens <= 16 for c in completions)
    assert len({c.text for c in completions}) > 1


def test_prefix_continues_after_the_chat_template(vllm_engine):
    engine, _ = vllm_engine
    with_prefix = engine.prompt_ids(Prompt(PROMPT.messages, "Step 1: 2 + 3 = 5.\n\n"))
    without = engine.prompt_ids(PROMPT)
    assert with_prefix[: len(without)] == without and len(with_prefix) > len(without)
    text = engine.tokenizer.decode(without)
    assert text.startswith("<s>") and text.endswith("<|assistant|>\n")
    assert "Reason step by step." not in text  # the tiny model's template ignores system messages


def test_stop_strings_end_the_text(vllm_engine):
    engine, loop = vllm_engine
    completions = loop.run(engine.generate(PROMPT, SamplingSpec(n=8, temperature=1.0, max_tokens=64, stop=(" ",))))
    for c in completions:
        assert c.finish_reason in ("stop", "length")
        if c.finish_reason == "stop" and c.text.endswith(" "):
            assert c.text.count(" ") == 1


def test_prefix_cache_hits_and_metrics(vllm_engine):
    engine, loop = vllm_engine

    async def many():
        import asyncio

        return await asyncio.gather(*(engine.generate(PROMPT, SamplingSpec(n=2, max_tokens=8)) for _ in range(8)))

    loop.run(many())
    metrics = engine.metrics()
    assert metrics["prefix_cache_hit_rate"] > 0.3
    assert metrics["generated_tokens"] > 0 and 0 < metrics["busy_fraction"] <= 1


def test_prompt_longer_than_context_is_an_error(vllm_engine):
    from prmfactory.errors import PrmfactoryError

    engine, loop = vllm_engine
    with pytest.raises(PrmfactoryError, match="no room"):
        loop.run(engine.generate(Prompt((Message("user", "1 + 1 " * 400),)), SamplingSpec(max_tokens=4)))
