"""What a measured run records besides its requests: every worker's and the router's
metrics, every process's CPU seconds and the machine's, before and after; and the rule
that calls a run contaminated by other people's work on the shared cores."""

from __future__ import annotations

import os
import resource
from pathlib import Path
from typing import Any

from benchmarks.calibration import step_metrics

# A phase or run is "contaminated" when processes that are not ours (another engineer's
# jobs on the shared cores) used more than MAX_FOREIGN_SHARE of one core and more than
# MIN_FOREIGN_S during it. measure.py measures such a probe phase or gauge again; the
# fits leave out one still contaminated, the judged comparison contaminated repeats (a
# quiet run here still shows ~0.5-1 s: kernel threads, the profiler's scrapes).
MAX_FOREIGN_SHARE = 0.05
MIN_FOREIGN_S = 1.5


def foreign_share(run: dict[str, Any]) -> float | None:
    """CPU seconds other people's processes used per second of a measured run (None:
    not recorded)."""
    foreign, duration = run.get("foreign_cpu_s"), run.get("duration_s")
    if foreign is None or not duration:
        return None
    return max(float(foreign), 0.0) / float(duration)


def contaminated(run: dict[str, Any]) -> bool:
    share = foreign_share(run)
    return share is not None and share > MAX_FOREIGN_SHARE and run["foreign_cpu_s"] > MIN_FOREIGN_S


def load_avg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _scrape(url: str) -> dict[str, float]:
    import httpx

    return parse_exposition(httpx.get(url + "/metrics", timeout=10.0).text)


def parse_exposition(text: str) -> dict[str, float]:
    """Every sample of a /metrics page, keyed by name{labels} (worker and role dropped)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())
                              if k not in ("worker", "role"))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_times(pid: int) -> dict[str, list[float]]:
    """Per OS thread name (splitserve/thread_names.py), the process's live threads' [CPU
    seconds, seconds runnable but waiting for a core] (/proc/PID/task/*/schedstat), summed
    over threads of one name; {} where the kernel keeps no schedstat. A worker's engine
    thread against its KV and HTTP threads says what shares the core with its steps."""
    out: dict[str, list[float]] = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            name = (task / "comm").read_text().strip()
            on_cpu_ns, wait_ns = (int(v) for v in (task / "schedstat").read_text().split()[:2])
        except (OSError, ValueError):
            continue  # the thread ended while we read
        times = out.setdefault(name, [0.0, 0.0])
        times[0] += on_cpu_ns / 1e9
        times[1] += wait_ns / 1e9
    return out


def _self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_cpu_s() -> float:
    """CPU seconds every process on the machine used since boot (/proc/stat: all but
    idle and iowait). Its growth over a run minus our own processes' is the load other
    people put on the cores while we measured."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    jiffies = [int(v) for v in fields]
    busy = sum(jiffies) - jiffies[3] - (jiffies[4] if len(jiffies) > 4 else 0)
    # guest time is already inside user time
    busy -= sum(jiffies[8:10]) if len(jiffies) >= 10 else 0
    return busy / os.sysconf("SC_CLK_TCK")


_WORKER_KEYS = ("splitserve_worker_engine_busy_seconds_total",)
# per worker: step seconds and tokens by phase (a mixed step's time split by FLOP share),
# and its steps by kind (step_metrics.py)
_PHASE_PREFIXES = ("splitserve_worker_phase_busy_seconds_total",
                   "splitserve_worker_phase_tokens_total", *step_metrics.SCRAPED_PREFIXES)
_ROUTER_PREFIXES = ("splitserve_router_routing_decisions_total",
                    "splitserve_router_kv_transfer_seconds_sum",
                    "splitserve_router_kv_transfer_seconds_count",
                    "splitserve_router_kv_transfer_bytes_sum")


def snapshot(cluster: Any, pids: dict[str, int]) -> dict[str, Any]:
    workers = {c.name: _scrape(c.url) for c in cluster.workers()}
    router = _scrape(cluster.url)
    return {
        "busy_s": {name: next((v for k, v in m.items() if k.startswith(_WORKER_KEYS[0])), 0.0)
                   for name, m in workers.items()},
        "router": {k: v for k, v in router.items() if k.startswith(_ROUTER_PREFIXES)},
        "phase": {f"{name}:{k}": v for name, m in workers.items() for k, v in m.items()
                  if k.startswith(_PHASE_PREFIXES)},
        "cpu_s": {name: _cpu_s(pid) for name, pid in pids.items()},
        "threads": {name: thread_times(pid)
                    for name, pid in {**pids, "bench client": os.getpid()}.items()},
        "client_cpu_s": _self_cpu_s(),
        "machine_cpu_s": machine_cpu_s(),
    }


def delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    def sub(key: str) -> dict[str, float]:
        return {k: round(after[key][k] - before[key].get(k, 0.0), 4) for k in after[key]}

    cpu = sub("cpu_s")
    cpu["bench client"] = round(after["client_cpu_s"] - before["client_cpu_s"], 3)
    machine_s = after["machine_cpu_s"] - before["machine_cpu_s"]
    # per process and thread name: [CPU s, run-queue wait s] of the threads alive at the
    # end (short-lived ones, e.g. a transfer's checksum thread, only in process_cpu_s)
    threads: dict[str, dict[str, list[float]]] = {}
    for proc, names in after["threads"].items():
        was = before["threads"].get(proc, {})
        threads[proc] = {name: [round(t[i] - was.get(name, [0.0, 0.0])[i], 4) for i in (0, 1)]
                         for name, t in names.items()}
    return {"engine_busy_s": sub("busy_s"), "router": sub("router"), "process_cpu_s": cpu,
            "phase_metrics": sub("phase"), "machine_cpu_s": round(machine_s, 3),
            "thread_times_s": threads,
            # CPU seconds of processes not ours (another engineer's work, the system)
            "foreign_cpu_s": round(machine_s - sum(cpu.values()), 3)}
