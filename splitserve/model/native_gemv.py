"""bfloat16 GEMV for few-row (decode) Linears on CPU: csrc/gemv_bf16.cpp through ctypes.

Built and cached like the other kernels (`native_build.build`, its own library name). Used only
where the library was compiled with AVX-512 BF16 (`max_rows()` > 0): elsewhere oneDNN's
GEMM is as good, and `PackedLinear` keeps using it. `SPLITSERVE_NATIVE=0` or
`SPLITSERVE_GEMV=0` switches it off.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from collections.abc import Callable
from functools import lru_cache

import torch

from splitserve.model import native_build

log = logging.getLogger(__name__)

SOURCE = native_build.CSRC / "gemv_bf16.cpp"
ABI_VERSION = 2
_I64 = ctypes.c_int64
_PTR = ctypes.c_void_p


@lru_cache(maxsize=1)
def load() -> ctypes.CDLL | None:
    """The GEMV library, or None when disabled (`SPLITSERVE_NATIVE=0` turns off every
    kernel, `SPLITSERVE_GEMV=0` only this one: A/B runs against oneDNN) or unavailable."""
    if "0" in (os.environ.get("SPLITSERVE_NATIVE", "1"), os.environ.get("SPLITSERVE_GEMV", "1")):
        return None
    try:
        lib = ctypes.CDLL(str(native_build.build(sources=(SOURCE,), name="splitserve_gemv")))
        if lib.splitserve_gemv_abi_version() != ABI_VERSION:
            raise RuntimeError("stale GEMV library (ABI version mismatch)")
    except Exception as exc:  # noqa: BLE001 - any failure means: use oneDNN
        log.warning("native bf16 GEMV unavailable, using oneDNN: %s", exc)
        return None
    for fn in (lib.gemv_bf16, lib.gemv_silu_mul_bf16):
        fn.argtypes = [_PTR, _I64, _PTR, _PTR, _PTR, _I64, _I64, _I64, _I64, ctypes.c_int,
                       ctypes.c_int]
        fn.restype = None
    lib.gemv_bf16_fast.restype = ctypes.c_int
    lib.gemv_bf16_max_rows.restype = ctypes.c_int
    return lib


# which loop `gemv` runs (csrc enum Path): the fastest that applies, or a forced one
PATHS = {"auto": 0, "generic": 1, "avx512": 2, "amx": 3}


def fast_available() -> bool:
    """True when the AVX-512 BF16 kernel is built and loadable on this CPU."""
    lib = load()
    return lib is not None and bool(lib.gemv_bf16_fast())


_HUGE_PAGE_BYTES = 2 << 20
_MADV_HUGEPAGE = 14


def hugepage_copies(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Contiguous copies of `tensors` in one buffer backed by transparent huge pages.

    The GEMV streams every weight once per step; with 4 KB pages that walks a page table
    entry every 4 KB of each of its streams, and reading llama-110m's weights from 2 MB
    pages ran ~6% faster on one core. Linux only (elsewhere, or where the kernel refuses,
    the copies sit on ordinary pages: same results). Each copy starts 64-byte aligned.
    """
    if not tensors:
        return []
    offsets, total = [], 0
    for t in tensors:
        offsets.append(total)
        total += -(-t.numel() * t.element_size() // 64) * 64
    buf = torch.empty(total + _HUGE_PAGE_BYTES, dtype=torch.uint8)
    skip = -buf.data_ptr() % _HUGE_PAGE_BYTES
    arena = buf[skip : skip + total]
    if total and sys.platform == "linux":
        try:  # before the first touch, so the page faults map huge pages
            libc = ctypes.CDLL(None, use_errno=True)
            libc.madvise.argtypes = [_PTR, ctypes.c_size_t, ctypes.c_int]
            length = -(-total // _HUGE_PAGE_BYTES) * _HUGE_PAGE_BYTES
            libc.madvise(arena.data_ptr(), length, _MADV_HUGEPAGE)
        except (OSError, AttributeError):
            pass
    copies = []
    for t, offset in zip(tensors, offsets, strict=True):
        num_bytes = t.numel() * t.element_size()
        dst = arena[offset : offset + num_bytes].view(t.dtype).view(t.shape)
        dst.copy_(t)
        copies.append(dst)
    return copies


def max_rows() -> int:
    """Most rows of x for which `gemv` beats oneDNN here (0: never use it)."""
    lib = load()
    return 0 if lib is None else int(lib.gemv_bf16_max_rows())


def bind(weight: torch.Tensor, bias: torch.Tensor | None = None, *,
         silu_mul: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """`gemv` (or `gemv_silu_mul`) with this weight and bias checked once: returns
    `f(x) = x @ weight.T + bias` for bf16 x [M, K] (M rows of a decode step: a few
    microseconds of Python per call matter at ~50 calls per step). The closure keeps
    weight and bias alive."""
    _check_weight(weight, weight.shape[1] if weight.dim() == 2 else -1, bias)
    if silu_mul and weight.shape[0] % 2:
        raise ValueError(f"a fused gate/up weight has an even row count, got {weight.shape[0]}")
    lib = load()
    assert lib is not None, "native GEMV unavailable: check native_gemv.load() first"
    fn = lib.gemv_silu_mul_bf16 if silu_mul else lib.gemv_bf16
    num_rows, num_in = weight.shape
    num_out = num_rows // 2 if silu_mul else num_rows
    w_ptr = weight.data_ptr()
    b_ptr = None if bias is None else bias.data_ptr()

    def run(x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.dtype != torch.bfloat16 or x.shape[1] != num_in or \
                x.stride(1) != 1 or x.device.type != "cpu":
            raise ValueError(f"x must be a bf16 CPU [M, {num_in}] tensor with contiguous rows, "
                             f"got {x.dtype} {tuple(x.shape)} on {x.device}")
        out = torch.empty(x.shape[0], num_out, dtype=torch.bfloat16)
        if x.shape[0]:
            fn(x.data_ptr(), x.stride(0), w_ptr, b_ptr, out.data_ptr(), num_out, x.shape[0],
               num_rows, num_in, torch.get_num_threads(), 0)
        return out

    run.weight, run.bias = weight, bias  # type: ignore[attr-defined]
    return run


def _check_weight(weight: torch.Tensor, num_in: int, bias: torch.Tensor | None) -> None:
    if weight.dim() != 2 or weight.dtype != torch.bfloat16 or not weight.is_contiguous() or \
            weight.shape[1] != num_in or weight.device.type != "cpu":
        raise ValueError(f"weight must be a contiguous bf16 CPU [N, {num_in}] tensor, got "
                         f"{weight.dtype} {tuple(weight.shape)}")
    num_out = weight.shape[0]
    if bias is not None and (bias.dtype != torch.bfloat16 or tuple(bias.shape) != (num_out,)
                             or not bias.is_contiguous() or bias.device.type != "cpu"):
        raise ValueError(f"bias must be a contiguous bf16 [{num_out}] tensor")


def _check_call(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                path: str) -> None:
    if path not in PATHS:
        raise ValueError(f"path must be one of {sorted(PATHS)}, got {path!r}")
    if x.dim() != 2 or x.dtype != torch.bfloat16 or x.device.type != "cpu" or x.stride(1) != 1:
        raise ValueError(f"x must be a 2-D bf16 CPU tensor with contiguous rows, got "
                         f"{x.dtype} {tuple(x.shape)} on {x.device}")
    _check_weight(weight, x.shape[1], bias)


def gemv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
         path: str = "auto") -> torch.Tensor:
    """`x @ weight.T + bias` in bfloat16 with float32 accumulation, for few rows of x.

    x [M, K] bf16 CPU with contiguous rows (rows may be strided), weight [N, K] contiguous,
    bias [N] or None. Returns a new [M, N] bf16 tensor. `path` forces a loop (see PATHS;
    tests compare them; a forced loop that was not compiled in, or that does not fit the
    shape, e.g. AMX needs K % 32 == 0, falls back to the next: amx -> avx512 -> generic);
    callers check `load()` (`max_rows()` for speed).
    """
    _check_call(x, weight, bias, path)
    num_out = weight.shape[0]
    lib = load()
    assert lib is not None, "native GEMV unavailable: check native_gemv.load() first"
    out = torch.empty(x.shape[0], num_out, dtype=torch.bfloat16)
    if x.shape[0] == 0 or num_out == 0:
        return out
    lib.gemv_bf16(x.data_ptr(), x.stride(0), weight.data_ptr(),
                  None if bias is None else bias.data_ptr(), out.data_ptr(), out.stride(0),
                  x.shape[0], num_out, x.shape[1], torch.get_num_threads(), PATHS[path])
    return out


def gemv_silu_mul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                  path: str = "auto") -> torch.Tensor:
    """The MLP's `silu(gate) * up` from its fused gate/up projection, gate rows first:
    with `g = gemv(x, weight, bias)` [M, 2I], returns `round(round(silu(g[:, :I])) *
    g[:, I:])` [M, I] bf16, as transformers rounds (torch's exp may differ in its last float32
    bit, rarely moving a result by one bf16 ulp). Same checks and paths as `gemv`."""
    _check_call(x, weight, bias, path)
    if weight.shape[0] % 2:
        raise ValueError(f"a fused gate/up weight has an even row count, got {weight.shape[0]}")
    lib = load()
    assert lib is not None, "native GEMV unavailable: check native_gemv.load() first"
    num_out = weight.shape[0] // 2
    out = torch.empty(x.shape[0], num_out, dtype=torch.bfloat16)
    if x.shape[0] and num_out:
        lib.gemv_silu_mul_bf16(x.data_ptr(), x.stride(0), weight.data_ptr(),
                               None if bias is None else bias.data_ptr(), out.data_ptr(),
                               num_out, x.shape[0], weight.shape[0], x.shape[1],
                               torch.get_num_threads(), PATHS[path])
    return out
