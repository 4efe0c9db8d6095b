"""Qwen3: the Llama decoder with per-head RMSNorm on q and k before rotary (`q_norm`, `k_norm`)."""

from __future__ import annotations

from splitserve.model.config import ModelConfig
from splitserve.model.llama import LlamaForCausalLM


class Qwen3ForCausalLM(LlamaForCausalLM):
    def __init__(self, config: ModelConfig) -> None:
        if not config.qk_norm:
            raise ValueError("Qwen3 config must enable q/k norm")
        super().__init__(config)
