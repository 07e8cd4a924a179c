
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


def test_engine_options_reach_vllm_and_unknown_ones_are_errors():
    from prmfactory.config import EngineConfig
    from prmfactory.engines.vllm import vllm_engine_kwargs

    gpu = EngineConfig(tensor_parallel_size=4, gpu_memory_utilization=0.85,
                       engine_args={"quantization": "fp8", "pipeline_parallel_size": 2})
    args = vllm_engine_kwargs(gpu.backend_options(), seed=3)
    assert (args["tensor_parallel_size"], args["gpu_memory_utilization"]) == (4, 0.85)
    assert "kv_cache_memory_bytes" not in args
    assert (args["quantization"], args["pipeline_parallel_size"], args["seed"]) == ("fp8", 2, 3)
    cpu = vllm_engine_kwargs(EngineConfig(kv_cache_gib=0.5).backend_options(), seed=0)
    assert cpu["kv_cache_memory_bytes"] == 2**29 and cpu["tensor_parallel_size"] == 1
    with pytest.raises(UsageError, match=r"engine.engine_args.quantisation: not a vLLM engine argument "
                                         r"\(did you mean 'quantization'\?\)"):
        vllm_engine_kwargs(EngineConfig(engine_args={"quantisation": "fp8"}).backend_options(), seed=0)
    with pytest.raises(UsageError, match=r"engine_args.dtype: prmfactory sets this argument itself \(from engine.dtype"):
        vllm_engine_kwargs(EngineConfig(engine_args={"dtype": "half"}).backend_options(), seed=0)
    with pytest.raises(ValueError, match="either kv_cache_gib .* or gpu_memory_utilization"):
        EngineConfig(kv_cache_gib=2.0, gpu_memory_utilization=0.9)


def test_an_engine_option_of_the_other_backend_is_named_not_silently_dropped(caplog):
    from prmfactory.config import EngineConfig
    from prmfactory.engines.openai import OpenAIEngine
    from prmfactory.engines.vllm import VllmEngine

    config = EngineConfig(backend="openai", base_url="http://x/v1", kv_cache_gib=4.0, tensor_parallel_size=2)
    assert set(config.backend_options()) == {"base_url", "api_key_env", "max_concurrency", "max_retries",
                                             "request_timeout_s"}
    assert "engine options kv_cache_gib, tensor_parallel_size have no effect with backend openai" in caplog.text
    with pytest.raises(TypeError):
        VllmEngine("m", kv_cache_gb=1.0)  # a misspelt option is no longer swallowed
    with pytest.raises(TypeError):
        OpenAIEngine("m", base_url="http://x/v1", kv_cache_gib=1.0)


def test_a_misspelt_engine_argument_on_the_command_line_is_one_line_before_anything_is_written(tmp_path):
    from tests.cli.test_bad_input import assert_one_line_error, invoke

    problems = tmp_path / "p.jsonl"
    problems.write_text('{"id": "a", "problem": "1+1?", "answer": "2"}\n')
    result = invoke("mcts", "--input", problems, "--output", tmp_path / "run", "--policy", "toy",
                    "--set", "engine.engine_args.max_num_batched_token=4096")
    assert_one_line_error(result, 2, "engine.engine_args.max_num_batched_token", "max_num_batched_tokens")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("address, message", [
    ("127.0.0.1:1", "no Ray cluster answers there"), ("ray://127.0.0.1:1", "no Ray cluster answers there"),
    ("not-an-address", "expected local, auto, HOST:PORT or ray://HOST:PORT")])
def test_an_unreachable_ray_address_is_one_line_within_seconds_and_writes_nothing(tmp_path, address, message):
    from tests.cli.test_bad_input import assert_one_line_error, invoke

    problems = tmp_path / "p.jsonl"
    problems.write_text('{"id": "a", "problem": "1+1?", "answer": "2"}\n')
    result = invoke("mcts", "--input", problems, "--output", tmp_path / "run", "--policy", "toy",
                    "--ray-address", address, "--workers", "2")
    assert_one_line_error(result, 2, f"--ray-address {address}", message)
    assert not (tmp_path / "run").exists()
