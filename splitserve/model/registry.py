"""Architecture name (config.json `architectures[0]`) -> model class."""

from __future__ import annotations

from splitserve.model.config import ModelConfig
from splitserve.model.llama import LlamaForCausalLM, MistralForCausalLM
from splitserve.model.qwen2 import Qwen2ForCausalLM
from splitserve.model.qwen3 import Qwen3ForCausalLM

MODEL_REGISTRY: dict[str, type[LlamaForCausalLM]] = {
    "LlamaForCausalLM": LlamaForCausalLM,
    "MistralForCausalLM": MistralForCausalLM,
    "Qwen2ForCausalLM": Qwen2ForCausalLM,
    "Qwen3ForCausalLM": Qwen3ForCausalLM,
}


def model_class(config: ModelConfig) -> type[LlamaForCausalLM]:
    try:
        return MODEL_REGISTRY[config.architecture]
    except KeyError:
        raise ValueError(f"unsupported architecture {config.architecture!r}") from None
