"""Engine configuration: one frozen dataclass, mirrored by the CLI flags."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineConfig:
    model: str
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    device: str = "cpu"
    block_size: int = 16
    num_blocks: int | None = None  # None: size the KV pool from kv_cache_bytes
    kv_cache_bytes: int = 1 << 30
    max_num_batched_tokens: int = 512  # token budget per step (chunked prefill)
    max_num_seqs: int = 64
    max_model_len: int | None = None  # None: the model's max_position_embeddings
    enable_prefix_caching: bool = True
    num_threads: int | None = None  # torch intra-op threads on CPU; None: leave as is
    handoff_lease_s: float = 30.0  # how long a prefilled request's KV waits for its pull
    seed: int = 0  # the engine's generator for unseeded sampling

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be auto|float32|bfloat16|float16, got {self.dtype!r}")
        positive = ("block_size", "kv_cache_bytes", "max_num_batched_tokens", "max_num_seqs")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.num_blocks is not None and self.num_blocks <= 0:
            raise ValueError(f"num_blocks must be > 0, got {self.num_blocks}")
        if self.max_model_len is not None and self.max_model_len <= 0:
            raise ValueError(f"max_model_len must be > 0, got {self.max_model_len}")
        if self.num_threads is not None and self.num_threads <= 0:
            raise ValueError(f"num_threads must be > 0, got {self.num_threads}")
        if self.handoff_lease_s <= 0:
            raise ValueError(f"handoff_lease_s must be > 0, got {self.handoff_lease_s}")
