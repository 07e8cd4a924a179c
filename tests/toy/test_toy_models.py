"""The committed toy models: their aliases and sizes, and the policy's step format in transformers.

Through vLLM on the CPU they are exercised where the product uses them, so no engine starts twice:
the policy by ``test_pipeline.py::test_toy_pipeline_end_to_end_and_resume`` (mcts with ``--policy toy``)
and the judge by ``test_judge.py::test_judge_command_with_the_toy_judge_on_vllm``.
"""

import pytest

from prmfactory.models import TOY_MODELS, resolve_model
from prmfactory.toy.problems import generate

pytestmark = pytest.mark.slow


def test_aliases_resolve_to_committed_models():
    for name, path in TOY_MODELS.items():
        assert resolve_model(name) == str(path)
        assert (path / "model.safetensors").stat().st_size < 5 * 2**20
        assert (path / "tokenizer.json").exists()
    assert resolve_model("Qwen/Qwen2.5-Math-7B-Instruct") == "Qwen/Qwen2.5-Math-7B-Instruct"


def test_policy_writes_solutions_in_step_format_with_transformers():
    from prmfactory.toy.build import sample_solutions

    problems = generate(8, "test", 11)
    solutions = sample_solutions(TOY_MODELS["toy"], problems, temperature=0.0, seed=0)
    assert all(len(steps) >= 2 for steps in solutions)
    assert sum("\\boxed{" in steps[-1] for steps in solutions) >= 6
