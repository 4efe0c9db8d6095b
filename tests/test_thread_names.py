"""OS thread names: what `top -H` and the calibration's per-thread accounting read."""

from __future__ import annotations

import os
import threading
import time

import pytest

from benchmarks.calibration.snapshot import thread_times
from splitserve.thread_names import MAX_LEN, name_this_thread

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux /proc")


def _spin_named(name: str | None, seconds: float, started: threading.Event,
                release: threading.Event) -> None:
    name_this_thread(name)
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass
    started.set()
    release.wait(10)


def _run_named(name: str | None, thread_name: str, seconds: float = 0.0) -> tuple[str, dict]:
    started, release = threading.Event(), threading.Event()
    t = threading.Thread(target=_spin_named, args=(name, seconds, started, release),
                         name=thread_name)
    t.start()
    try:
        assert started.wait(10)
        comm = open(f"/proc/self/task/{t.native_id}/comm").read().strip()
        return comm, thread_times(os.getpid())
    finally:
        release.set()
        t.join()


def test_thread_is_named_in_the_kernel_and_timed_by_name() -> None:
    comm, times = _run_named("kv-conn", "whatever", seconds=0.2)
    assert comm == "kv-conn"
    cpu_s, wait_s = times["kv-conn"]
    assert cpu_s >= 0.15  # its own spin, not the process's
    assert wait_s >= 0.0


def test_default_name_is_the_python_thread_name_truncated() -> None:
    comm, _ = _run_named(None, "engine-with-a-very-long-name")
    assert comm == "engine-with-a-very-long-name"[:MAX_LEN]


def test_a_process_without_proc_entries_has_no_threads() -> None:
    assert thread_times(2**22 + 12345) == {}
