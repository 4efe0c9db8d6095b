"""OS thread names for our threads, so `top -H`, `ps -L` and the calibration's per-thread
CPU accounting (benchmarks/calibration/snapshot.py) can tell a worker's engine steps from
the KV sends, checksums and HTTP work that share its core. Python 3.11 names its threads
for itself only; the kernel sees every thread under the process's name until told."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

# the kernel keeps 15 bytes of a thread's name (TASK_COMM_LEN 16 with the NUL)
MAX_LEN = 15


def name_this_thread(name: str | None = None) -> None:
    """Give the calling thread's OS thread `name` (default: its Python name), truncated
    to 15 bytes. Linux only: a no-op where /proc is missing or refuses the write."""
    label = (name or threading.current_thread().name).encode()[:MAX_LEN]
    try:
        Path(f"/proc/self/task/{threading.get_native_id()}/comm").write_bytes(label)
    except OSError:
        pass


def named_initializer(prefix: str) -> Callable[[], None]:
    """A ThreadPoolExecutor initializer naming each pool thread `prefix`."""
    return lambda: name_this_thread(prefix)
