"""The handoff record: everything a decode worker needs to pull one request's KV."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from splitserve.transfer.handshake import DTYPE_ITEM_BYTES, ModelIdentity

RECORD_VERSION = 1
MAX_REQUEST_ID_CHARS = 256
# Largest single layer we accept (bounds the sink's staging buffer).
MAX_LAYER_BYTES = 1 << 34


def parse_address(address: str) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`) -> (host, port); ValueError naming the problem."""
    if not isinstance(address, str) or ":" not in address:
        raise ValueError(f"address must look like host:port, got {address!r}")
    host, _, port_text = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"address must look like host:port with port 1..65535, got {address!r}")
    return host, int(port_text)


@dataclass(frozen=True)
class HandoffRecord:
    """Versioned, JSON-encoded description of KV held by a prefill worker.

    Travels prefill worker -> router -> decode worker inside the worker HTTP API. The KV of
    one request is, per layer, the request's blocks in `block_ids` order, `bytes_per_layer`
    bytes in all. `shm_host_id` is set when the source can also serve the KV over shared
    memory to sinks on the same host (see `splitserve.transfer.shm.local_host_id`).
    """

    version: int
    request_id: str
    source_worker_id: str
    tcp_address: str
    shm_host_id: str | None
    num_layers: int
    block_ids: tuple[int, ...]
    num_tokens: int
    bytes_per_layer: int
    dtype: str
    block_shape: tuple[int, ...]
    model_hash: str
    expires_at: float

    def __post_init__(self) -> None:
        if self.version != RECORD_VERSION:
            raise ValueError(f"handoff record version {self.version!r} != {RECORD_VERSION}")
        if not isinstance(self.request_id, str) or not self.request_id:
            raise ValueError(f"request_id must be a non-empty string, got {self.request_id!r}")
        if len(self.request_id) > MAX_REQUEST_ID_CHARS:
            raise ValueError(f"request_id longer than {MAX_REQUEST_ID_CHARS} characters")
        if not isinstance(self.source_worker_id, str):
            raise ValueError("source_worker_id must be a string")
        parse_address(self.tcp_address)
        if self.shm_host_id is not None and not isinstance(self.shm_host_id, str):
            raise ValueError("shm_host_id must be a string or null")
        _check_int("num_layers", self.num_layers, minimum=1)
        _check_int("num_tokens", self.num_tokens, minimum=1)
        if not self.block_ids:
            raise ValueError("block_ids is empty: a handoff must carry at least one KV block")
        for block_id in self.block_ids:
            _check_int("block id", block_id, minimum=0)
        if self.dtype not in DTYPE_ITEM_BYTES:
            raise ValueError(f"dtype {self.dtype!r} is not one of {sorted(DTYPE_ITEM_BYTES)}")
        if not self.block_shape:
            raise ValueError("block_shape is empty")
        for dim in self.block_shape:
            _check_int("block_shape dim", dim, minimum=1)
        expected = len(self.block_ids) * math.prod(self.block_shape) * DTYPE_ITEM_BYTES[self.dtype]
        if self.bytes_per_layer != expected:
            raise ValueError(
                f"bytes_per_layer {self.bytes_per_layer!r} != {len(self.block_ids)} blocks x "
                f"{list(self.block_shape)} x {self.dtype} = {expected}"
            )
        if expected > MAX_LAYER_BYTES:
            raise ValueError(f"bytes_per_layer {expected} exceeds {MAX_LAYER_BYTES}")
        if not isinstance(self.model_hash, str) or not self.model_hash:
            raise ValueError("model_hash must be a non-empty string")
        if isinstance(self.expires_at, bool) or not isinstance(self.expires_at, (int, float)):
            raise ValueError(f"expires_at must be a unix time, got {self.expires_at!r}")
        if not math.isfinite(self.expires_at) or self.expires_at <= 0:
            raise ValueError(f"expires_at must be a positive finite unix time: {self.expires_at}")

    @property
    def num_bytes(self) -> int:
        return self.num_layers * self.bytes_per_layer

    def mismatches(self, identity: ModelIdentity) -> list[str]:
        """`field sink != record` for every field on which this KV does not fit `identity`."""
        pairs = (
            ("model_hash", identity.model_hash, self.model_hash),
            ("dtype", identity.dtype, self.dtype),
            ("num_layers", identity.num_layers, self.num_layers),
            ("block_shape", list(identity.block_shape), list(self.block_shape)),
        )
        return [f"{name} {mine} != {theirs}" for name, mine, theirs in pairs if mine != theirs]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["block_ids"] = list(self.block_ids)
        data["block_shape"] = list(self.block_shape)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: object) -> HandoffRecord:
        """Strict decode: unknown, missing or ill-typed fields raise ValueError."""
        if not isinstance(data, dict):
            raise ValueError(f"handoff record must be a JSON object, got {type(data).__name__}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(names))
        missing = [name for name in names if name not in data]
        if unknown or missing:
            raise ValueError(f"handoff record: unknown fields {unknown}, missing fields {missing}")
        values = dict(data)
        for name in ("block_ids", "block_shape"):
            if not isinstance(values[name], list):
                raise ValueError(f"handoff record: {name} must be a list")
            values[name] = tuple(values[name])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str | bytes) -> HandoffRecord:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"handoff record is not valid JSON: {exc}") from exc
        return cls.from_dict(data)


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
