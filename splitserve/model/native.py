"""CPU kernels in C++ (splitserve/model/csrc), built on first use and called through ctypes.

Why not a torch extension: `torch.utils.cpp_extension` compiles torch's headers (about a
minute per build on two cores) and ties the binary to one torch version. These kernels take
raw pointers, so a plain `g++ -O3 -march=native -fopenmp` builds them in seconds
and the same source serves torch 2.11 and 2.13. The shared library is cached under
`$SPLITSERVE_CACHE_DIR` (default `~/.cache/splitserve`) keyed by the source, the flags and
this CPU's feature flags, built under a file lock (several workers may start at once) and
renamed into place atomically.

OpenMP: the library links `libgomp.so.1`, which resolves to the copy torch already loaded
(same soname), so the kernels and torch share one thread pool.

Anything that goes wrong (no compiler, a failed build, `SPLITSERVE_NATIVE=0`) leaves
`load()` returning None, and attention falls back to the pure-torch path, which gives the
same results up to float rounding.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).resolve().parent / "csrc" / "paged_decode.cpp"
ABI_VERSION = 3
# -ffast-math at compile time only: linked, gcc 12 adds crtfastmath.o, which turns on
# flush-to-zero for the whole process (torch's numerics included) when the library loads.
COMPILE_FLAGS = ["-O3", "-march=native", "-mprefer-vector-width=512", "-ffast-math",
                 "-fopenmp", "-fPIC", "-std=c++17"]
LINK_FLAGS = ["-shared", "-fopenmp"]


def cache_dir() -> Path:
    root = os.environ.get("SPLITSERVE_CACHE_DIR") or Path.home() / ".cache" / "splitserve"
    return Path(root) / "native"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return ""


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def build(source: Path = SOURCE) -> Path:
    """Compile `source` (cached); returns the shared library's path. Raises on failure."""
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX or install g++)")
    key = hashlib.sha256(
        b"\0".join([source.read_bytes(), " ".join(COMPILE_FLAGS + LINK_FLAGS).encode(),
                    cxx.encode(), _cpu_flags().encode()])
    ).hexdigest()[:16]
    out_dir = cache_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / f"{source.stem}-{key}.so"
    if lib.is_file():
        return lib
    with open(out_dir / f"{source.stem}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same key
        if lib.is_file():
            return lib
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            obj, so = Path(tmp) / "kernel.o", Path(tmp) / "kernel.so"
            for cmd in ([cxx, *COMPILE_FLAGS, "-c", str(source), "-o", str(obj)],
                        [cxx, *LINK_FLAGS, str(obj), "-o", str(so)]):
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
                if proc.returncode != 0:
                    raise RuntimeError(f"{cxx} failed on {source.name}:\n{proc.stderr[-2000:]}")
            os.replace(so, lib)
    return lib


_I64 = ctypes.c_int64
_PTR = ctypes.c_void_p
_DECODE_ARGS = [_PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _I64, _I64, _I64, _I64, _I64, _I64, _I64,
                _I64, _I64, _I64, ctypes.c_float, ctypes.c_int, ctypes.c_int]


@lru_cache(maxsize=1)
def load() -> ctypes.CDLL | None:
    """The kernel library, or None when disabled or unavailable (logged once)."""
    if os.environ.get("SPLITSERVE_NATIVE", "1") == "0":
        return None
    try:
        lib = ctypes.CDLL(str(build()))
        if lib.splitserve_abi_version() != ABI_VERSION:
            raise RuntimeError("stale kernel library (ABI version mismatch)")
    except Exception as exc:  # noqa: BLE001 - any failure means: use the torch path
        log.warning("native CPU kernels unavailable, using the torch path: %s", exc)
        return None
    for name in ("paged_decode_f32", "paged_decode_bf16"):
        fn = getattr(lib, name)
        fn.argtypes = _DECODE_ARGS
        fn.restype = None
    return lib


def available() -> bool:
    return load() is not None


def supports(dtype: torch.dtype, device: torch.device) -> bool:
    """True when `paged_decode` runs for this activation/KV dtype and device."""
    return device.type == "cpu" and dtype in (torch.float32, torch.bfloat16) and available()


def paged_decode(q: torch.Tensor, out: torch.Tensor, kv_cache: torch.Tensor,
                 rows: torch.Tensor, ctx_lens: torch.Tensor, block_tables: torch.Tensor,
                 sliding_window: int | None, scale: float, *, generic: bool = False) -> None:
    """Decode attention for the sequences whose query rows are `rows`, written into `out`.

    q/out [T, H, D] (heads and head_dim contiguous; rows may be strided), kv_cache
    [2, num_blocks, block_size, KVH, D] contiguous, rows/ctx_lens [B] int64, block_tables
    [B, max_blocks] int64 contiguous. Callers check `supports` first. `generic` forces the
    portable loop even where the AVX-512 path applies (tests compare the two).
    """
    lib = load()
    assert lib is not None
    _, num_blocks, block_size, num_kv_heads, head_dim = kv_cache.shape
    num_heads = q.shape[1]
    if num_heads % num_kv_heads:
        raise ValueError(f"{num_heads} query heads are not a multiple of {num_kv_heads} KV heads")
    for name, t in (("q", q), ("out", out)):
        if t.stride(-1) != 1 or t.stride(-2) != head_dim or t.dtype != kv_cache.dtype:
            raise ValueError(f"{name} must be [T, H, D] with contiguous heads, in the cache dtype")
    if not kv_cache.is_contiguous():
        raise ValueError("kv_cache must be contiguous")
    for name, t in (("rows", rows), ("ctx_lens", ctx_lens), ("block_tables", block_tables)):
        if t.dtype != torch.int64 or not t.is_contiguous() or t.device.type != "cpu":
            raise ValueError(f"{name} must be a contiguous int64 CPU tensor")
    fn = lib.paged_decode_bf16 if q.dtype == torch.bfloat16 else lib.paged_decode_f32
    fn(q.data_ptr(), out.data_ptr(), kv_cache.data_ptr(), rows.data_ptr(), ctx_lens.data_ptr(),
       block_tables.data_ptr(), rows.shape[0], block_tables.shape[1], num_blocks, block_size,
       num_heads, num_kv_heads, head_dim, q.stride(0), out.stride(0),
       sliding_window or 0, scale, torch.get_num_threads(), int(generic))
