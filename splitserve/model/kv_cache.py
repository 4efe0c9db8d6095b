"""Paged KV cache tensors and their raw-byte export/import (the unit the transfer moves).

Layout per layer: `[2, num_blocks, block_size, num_kv_heads, head_dim]` (K = 0, V = 1).
Exported bytes of one layer are block-major: for each requested block in the given order,
its K block then its V block, each `block_size * num_kv_heads * head_dim` elements in the
cache dtype, native (little-endian) byte order.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

from splitserve.model.config import ModelConfig

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"unsupported KV cache dtype {dtype!r}; supported: {list(_DTYPES)}")
    return _DTYPES[dtype]


def bytes_per_block_per_layer(
    config: ModelConfig, block_size: int, dtype: str | torch.dtype
) -> int:
    """Bytes of one block of one layer (K and V together)."""
    itemsize = torch.empty((), dtype=_torch_dtype(dtype)).element_size()
    return 2 * block_size * config.num_kv_heads * config.head_dim * itemsize


def num_blocks_for_memory(
    config: ModelConfig, block_size: int, dtype: str | torch.dtype, memory_bytes: int
) -> int:
    """How many blocks (each spanning all layers) fit in `memory_bytes`."""
    if block_size <= 0:
        raise ValueError(f"block_size must be > 0, got {block_size}")
    per_block_bytes = bytes_per_block_per_layer(config, block_size, dtype) * config.num_layers
    return max(0, memory_bytes // per_block_bytes)


def allocate_kv_caches(
    config: ModelConfig,
    num_blocks: int,
    block_size: int,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device = "cpu",
) -> list[torch.Tensor]:
    """One zeroed tensor per layer; dtype defaults to the config's (loaded) dtype."""
    if num_blocks <= 0 or block_size <= 0:
        raise ValueError(f"num_blocks and block_size must be > 0, got {num_blocks}, {block_size}")
    torch_dtype = _torch_dtype(dtype if dtype is not None else config.dtype)
    shape = (2, num_blocks, block_size, config.num_kv_heads, config.head_dim)
    return [torch.zeros(shape, dtype=torch_dtype, device=device) for _ in range(config.num_layers)]


def _check(kv_caches: list[torch.Tensor], layer: int, block_ids: Sequence[int]) -> torch.Tensor:
    if not 0 <= layer < len(kv_caches):
        raise ValueError(f"layer {layer} out of range [0, {len(kv_caches)})")
    num_blocks = kv_caches[layer].shape[1]
    for block_id in block_ids:
        if not 0 <= block_id < num_blocks:
            raise ValueError(f"block id {block_id} out of range [0, {num_blocks})")
    if len(set(block_ids)) != len(block_ids):
        raise ValueError(f"duplicate block ids in {list(block_ids)}")
    return torch.tensor(list(block_ids), dtype=torch.int64, device=kv_caches[layer].device)


def layer_block_bytes(kv_cache: torch.Tensor) -> int:
    """Bytes of one block of this layer's cache tensor (K and V)."""
    _, _, block_size, num_kv_heads, head_dim = kv_cache.shape
    return 2 * block_size * num_kv_heads * head_dim * kv_cache.element_size()


def export_blocks(kv_caches: list[torch.Tensor], layer: int, block_ids: Sequence[int]) -> bytes:
    """Raw bytes of `block_ids` of one layer, block-major (see module docstring)."""
    ids = _check(kv_caches, layer, block_ids)
    blocks = kv_caches[layer].index_select(1, ids).transpose(0, 1).contiguous()
    return blocks.cpu().view(torch.uint8).numpy().tobytes()


def import_blocks(
    kv_caches: list[torch.Tensor],
    layer: int,
    block_ids: Sequence[int],
    data: bytes | bytearray | memoryview,
) -> None:
    """Write bytes produced by `export_blocks` into `block_ids` of one layer (same layout)."""
    ids = _check(kv_caches, layer, block_ids)
    cache = kv_caches[layer]
    expected = len(block_ids) * layer_block_bytes(cache)
    num_bytes = memoryview(data).nbytes
    if num_bytes != expected:
        raise ValueError(
            f"KV import for layer {layer}: got {num_bytes} bytes, expected {expected} "
            f"({len(block_ids)} blocks x {layer_block_bytes(cache)} bytes)"
        )
    if not block_ids:
        return
    with warnings.catch_warnings():
        # frombuffer warns on read-only buffers; we only read from it (zero-copy view).
        warnings.simplefilter("ignore", UserWarning)
        raw = torch.frombuffer(data, dtype=torch.uint8)
    _, _, block_size, num_kv_heads, head_dim = cache.shape
    blocks = raw.view(cache.dtype).view(len(block_ids), 2, block_size, num_kv_heads, head_dim)
    # inference_mode: the engine may have allocated the cache inside it, and in-place writes
    # to such a tensor are only allowed there (harmless for an ordinary tensor).
    with torch.inference_mode():
        cache.index_copy_(1, ids, blocks.to(cache.device).transpose(0, 1))
