"""Qwen2: the Llama decoder with biases on q/k/v (set by `ModelConfig.from_hf`)."""

from __future__ import annotations

from splitserve.model.config import ModelConfig
from splitserve.model.llama import LlamaForCausalLM


class Qwen2ForCausalLM(LlamaForCausalLM):
    def __init__(self, config: ModelConfig) -> None:
        if not config.qkv_bias or config.o_proj_bias:
            raise ValueError("Qwen2 config must have q/k/v bias and no o_proj bias")
        super().__init__(config)
