"""Building the C++ kernels: compile once per source / flags / CPU, cache, reuse.

The shared library is cached under `$SPLITSERVE_CACHE` (default `~/.cache/splitserve`)
keyed by the sources, the headers they include, the flags, the compiler and this CPU's
feature flags; it is built under a file lock (several workers may start at once) and
renamed into place atomically. Also here: the allocator setting the CPU path applies.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CSRC = Path(__file__).resolve().parent / "csrc"
SOURCES = (CSRC / "paged_decode.cpp", CSRC / "fused_ops.cpp", CSRC / "prefill_attn.cpp",
           CSRC / "kv_write.cpp")
# included by the sources: part of the cache key
HEADERS = (CSRC / "dtype.h", CSRC / "simd.h", CSRC / "decode_avx512.h", CSRC / "decode_bf16.h",
           CSRC / "prefill_tiles.h", CSRC / "prefill_stages.h", CSRC / "gemv_amx.h")
# -ffast-math at compile time only: linked, gcc 12 adds crtfastmath.o, which turns on
# flush-to-zero for the whole process (torch's numerics included) when the library loads.
COMPILE_FLAGS = ["-O3", "-march=native", "-mprefer-vector-width=512", "-ffast-math",
                 "-fopenmp", "-fPIC", "-std=c++17"]
LINK_FLAGS = ["-shared", "-fopenmp"]


def cache_dir() -> Path:
    root = os.environ.get("SPLITSERVE_CACHE") or Path.home() / ".cache" / "splitserve"
    return Path(root).expanduser() / "native"


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


def build(sources: tuple[Path, ...] = SOURCES, name: str = "splitserve_kernels") -> Path:
    """Compile `sources` into one library (cached); returns its path. Raises on failure."""
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX or install g++)")
    key = hashlib.sha256(
        b"\0".join([*(src.read_bytes() for src in (*sources, *HEADERS)),
                    " ".join(COMPILE_FLAGS + LINK_FLAGS).encode(), cxx.encode(),
                    _cpu_flags().encode()])
    ).hexdigest()[:16]
    out_dir = cache_dir()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError:  # read-only home (some CI / containers): build into the temp dir
        out_dir = Path(tempfile.gettempdir()) / f"splitserve-native-{os.getuid()}"
        out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / f"{name}-{key}.so"
    if lib.is_file():
        return lib
    with open(out_dir / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same key
        if lib.is_file():
            return lib
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            objs = [Path(tmp) / f"{src.stem}.o" for src in sources]
            so = Path(tmp) / "kernels.so"
            steps = [(src.name, [cxx, *COMPILE_FLAGS, "-c", str(src), "-o", str(obj)])
                     for src, obj in zip(sources, objs, strict=True)]
            steps.append((so.name, [cxx, *LINK_FLAGS, *map(str, objs), "-o", str(so)]))
            for what, cmd in steps:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
                if proc.returncode != 0:
                    raise RuntimeError(f"{cxx} failed on {what}:\n{proc.stderr[-2000:]}")
            os.replace(so, lib)
    return lib



def keep_freed_memory() -> bool:
    """Have glibc keep freed memory for reuse instead of returning it to the OS.

    By default it serves blocks over a dynamic threshold (128 KiB at first) with fresh
    mmaps and trims the heap top back on free, so once a decode-heavy stretch has shaped
    the heap, every prefill step's multi-MB activations page-fault in anew: a mixed64
    prefill pass after a decode pass ran at 15 requests/s instead of 19-20 (bf16, 1 core).
    Fixed thresholds (mmap only above 32 MiB, trim only above 1 GiB free) keep the pages.
    `SPLITSERVE_MALLOC_TUNE=0` leaves the allocator alone. True when applied.
    """
    if os.environ.get("SPLITSERVE_MALLOC_TUNE", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(libc.mallopt(m_trim_threshold, 1 << 30)) and \
        bool(libc.mallopt(m_mmap_threshold, 32 << 20))
