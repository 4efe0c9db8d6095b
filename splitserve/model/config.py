"""ModelConfig: the parts of a Hugging Face `config.json` the forward pass needs.

Parsing is strict: an unsupported architecture, rope type or a missing required field is a
`ValueError` naming it, never a silent guess.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

SUPPORTED_ARCHITECTURES = (
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
)
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
SUPPORTED_DTYPES = ("float32", "bfloat16", "float16")
_LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters, validated on construction."""

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int
    rms_norm_eps: float
    rope_theta: float
    rope_type: str = "default"
    # Only meaningful for rope_type "linear" (factor) and "llama3" (all four).
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_position: int = 8192
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_proj_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    # Keys further than this many positions behind a query are masked (Mistral); None = off.
    sliding_window: int | None = None
    # The checkpoint's dtype from config.json; load_model replaces it with the loaded dtype.
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.architecture not in SUPPORTED_ARCHITECTURES:
            raise ValueError(
                f"unsupported architecture {self.architecture!r}; "
                f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
            )
        if self.rope_type not in SUPPORTED_ROPE_TYPES:
            raise ValueError(
                f"unsupported rope type {self.rope_type!r}; supported: {SUPPORTED_ROPE_TYPES}"
            )
        if self.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"unsupported dtype {self.dtype!r}; supported: {SUPPORTED_DTYPES}")
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
            "max_position_embeddings",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.num_heads % self.num_kv_heads != 0:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of "
                f"num_kv_heads ({self.num_kv_heads})"
            )
        if self.head_dim % 2 != 0:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        if self.sliding_window is not None and self.sliding_window <= 0:
            raise ValueError(f"sliding_window must be > 0 or None, got {self.sliding_window}")
        if self.rope_factor <= 0:
            raise ValueError(f"rope factor must be > 0, got {self.rope_factor}")

    @property
    def num_queries_per_kv(self) -> int:
        return self.num_heads // self.num_kv_heads

    @classmethod
    def from_dir(cls, path: str | Path) -> ModelConfig:
        config_path = Path(path) / "config.json"
        if not config_path.is_file():
            raise ValueError(f"no config.json in {path}")
        return cls.from_hf(json.loads(config_path.read_text()))

    @classmethod
    def from_hf(cls, config: dict[str, Any]) -> ModelConfig:
        """Parse a Hugging Face config dict (transformers 4.x or 5.x layout)."""
        archs = config.get("architectures") or []
        if len(archs) != 1:
            raise ValueError(f"config 'architectures' must name exactly one class, got {archs!r}")
        arch = archs[0]
        if arch not in SUPPORTED_ARCHITECTURES:
            supported = ", ".join(SUPPORTED_ARCHITECTURES)
            raise ValueError(f"unsupported architecture {arch!r}; supported: {supported}")
        num_heads = _required(config, "num_attention_heads")
        hidden_size = _required(config, "hidden_size")
        head_dim = config.get("head_dim") or hidden_size // num_heads
        if arch == "Qwen3ForCausalLM" and "head_dim" not in config:
            raise ValueError("missing required config field 'head_dim' (Qwen3)")
        rope = _parse_rope(config)
        bias = bool(config.get("attention_bias", False))
        qkv_bias, o_bias = bias, bias
        if arch == "Qwen2ForCausalLM":
            qkv_bias, o_bias = True, False
        if arch == "MistralForCausalLM":
            qkv_bias, o_bias = False, False
        if float(config.get("partial_rotary_factor", 1.0)) != 1.0:
            raise ValueError("unsupported config field 'partial_rotary_factor' != 1.0")
        if config.get("hidden_act", "silu") != "silu":
            raise ValueError(f"unsupported hidden_act {config.get('hidden_act')!r} (only 'silu')")
        return cls(
            architecture=arch,
            vocab_size=_required(config, "vocab_size"),
            hidden_size=hidden_size,
            intermediate_size=_required(config, "intermediate_size"),
            num_layers=_required(config, "num_hidden_layers"),
            num_heads=num_heads,
            num_kv_heads=config.get("num_key_value_heads") or num_heads,
            head_dim=head_dim,
            max_position_embeddings=_required(config, "max_position_embeddings"),
            rms_norm_eps=float(_required(config, "rms_norm_eps")),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            qkv_bias=qkv_bias,
            o_proj_bias=o_bias,
            mlp_bias=bool(config.get("mlp_bias", False)),
            qk_norm=arch == "Qwen3ForCausalLM",
            sliding_window=_parse_sliding_window(arch, config),
            dtype=_parse_dtype(config),
            **rope,
        )

    def with_dtype(self, dtype: str) -> ModelConfig:
        return replace(self, dtype=dtype)

    def model_identity(self, weight_shapes: dict[str, tuple[int, ...]]) -> str:
        """Stable hash of the architecture fields and the checkpoint's tensor names/shapes.

        The dtype is left out on purpose: the transfer handshake checks it separately, and
        the same weights loaded in another dtype are still the same model.
        """
        arch = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "dtype"}
        payload = {
            "config": arch,
            "weights": sorted([name, list(shape)] for name, shape in weight_shapes.items()),
        }
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _required(config: dict[str, Any], key: str) -> Any:
    if config.get(key) is None:
        raise ValueError(f"missing required config field {key!r}")
    return config[key]


def _parse_rope(config: dict[str, Any]) -> dict[str, Any]:
    """Accept transformers 5.x `rope_parameters` and released `rope_theta` + `rope_scaling`."""
    params = dict(config.get("rope_parameters") or {})
    scaling = config.get("rope_scaling") or {}
    params.update({k: v for k, v in scaling.items() if k not in params})
    theta = params.get("rope_theta", config.get("rope_theta"))
    if theta is None:
        raise ValueError("missing required config field 'rope_theta'")
    rope_type = params.get("rope_type", params.get("type", "default"))
    out: dict[str, Any] = {"rope_theta": float(theta), "rope_type": rope_type}
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ValueError(f"unsupported rope type {rope_type!r}; supported: {SUPPORTED_ROPE_TYPES}")
    if rope_type in ("linear", "llama3"):
        if params.get("factor") is None:
            raise ValueError(f"rope type {rope_type!r} needs rope scaling field 'factor'")
        out["rope_factor"] = float(params["factor"])
    if rope_type == "llama3":
        for key in _LLAMA3_KEYS[1:]:
            if params.get(key) is None:
                raise ValueError(f"rope type 'llama3' needs rope scaling field {key!r}")
        out["rope_low_freq_factor"] = float(params["low_freq_factor"])
        out["rope_high_freq_factor"] = float(params["high_freq_factor"])
        out["rope_original_max_position"] = int(params["original_max_position_embeddings"])
    return out


def _parse_sliding_window(arch: str, config: dict[str, Any]) -> int | None:
    window = config.get("sliding_window")
    if arch == "MistralForCausalLM":
        if window is None or window >= config["max_position_embeddings"]:
            return None  # a window as long as the context masks nothing
        return int(window)
    if arch in ("Qwen2ForCausalLM", "Qwen3ForCausalLM") and config.get("use_sliding_window"):
        # Qwen applies the window only to some layers (max_window_layers): not implemented.
        raise ValueError(f"unsupported config field 'use_sliding_window' = true for {arch}")
    return None


def _parse_dtype(config: dict[str, Any]) -> str:
    dtype = config.get("dtype") or config.get("torch_dtype") or "float32"
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"unsupported checkpoint dtype {dtype!r}; supported: {SUPPORTED_DTYPES}")
    return str(dtype)
