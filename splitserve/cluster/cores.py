"""CPU core assignment for local workers (pure policy + the process-side pinning)."""

from __future__ import annotations

import os


def available_cores() -> list[int]:
    """Cores this process may run on (honours taskset / cgroup cpusets)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def assign_cores(num_workers: int, cores: list[int]) -> list[list[int]]:
    """Give each worker a disjoint, contiguous share of `cores`.

    With more cores than workers, the first workers get one extra core each; with fewer
    cores than workers, workers share cores round-robin (oversubscribed: say so in any
    benchmark). Disjoint shares are what make colocated and disaggregated runs compare
    on equal hardware.
    """
    if num_workers <= 0:
        raise ValueError(f"num_workers must be > 0, got {num_workers}")
    if not cores:
        raise ValueError("no CPU cores to assign")
    if num_workers >= len(cores):
        return [[cores[i % len(cores)]] for i in range(num_workers)]
    base, extra = divmod(len(cores), num_workers)
    plan: list[list[int]] = []
    start = 0
    for i in range(num_workers):
        n = base + (1 if i < extra else 0)
        plan.append(cores[start : start + n])
        start += n
    return plan


def pin_current_process() -> list[int] | None:
    """Pin this process to the cores named in SPLITSERVE_CORES (set by the launcher)."""
    spec = os.environ.get("SPLITSERVE_CORES", "").strip()
    if not spec or not hasattr(os, "sched_setaffinity"):
        return None
    cores = [int(c) for c in spec.split(",") if c.strip()]
    os.sched_setaffinity(0, cores)
    return cores
