"""ModelConfig.from_hf: both rope layouts, the per-architecture switches, loud refusals."""

from __future__ import annotations

from typing import Any

import pytest

from splitserve.model import ModelConfig

LLAMA: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "vocab_size": 128256,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    "torch_dtype": "bfloat16",
}
LLAMA31_SCALING = {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


def test_released_llama31_layout_rope_theta_and_rope_scaling() -> None:
    config = ModelConfig.from_hf(
        {
            **LLAMA,
            "rope_theta": 500000.0,
            "rope_scaling": {"rope_type": "llama3", **LLAMA31_SCALING},
        }
    )
    assert (config.rope_type, config.rope_theta, config.rope_factor) == ("llama3", 500000.0, 8.0)
    assert config.rope_original_max_position == 8192
    assert (config.num_layers, config.num_kv_heads, config.head_dim) == (32, 8, 128)
    assert config.dtype == "bfloat16"
    assert not config.qkv_bias and not config.qk_norm


def test_transformers5_layout_rope_parameters() -> None:
    params = {"rope_theta": 500000.0, "rope_type": "llama3", **LLAMA31_SCALING}
    config = ModelConfig.from_hf({**LLAMA, "rope_parameters": params, "dtype": "float32"})
    assert (config.rope_type, config.rope_theta) == ("llama3", 500000.0)
    assert config.dtype == "float32"


def test_old_rope_scaling_type_key_and_linear() -> None:
    config = ModelConfig.from_hf(
        {**LLAMA, "rope_theta": 1e4, "rope_scaling": {"type": "linear", "factor": 2.0}}
    )
    assert (config.rope_type, config.rope_factor) == ("linear", 2.0)


def test_no_rope_scaling_is_default() -> None:
    config = ModelConfig.from_hf({**LLAMA, "rope_theta": 1e4, "rope_scaling": None})
    assert config.rope_type == "default"


def test_qwen2_has_qkv_bias_and_qwen3_qk_norm() -> None:
    qwen2 = ModelConfig.from_hf({**LLAMA, "architectures": ["Qwen2ForCausalLM"], "rope_theta": 1e6})
    assert qwen2.qkv_bias and not qwen2.o_proj_bias
    qwen3 = ModelConfig.from_hf(
        {**LLAMA, "architectures": ["Qwen3ForCausalLM"], "rope_theta": 1e6, "head_dim": 64}
    )
    assert qwen3.qk_norm and qwen3.head_dim == 64


def test_mistral_sliding_window() -> None:
    base = {**LLAMA, "architectures": ["MistralForCausalLM"], "rope_theta": 1e6}
    assert ModelConfig.from_hf({**base, "sliding_window": None}).sliding_window is None
    assert ModelConfig.from_hf({**base, "sliding_window": 4096}).sliding_window == 4096
    # A window covering the whole context masks nothing.
    assert ModelConfig.from_hf({**base, "sliding_window": 131072}).sliding_window is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"architectures": ["GPT2LMHeadModel"]}, "unsupported architecture 'GPT2LMHeadModel'"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "unsupported rope type 'yarn'"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "'low_freq_factor'"),
        ({"rope_theta": None}, "'rope_theta'"),
        ({"vocab_size": None}, "missing required config field 'vocab_size'"),
        ({"num_key_value_heads": 5}, "multiple of num_kv_heads"),
        ({"hidden_act": "gelu"}, "unsupported hidden_act 'gelu'"),
        ({"torch_dtype": "int8"}, "unsupported checkpoint dtype 'int8'"),
        (
            {"architectures": ["Qwen2ForCausalLM"], "use_sliding_window": True},
            "use_sliding_window",
        ),
        ({"architectures": ["Qwen3ForCausalLM"]}, "'head_dim'"),
    ],
)
def test_bad_config_raises_value_error_naming_it(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_hf({**LLAMA, "rope_theta": 1e4, **change})


def test_frozen_and_validated() -> None:
    config = ModelConfig.from_hf({**LLAMA, "rope_theta": 1e4})
    with pytest.raises(AttributeError):
        config.num_layers = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="unsupported dtype"):
        config.with_dtype("int4")
