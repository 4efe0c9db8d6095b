"""Tiny random `transformers` checkpoints for parity tests (also reused by engine tests).

`make_tiny_checkpoint(arch, out_dir, **overrides)` writes config.json + safetensors made by
`save_pretrained` from a seeded, randomly initialised HF model, float32. Variants:

    llama, mistral, mistral-window (sliding_window=16), qwen2, qwen3,
    llama3-rope (Llama-3.1 rope scaling), llama-tied (tied embeddings)

`overrides` update the HF config kwargs; `max_shard_size` (e.g. "100KB") writes a sharded
checkpoint with `model.safetensors.index.json`; `seed` picks the random weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

TINY_BASE: dict[str, Any] = {
    "vocab_size": 384,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-6,
    # Large init makes logits peaky, so greedy argmax is robust to float rounding.
    "initializer_range": 0.15,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "tie_word_embeddings": False,
}

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("LlamaForCausalLM", {}),
    "mistral": ("MistralForCausalLM", {"sliding_window": None}),
    "mistral-window": ("MistralForCausalLM", {"sliding_window": 16}),
    "qwen2": ("Qwen2ForCausalLM", {}),
    "qwen3": ("Qwen3ForCausalLM", {"head_dim": 32}),
    "llama3-rope": (
        "LlamaForCausalLM",
        {
            "rope_theta": 500000.0,
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        },
    ),
    "llama-tied": ("LlamaForCausalLM", {"tie_word_embeddings": True}),
}


def make_tiny_checkpoint(arch: str, out_dir: str | Path, **overrides: Any) -> Path:
    """Build, seed and save a tiny HF model of variant `arch` into `out_dir`; return the dir."""
    import transformers  # test-only dependency

    if arch not in VARIANTS:
        raise ValueError(f"unknown tiny variant {arch!r}; choose from {sorted(VARIANTS)}")
    class_name, variant = VARIANTS[arch]
    max_shard_size = overrides.pop("max_shard_size", None)
    seed = overrides.pop("seed", 0)
    kwargs = {**TINY_BASE, **variant, **overrides}
    config_class = getattr(transformers, class_name.replace("ForCausalLM", "Config"))
    config = config_class(**kwargs)
    config.architectures = [class_name]
    torch.manual_seed(seed)
    model = getattr(transformers, class_name)(config).to(torch.float32).eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_kwargs: dict[str, Any] = {"safe_serialization": True}
    if max_shard_size is not None:
        save_kwargs["max_shard_size"] = max_shard_size
    model.save_pretrained(out, **save_kwargs)
    return out


def load_hf(model_dir: str | Path) -> Any:
    """The reference `transformers` model for a checkpoint, float32, eval mode."""
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager"
    ).eval()
