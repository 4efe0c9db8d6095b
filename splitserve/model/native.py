"""CPU kernels in C++ (splitserve/model/csrc), built on first use and called through ctypes.

Why not a torch extension: `torch.utils.cpp_extension` compiles torch's headers (about a
minute per build on two cores) and ties the binary to one torch version. These kernels take
raw pointers, so a plain `g++ -O3 -march=native -fopenmp` builds them in seconds
and the same source serves torch 2.11 and 2.13. Building and caching live in `native_build.py`.

OpenMP: the library links `libgomp.so.1`, which resolves to the copy torch already loaded
(same soname), so the kernels and torch share one thread pool.

Anything that goes wrong (no compiler, a failed build, `SPLITSERVE_NATIVE=0`) leaves
`load()` returning None, and attention falls back to the pure-torch path, which gives the
same results up to float rounding.
"""

from __future__ import annotations

import ctypes
import logging
import os
from functools import lru_cache
from typing import Any

import torch

from splitserve.model.native_build import (  # noqa: F401 - re-exported for callers/tests
    CSRC,
    HEADERS,
    SOURCES,
    _compiler,
    build,
    cache_dir,
    keep_freed_memory,
)

log = logging.getLogger(__name__)

ABI_VERSION = 6

_I64 = ctypes.c_int64
_PTR = ctypes.c_void_p
_NORM_ARGS = [_PTR, _PTR, _PTR, _PTR, _I64, _I64, ctypes.c_float, ctypes.c_int, ctypes.c_int]
_ROTARY_ARGS = [_PTR, _PTR, _PTR, _I64, _I64, _I64, _I64, ctypes.c_int]
_SILU_ARGS = [_PTR, _PTR, _I64, _I64, ctypes.c_int]
_DECODE_ARGS = [_PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _I64, _I64, _I64, _I64, _I64, _I64, _I64,
                _I64, _I64, _I64, ctypes.c_float, ctypes.c_int, ctypes.c_int]
_PREFILL_ARGS: list[Any] = [*[_PTR] * 7, *[_I64] * 10, ctypes.c_float, ctypes.c_int,
                            ctypes.c_int]


@lru_cache(maxsize=1)
def load() -> ctypes.CDLL | None:
    """The kernel library, or None when disabled or unavailable (logged once). Loading
    also applies `keep_freed_memory` (the CPU path's allocator setting)."""
    if os.environ.get("SPLITSERVE_NATIVE", "1") == "0":
        return None
    keep_freed_memory()
    try:
        lib = ctypes.CDLL(str(build()))
        if lib.splitserve_abi_version() != ABI_VERSION:
            raise RuntimeError("stale kernel library (ABI version mismatch)")
    except Exception as exc:  # noqa: BLE001 - any failure means: use the torch path
        log.warning("native CPU kernels unavailable, using the torch path: %s", exc)
        return None
    lib.argmax_rows_f32.argtypes = [_PTR, _I64, _I64, _I64, _PTR, ctypes.c_int]
    lib.argmax_rows_f32.restype = None
    lib.paged_prefill_bf16.argtypes = _PREFILL_ARGS
    lib.paged_prefill_bf16.restype = ctypes.c_int
    lib.splitserve_prefill_path.restype = ctypes.c_int
    lib.write_kv_rows.argtypes = [*[_PTR] * 4, *[_I64] * 5, ctypes.c_int]
    lib.write_kv_rows.restype = ctypes.c_int
    for suffix in ("f32", "bf16"):
        for name, args in (("paged_decode", _DECODE_ARGS), ("add_rms_norm", _NORM_ARGS),
                           ("rotary", _ROTARY_ARGS), ("silu_mul", _SILU_ARGS)):
            fn = getattr(lib, f"{name}_{suffix}")
            fn.argtypes = args
            fn.restype = None
    return lib


def available() -> bool:
    return load() is not None


def supports(dtype: torch.dtype, device: torch.device) -> bool:
    """True when `paged_decode` runs for this activation/KV dtype and device."""
    return device.type == "cpu" and dtype in (torch.float32, torch.bfloat16) and available()


def _check_attention_inputs(q: torch.Tensor, out: torch.Tensor, kv_cache: torch.Tensor,
                            **index_tensors: torch.Tensor) -> None:
    """The layout both attention kernels read: a bad one would be read out of bounds."""
    num_kv_heads, head_dim = kv_cache.shape[3], kv_cache.shape[4]
    if q.shape[1] % num_kv_heads:
        raise ValueError(f"{q.shape[1]} query heads are not a multiple of {num_kv_heads} KV heads")
    for name, t in (("q", q), ("out", out)):
        if t.stride(-1) != 1 or t.stride(-2) != head_dim or t.dtype != kv_cache.dtype:
            raise ValueError(f"{name} must be [T, H, D] with contiguous heads, in the cache dtype")
    if not kv_cache.is_contiguous():
        raise ValueError("kv_cache must be contiguous")
    for name, t in index_tensors.items():
        if t.dtype != torch.int64 or not t.is_contiguous() or t.device.type != "cpu":
            raise ValueError(f"{name} must be a contiguous int64 CPU tensor")


def paged_decode(q: torch.Tensor, out: torch.Tensor, kv_cache: torch.Tensor,
                 rows: torch.Tensor, ctx_lens: torch.Tensor, block_tables: torch.Tensor,
                 sliding_window: int | None, scale: float, *, generic: bool = False) -> None:
    """Decode attention for the sequences whose query rows are `rows`, written into `out`.

    q/out [T, H, D] (heads and head_dim contiguous; rows may be strided), kv_cache
    [2, num_blocks, block_size, KVH, D] contiguous, rows/ctx_lens [B] int64, block_tables
    [B, max_blocks] int64 contiguous. Callers check `supports` first. `generic` forces the
    portable loop even where the AVX-512 path applies (tests compare the two).
    """
    _, num_blocks, block_size, num_kv_heads, head_dim = kv_cache.shape
    num_heads = q.shape[1]
    _check_attention_inputs(q, out, kv_cache, rows=rows, ctx_lens=ctx_lens,
                            block_tables=block_tables)
    _fn("paged_decode", q.dtype)(q.data_ptr(), out.data_ptr(), kv_cache.data_ptr(), rows.data_ptr(), ctx_lens.data_ptr(),
       block_tables.data_ptr(), rows.shape[0], block_tables.shape[1], num_blocks, block_size,
       num_heads, num_kv_heads, head_dim, q.stride(0), out.stride(0),
       sliding_window or 0, scale, torch.get_num_threads(), int(generic))


def write_kv(kv_cache: torch.Tensor, slot_mapping: torch.Tensor, k: torch.Tensor,
             v: torch.Tensor) -> None:
    """Scatter k/v [T, KVH, D] (rows may be strided, heads contiguous) into kv_cache
    [2, num_blocks, block_size, KVH, D] (contiguous, same dtype) at flat slots [T] int64."""
    _, num_blocks, block_size, num_kv_heads, head_dim = kv_cache.shape
    row = (num_kv_heads, head_dim)
    for name, t in (("k", k), ("v", v)):
        if t.dim() != 3 or tuple(t.shape[1:]) != row or t.stride(-1) != 1 or \
                t.stride(-2) != head_dim or t.dtype != kv_cache.dtype or t.device.type != "cpu":
            raise ValueError(f"{name} must be a CPU [T, {num_kv_heads}, {head_dim}] tensor with "
                             f"contiguous heads in the cache dtype")
    if not kv_cache.is_contiguous() or slot_mapping.dtype != torch.int64 or \
            not slot_mapping.is_contiguous() or tuple(slot_mapping.shape) != (k.shape[0],) or \
            k.shape[0] != v.shape[0]:
        raise ValueError("need a contiguous cache and one contiguous int64 slot per k/v row")
    lib = load()
    assert lib is not None, "native kernels unavailable: check native.available() first"
    size = kv_cache.element_size()
    status = lib.write_kv_rows(
        k.data_ptr(), v.data_ptr(), kv_cache.data_ptr(), slot_mapping.data_ptr(), k.shape[0],
        num_kv_heads * head_dim * size, k.stride(0) * size, v.stride(0) * size,
        num_blocks * block_size, torch.get_num_threads())
    if status != 0:
        raise ValueError(f"slot_mapping has slots outside the cache's "
                         f"[0, {num_blocks * block_size}) slots")


PREFILL_HEAD_DIMS = (64, 128)
PREFILL_PATHS = {"auto": 0, "avx512_bf16": 1, "amx": 2}


@lru_cache(maxsize=1)
def prefill_path() -> str | None:
    """The bf16 prefill kernel this build runs ("amx" or "avx512_bf16"); None: no kernel
    (the CPU lacks AVX512-BF16, or no library) and prefill stays on SDPA."""
    lib = load()
    code = 0 if lib is None else lib.splitserve_prefill_path()
    return {1: "avx512_bf16", 2: "amx"}.get(code)


def supports_prefill(dtype: torch.dtype, device: torch.device, head_dim: int) -> bool:
    """True when the engine should run `paged_prefill` for this KV dtype, device and
    head_dim: only with AMX. The AVX512-BF16 variant (kept, tested, forced with `path`)
    measured slower than torch's SDPA here (38 vs 28.5 ms on the 16-prompt layer of
    benchmarks/prefill_attention.py), so without AMX prefill stays on SDPA."""
    return (device.type == "cpu" and dtype == torch.bfloat16 and head_dim in PREFILL_HEAD_DIMS
            and prefill_path() == "amx")


def paged_prefill(q: torch.Tensor, out: torch.Tensor, kv_cache: torch.Tensor,
                  rows: torch.Tensor, q_lens: torch.Tensor, ctx_lens: torch.Tensor,
                  block_tables: torch.Tensor, sliding_window: int | None, scale: float, *,
                  path: str = "auto") -> None:
    """Causal attention of prefill chunks over their whole context, read in place from the
    cache (which must already hold the chunks' own K/V), written into `out`.

    Chunk s has q_lens[s] query rows starting at flat row rows[s] of q/out [T, H, D]
    (contiguous heads; rows may be strided) and sits at the end of its ctx_lens[s] tokens.
    kv_cache [2, num_blocks, block_size, KVH, D] contiguous bf16; rows/q_lens/ctx_lens [B]
    and block_tables [B, max_blocks] contiguous int64. Callers check `supports_prefill`;
    `path` forces one kernel (tests compare them).
    """
    _, num_blocks, block_size, num_kv_heads, head_dim = kv_cache.shape
    num_heads = q.shape[1]
    if kv_cache.dtype != torch.bfloat16:
        raise ValueError("kv_cache must be a contiguous bfloat16 tensor")
    _check_attention_inputs(q, out, kv_cache, rows=rows, q_lens=q_lens, ctx_lens=ctx_lens,
                            block_tables=block_tables)
    if path not in PREFILL_PATHS:
        raise ValueError(f"path must be one of {sorted(PREFILL_PATHS)}, got {path!r}")
    lib = load()
    assert lib is not None, "native kernels unavailable: check native.supports_prefill() first"
    status = lib.paged_prefill_bf16(
        q.data_ptr(), out.data_ptr(), kv_cache.data_ptr(), rows.data_ptr(), q_lens.data_ptr(),
        ctx_lens.data_ptr(), block_tables.data_ptr(), rows.shape[0], block_tables.shape[1],
        num_blocks, block_size, num_heads, num_kv_heads, head_dim, q.stride(0), out.stride(0),
        sliding_window or 0, scale, torch.get_num_threads(), PREFILL_PATHS[path])
    if status != 0:
        raise ValueError(f"no {path} prefill kernel for head_dim {head_dim} on this CPU")


def _fn(name: str, dtype: torch.dtype) -> Any:
    lib = load()
    assert lib is not None, "native kernels unavailable: check native.supports() first"
    return getattr(lib, f"{name}_{'bf16' if dtype == torch.bfloat16 else 'f32'}")


def _check_rows(name: str, t: torch.Tensor, dtype: torch.dtype) -> None:
    if t.dtype != dtype or t.dim() != 2 or not t.is_contiguous():
        raise ValueError(f"{name} must be a contiguous 2-D {dtype} tensor, got "
                         f"{t.dtype} {tuple(t.shape)}")


def add_rms_norm(x: torch.Tensor | None, residual: torch.Tensor, weight: torch.Tensor,
                 eps: float) -> torch.Tensor:
    """`residual += x` (in place, rounded to its dtype; skipped when x is None), then returns
    `weight * rms_norm(residual)` computed in float32 as transformers' RMSNorm does."""
    _check_rows("residual", residual, residual.dtype)
    if x is not None:
        _check_rows("x", x, residual.dtype)
        if x.shape != residual.shape:
            raise ValueError(f"x {tuple(x.shape)} and residual {tuple(residual.shape)} differ")
    if weight.dtype != residual.dtype or tuple(weight.shape) != (residual.shape[1],):
        raise ValueError("weight must be [hidden] in the activations' dtype")
    out = torch.empty_like(residual)
    _fn("add_rms_norm", residual.dtype)(
        0 if x is None else x.data_ptr(), residual.data_ptr(), weight.data_ptr(),
        out.data_ptr(), residual.shape[0], residual.shape[1], eps, int(x is not None),
        torch.get_num_threads())
    return out


def rotary_(x: torch.Tensor, num_heads: int, head_dim: int, cos: torch.Tensor,
            sin: torch.Tensor) -> None:
    """Rotate, in place, the first `num_heads` heads of each row of x [T, >= heads * D]
    (rows may be strided, e.g. q and k inside a fused qkv output); cos/sin [T, D]."""
    if x.dim() != 2 or x.stride(1) != 1 or x.shape[1] < num_heads * head_dim:
        raise ValueError(f"x must be [T, >= {num_heads * head_dim}] with contiguous rows")
    if head_dim % 2 or head_dim > 512:
        raise ValueError(f"head_dim must be even and <= 512, got {head_dim}")
    for name, t in (("cos", cos), ("sin", sin)):
        if t.dtype != x.dtype or tuple(t.shape) != (x.shape[0], head_dim) or \
                not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous [{x.shape[0]}, {head_dim}] {x.dtype}")
    _fn("rotary", x.dtype)(x.data_ptr(), cos.data_ptr(), sin.data_ptr(), x.shape[0],
                           num_heads, head_dim, x.stride(0), torch.get_num_threads())


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for gate_up [T, 2I] (gate first, as the fused projection lays it)."""
    _check_rows("gate_up", gate_up, gate_up.dtype)
    rows, width = gate_up.shape
    out = torch.empty(rows, width // 2, dtype=gate_up.dtype)
    _fn("silu_mul", gate_up.dtype)(gate_up.data_ptr(), out.data_ptr(), rows, width // 2,
                                   torch.get_num_threads())
    return out


def argmax_rows(logits: torch.Tensor) -> torch.Tensor:
    """Index of each row's first maximum (first NaN if any), as `logits.max(-1).indices`.

    logits: [N, V] float32 on CPU with contiguous rows (rows may be strided); returns [N]
    int64. One vectorised pass over each row instead of torch's generic reduction.
    """
    if logits.dtype != torch.float32 or logits.dim() != 2 or logits.device.type != "cpu" or \
            logits.stride(1) != 1 or logits.shape[1] == 0:
        raise ValueError(f"logits must be a CPU float32 [N, V>0] tensor with contiguous rows, "
                         f"got {logits.dtype} {tuple(logits.shape)} on {logits.device}")
    out = torch.empty(logits.shape[0], dtype=torch.int64)
    lib = load()
    assert lib is not None, "native kernels unavailable: check native.available() first"
    lib.argmax_rows_f32(logits.data_ptr(), logits.shape[0], logits.shape[1], logits.stride(0),
                        out.data_ptr(), torch.get_num_threads())
    return out
