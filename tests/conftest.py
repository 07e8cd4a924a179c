"""Shared fixtures: a run folder factory and helpers for writing input files."""

from __future__ import annotations

import contextlib
import json
import os
import random
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prmfactory.toy.critique import corrupt
from prmfactory.toy.oracle import first_error
from prmfactory.toy.problems import generate

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def write_lines(tmp_path):
    """Write raw bytes lines to a file and return its path."""

    def _write(content: bytes | str, name: str = "input.jsonl") -> Path:
        path = tmp_path / name
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return path

    return _write


TINY_TEXTS = [f"Step {i}: {i} + {i * 3 % 17} = {i + i * 3 % 17}. The answer is \\boxed{{{i}}}.\n\n" for i in range(400)]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random-weight Llama (2 layers, head_dim 64) with a BPE tokenizer trained on the fly and a chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from prmfactory.toy.build import train_tokenizer

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = train_tokenizer(TINY_TEXTS, vocab_size=300)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, head_dim=64, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


class LoopThread:
    """An event loop in a background thread, so one async engine can serve many tests."""

    def __init__(self):
        import asyncio
        import threading

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine, timeout=600):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="session")
def vllm_engine(tiny_model_dir):
    """One in-process vLLM engine over the tiny model for the whole test session."""
    from prmfactory.engines.vllm import VllmEngine

    loop = LoopThread()

    async def start():
        return VllmEngine(str(tiny_model_dir), seed=0, dtype="float32", max_model_len=512, kv_cache_gib=0.25,
                          block_size=32)

    engine = loop.run(start())
    yield engine, loop
    loop.run(engine.close())
    loop.stop()


def stepwise_rows(n: int, seed: int = 0) -> list[dict]:
    """Toy solutions with one injected error (or none), labelled by the oracle; MC-like soft labels."""
    rng = random.Random(seed)
    rows = []
    for problem in generate(n, "train", seed):
        _, steps = corrupt(problem, rng)
        error = first_error(problem, steps)
        labels = [error == -1 or i < error for i in range(len(steps))]
        rows.append({"prompt": problem.text, "completions": steps, "labels": labels,
                     "soft_labels": [0.9 if label else 0.1 for label in labels]})
    return rows


@pytest.fixture(scope="session")
def shards(tmp_path_factory):
    """Stepwise training rows (TRL format with soft labels) as one Parquet shard."""
    path = tmp_path_factory.mktemp("stepwise") / "part-00000.parquet"
    pq.write_table(pa.Table.from_pylist(stepwise_rows(96)), path)
    return path


@pytest.fixture(scope="session")
def discriminative_prm(shards, tmp_path_factory):
    """A discriminative PRM trained for 40 steps on the toy policy: (folder, training report)."""
    from prmfactory.stages import StageInput, execute
    from prmfactory.store import Run
    from prmfactory.train.config import TrainPrmConfig

    output = tmp_path_factory.mktemp("prm-hard")
    config = TrainPrmConfig(max_steps=40, learning_rate=1e-3, batch_size=16, threads=1, quiet=True)
    return output, execute("train-prm", Run(output), config, source=StageInput(shards))




def write_numbered_problems(path: Path, count: int, text: str = "Problem q{i}?") -> Path:
    """Scripted-domain problems ``q0`` … (answer 42) as an mcts input file."""
    path.write_text("".join(json.dumps({"id": f"q{i}", "problem": text.format(i=i), "answer": "42"}) + "\n"
                            for i in range(count)))
    return path


@pytest.fixture
def numbered_problems(tmp_path):
    """Ten problems ``q0`` … ``q9`` ("Problem q3?")."""
    return write_numbered_problems(tmp_path / "problems.jsonl", 10)


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """A FastAPI app under a real uvicorn server on a free 127.0.0.1 port, in a thread; yields its URL.

    For clients that need a socket (aiohttp, disconnecting httpx clients) without a second process."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
