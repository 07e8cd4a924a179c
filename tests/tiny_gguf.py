"""Write a tiny random Llama as a GGUF file with the `gguf` package, for the conversion tests.

A byte-level BPE vocabulary (the 256 byte symbols, two merges and ChatML's control tokens), two
layers, head_dim 64 (vLLM's CPU kernels need ≥ 64), f32 and Q8_0 tensors, a chat template.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _byte_symbols() -> list[str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return list(bytes_to_unicode().values())


def write_tiny_llama_gguf(path: Path, *, architecture: str = "llama", seed: int = 0) -> Path:
    import gguf

    rng = np.random.default_rng(seed)
    hidden, layers, heads, ffn = 64, 2, 1, 128
    tokens = _byte_symbols() + ["Ġt", "he", "<|im_start|>", "<|im_end|>", "<|endoftext|>"]
    token_types = [1] * (len(tokens) - 3) + [3, 3, 3]
    vocab = len(tokens)

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("tiny-llama-test")
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    writer.add_token_merges(["Ġ t", "h e"])
    writer.add_bos_token_id(vocab - 3)
    writer.add_eos_token_id(vocab - 2)
    writer.add_pad_token_id(vocab - 2)
    writer.add_chat_template(CHAT_TEMPLATE)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    def quantized(name: str, array: np.ndarray) -> None:
        data = gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    writer.add_tensor("token_embd.weight", weight(vocab, hidden))
    writer.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    for block in range(layers):
        prefix = f"blk.{block}"
        writer.add_tensor(f"{prefix}.attn_norm.weight", np.ones(hidden, dtype=np.float32))
        writer.add_tensor(f"{prefix}.ffn_norm.weight", np.ones(hidden, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            quantized(f"{prefix}.{name}.weight", weight(hidden, hidden))
        quantized(f"{prefix}.ffn_gate.weight", weight(ffn, hidden))
        quantized(f"{prefix}.ffn_up.weight", weight(ffn, hidden))
        quantized(f"{prefix}.ffn_down.weight", weight(hidden, ffn))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
