"""Model identity both ends of a KV handoff must share, checked before any KV byte moves."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from splitserve.transfer.errors import HandshakeMismatch

# Bytes per element of the dtypes a KV cache may hold (numpy has no bfloat16/float8).
DTYPE_ITEM_BYTES: dict[str, int] = {
    "float64": 8,
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "float8_e4m3fn": 1,
    "float8_e5m2": 1,
}
# Refusals always list the decode (pulling) side's value first.
HANDSHAKE_REFUSED = "KV handshake refused (decode != prefill): "


@dataclass(frozen=True)
class ModelIdentity:
    """What makes one worker's KV bytes meaningful to another.

    `model_hash` covers the config and the weights' names and shapes (see `model_hash_of`);
    the other fields are repeated in clear so a refusal can say what differs.
    """

    model_hash: str
    dtype: str
    block_size: int
    num_layers: int
    num_kv_heads: int
    head_dim: int

    def __post_init__(self) -> None:
        if not isinstance(self.model_hash, str) or not self.model_hash:
            raise ValueError(f"model_hash must be a non-empty string, got {self.model_hash!r}")
        if self.dtype not in DTYPE_ITEM_BYTES:
            raise ValueError(f"dtype {self.dtype!r} is not one of {sorted(DTYPE_ITEM_BYTES)}")
        for name in ("block_size", "num_layers", "num_kv_heads", "head_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")

    @property
    def block_shape(self) -> tuple[int, ...]:
        """Shape of one block of one layer: K and V, `[2, block_size, num_kv_heads, head_dim]`."""
        return (2, self.block_size, self.num_kv_heads, self.head_dim)

    @property
    def bytes_per_block(self) -> int:
        """Bytes of one block of one layer (K and V)."""
        num_elements = 2 * self.block_size * self.num_kv_heads * self.head_dim
        return num_elements * DTYPE_ITEM_BYTES[self.dtype]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> ModelIdentity:
        """Strict decode: unknown or missing fields raise ValueError."""
        if not isinstance(data, dict):
            raise ValueError(f"model identity must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        missing = sorted(names - set(data))
        if unknown or missing:
            raise ValueError(f"model identity: unknown fields {unknown}, missing fields {missing}")
        return cls(**data)


def identity_mismatches(local: ModelIdentity, remote: ModelIdentity) -> list[str]:
    """One `field local != remote` entry per differing field, in declaration order."""
    return [
        f"{f.name} {getattr(local, f.name)} != {getattr(remote, f.name)}"
        for f in fields(ModelIdentity)
        if getattr(local, f.name) != getattr(remote, f.name)
    ]


def check_compatible(decode: ModelIdentity, prefill: ModelIdentity) -> None:
    """Raise HandshakeMismatch listing every differing field; return if identical."""
    mismatches = identity_mismatches(decode, prefill)
    if mismatches:
        raise HandshakeMismatch(HANDSHAKE_REFUSED + "; ".join(mismatches))


def model_hash_of(config: dict[str, Any], tensor_shapes: dict[str, tuple[int, ...]]) -> str:
    """Hex digest of a model's config and its weights' names and shapes (not their values:
    hashing gigabytes of weights at startup is too slow, and a retrained checkpoint with
    the same architecture is a deployment error this check does not aim to catch)."""
    canonical = json.dumps(
        {"config": config, "tensors": {k: list(v) for k, v in sorted(tensor_shapes.items())}},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]
