"""Shared stand-ins for the planner tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TINY_CONFIG = {
    "model_type": "llama",
    "hidden_size": 256,
    "intermediate_size": 688,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "vocab_size": 4096,
    "torch_dtype": "bfloat16",
}


class ConstantLatency:
    """A latency model whose every prefill step takes `prefill_s` and decode step `decode_s`."""

    def __init__(
        self,
        prefill_s: float,
        decode_s: float = 0.01,
        kv_capacity_tokens: int = 10**9,
        tensor_parallel: int = 1,
    ) -> None:
        self.prefill = prefill_s
        self.decode = decode_s
        self.tensor_parallel = tensor_parallel
        self.kv_capacity_tokens = kv_capacity_tokens
        self.kv_bytes_per_token = 1000
        self.num_layers = 10

    def step_s(
        self,
        num_prefill_tokens: int,
        prefill_attn_pairs: float,
        prefill_kv_tokens: int,
        num_decode_seqs: int,
        decode_ctx_tokens: int,
    ) -> float:
        if num_prefill_tokens:
            return self.prefill
        return self.decode if num_decode_seqs else 0.0


@pytest.fixture
def tiny_config_path(tmp_path: Path) -> Path:
    path = tmp_path / "tiny" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(TINY_CONFIG))
    return path
