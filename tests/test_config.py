
import pytest

from prmfactory.config import build_config
from prmfactory.search.config import MctsConfig
from prmfactory.errors import UsageError
from prmfactory.resources import resource_dir


@pytest.mark.parametrize("name", ["omegaprm", "math_shepherd", "toy"])
def test_shipped_pipelines_load(name):
    config = build_config(MctsConfig, "mcts", resource_dir("pipelines") / f"{name}.yaml", {})
    assert config.strategy == ("mc" if name == "math_shepherd" else "omegaprm")


def test_toy_pipeline_has_every_built_stage():
    from prmfactory.filter.config import FilterConfig
    from prmfactory.judge.config import JudgeConfig
    from prmfactory.verify.config import VerifyConfig

    path = resource_dir("pipelines") / "toy.yaml"
    assert build_config(JudgeConfig, "judge", path, {}).judge == "toy-judge"
    assert build_config(FilterConfig, "filter", path, {}).rule == "consensus"
    build_config(VerifyConfig, "verify", path, {})


def test_omegaprm_defaults_match_the_paper():
    config = MctsConfig(policy="p")
    assert (config.c_puct, config.alpha, config.beta, config.length_scale, config.rollouts, config.budget) == (
        0.125, 0.5, 0.9, 500, 16, 200)


def test_flags_override_yaml_and_nested_sections_merge(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("policy: a\nrollouts: 4\nengine: {dtype: float32, kv_cache_gib: 2}\n")
    config = build_config(MctsConfig, "mcts", path, {"rollouts": 8, "budget": None,
                                                     "engine": {"backend": "openai", "base_url": "http://x/v1"}})
    assert config.rollouts == 8 and config.budget == 200
    assert config.engine.dtype == "float32" and config.engine.kv_cache_gib == 2 and config.engine.backend == "openai"


def test_unknown_key_is_a_one_line_error_naming_file_and_field(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("policy: a\nrolouts: 4\n")
    with pytest.raises(UsageError, match=r"c.yaml: field 'rolouts': Extra inputs are not permitted"):
        build_config(MctsConfig, "mcts", path, {})


def test_missing_stage_in_pipeline_file(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("stages:\n  - stage: judge\n    config: {}\n")
    with pytest.raises(UsageError, match="no stage 'mcts'"):
        build_config(MctsConfig, "mcts", path, {})


def test_runtime_fields_do_not_affect_outputs():
    a = MctsConfig(policy="p", concurrency=1, quiet=True)
    b = MctsConfig(policy="p", concurrency=64)
    assert a.output_affecting() == b.output_affecting()
    assert MctsConfig(policy="p", rollouts=3).output_affecting() != b.output_affecting()


@pytest.mark.parametrize("name", ["omegaprm", "math_shepherd", "toy", "demo", "qwen_consensus", "grounded_hybrid"])
def test_every_shipped_pipeline_validates_and_cites_its_source(name):
    from prmfactory.pipeline import load_pipeline

    path = resource_dir("pipelines") / f"{name}.yaml"
    stages = load_pipeline(path)
    assert stages[0][0] == "mcts"
    assert "arXiv:" in path.read_text().split("stages:")[0]
