"""The few numbers of a transformer the cost model needs, read from an HF `config.json`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_DTYPE_BYTES = {
    "bfloat16": 2,
    "float16": 2,
    "float32": 4,
    "float8_e4m3fn": 1,
    "fp8": 1,
}

# HF key -> accepted spellings, in order of preference (OPT/GPT-style names as fallbacks).
_ALIASES: dict[str, tuple[str, ...]] = {
    "hidden_size": ("hidden_size", "n_embd", "d_model"),
    "num_hidden_layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "num_attention_heads": ("num_attention_heads", "n_head"),
    "intermediate_size": ("intermediate_size", "ffn_dim", "n_inner"),
    "vocab_size": ("vocab_size",),
}


@dataclass(frozen=True)
class ModelSpec:
    """Shape of a decoder-only transformer (whole model, before tensor parallelism)."""

    name: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    dtype: str = "bfloat16"
    gated_mlp: bool = True
    tie_word_embeddings: bool = False

    def __post_init__(self) -> None:
        for name in (
            "hidden_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
            "intermediate_size",
            "vocab_size",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(
                    f"model {self.name!r}: {name} must be a positive int, got {value!r}"
                )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"model {self.name!r}: num_heads {self.num_heads} is not a multiple of "
                f"num_kv_heads {self.num_kv_heads}"
            )
        if self.dtype not in _DTYPE_BYTES:
            raise ValueError(f"model {self.name!r}: unsupported dtype {self.dtype!r}")

    @property
    def dtype_bytes(self) -> int:
        return _DTYPE_BYTES[self.dtype]

    @property
    def num_params(self) -> int:
        """Weights, counting the embedding and (unless tied) the LM head."""
        q_out = self.num_heads * self.head_dim
        kv_out = self.num_kv_heads * self.head_dim
        attn = self.hidden_size * (q_out + 2 * kv_out) + q_out * self.hidden_size
        mlp = (3 if self.gated_mlp else 2) * self.hidden_size * self.intermediate_size
        per_layer = attn + mlp + 2 * self.hidden_size  # + the two norms
        embed = self.vocab_size * self.hidden_size
        head = 0 if self.tie_word_embeddings else embed
        return self.num_layers * per_layer + embed + head

    @property
    def num_matmul_params(self) -> int:
        """Weights a token multiplies by (the embedding lookup is not a matmul)."""
        return self.num_params - self.vocab_size * self.hidden_size * (
            0 if self.tie_word_embeddings else 1
        )

    @property
    def weight_bytes(self) -> int:
        return self.num_params * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V of one token over all layers."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.dtype_bytes

    @classmethod
    def from_hf_config(cls, config: dict[str, Any], name: str = "model") -> ModelSpec:
        """Build from a parsed HF config; ValueError naming the first missing field."""
        if not isinstance(config, dict):
            raise ValueError(f"{name}: config must be a JSON object")
        values: dict[str, int] = {}
        for key, spellings in _ALIASES.items():
            found = next((config[s] for s in spellings if s in config), None)
            if found is None:
                raise ValueError(f"{name}: config.json is missing {key!r} (tried {spellings})")
            values[key] = found
        num_heads = values["num_attention_heads"]
        num_kv_heads = config.get("num_key_value_heads") or num_heads
        head_dim = config.get("head_dim") or values["hidden_size"] // num_heads
        dtype = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")
        # OPT/GPT-2 use a plain two-matrix MLP; Llama/Mistral/Qwen use gate+up+down.
        gated = "ffn_dim" not in config and "n_inner" not in config
        return cls(
            name=str(config.get("_name_or_path") or name),
            hidden_size=values["hidden_size"],
            num_layers=values["num_hidden_layers"],
            num_heads=num_heads,
            num_kv_heads=num_kv_heads,
            head_dim=head_dim,
            intermediate_size=values["intermediate_size"],
            vocab_size=values["vocab_size"],
            dtype=dtype,
            gated_mlp=gated,
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        )


BUNDLED_CONFIGS_DIR = Path(__file__).parent / "configs"


def load_model_spec(path: str | Path) -> ModelSpec:
    """Read `config.json` (a file, a checkpoint folder, or a bundled name like `llama-3-70b`)."""
    candidate = Path(path)
    if not candidate.exists():
        bundled = BUNDLED_CONFIGS_DIR / f"{path}.json"
        if bundled.exists():
            candidate = bundled
        else:
            raise ValueError(f"model config not found: {path}")
    if candidate.is_dir():
        candidate = candidate / "config.json"
        if not candidate.exists():
            raise ValueError(f"no config.json in {path}")
    try:
        config = json.loads(candidate.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{candidate}: not valid JSON ({exc})") from exc
    name = candidate.parent.name if candidate.name == "config.json" else candidate.stem
    return ModelSpec.from_hf_config(config, name=name)
