"""`bench compare`: colocated against disaggregated serving on the same cores.

For each topology (e.g. `2m` = two mixed workers, `1p1d` = one prefill + one decode
worker) a local cluster is started with `splitserve.cluster.launcher.Cluster` on the same
cores, the same seeded workload is run at every rate (or the same trace is replayed once),
and the cluster is stopped (always: try/finally) before the next one starts. Results are
written side by side: `compare.json`, per-run JSONL + summary, and PNG plots.

Attainment and goodput are computed for every named SLO from the same runs, so a
TTFT-bound and a TPOT-bound SLO can be compared without rerunning.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from splitserve.bench import report
from splitserve.bench.compare_plots import plot_comparison, run_name
from splitserve.bench.records import RequestRecord
from splitserve.bench.runner import BenchConfig, BenchResult, run_bench
from splitserve.bench.stats import SLO, attainment, describe

COMPARE_SCHEMA = "splitserve.bench.compare/1"
_TOPOLOGY = re.compile(r"^(?:(\d+)m|(\d+)p(\d+)d)$")


@dataclass(frozen=True)
class Topology:
    """Worker counts of one cluster; `name` is its compact spelling (`2m`, `1p1d`)."""

    name: str
    num_prefill: int = 0
    num_decode: int = 0
    num_mixed: int = 0

    def __post_init__(self) -> None:
        if min(self.num_prefill, self.num_decode, self.num_mixed) < 0:
            raise ValueError(f"topology {self.name!r}: worker counts must be >= 0")
        if (self.num_prefill == 0) != (self.num_decode == 0):
            raise ValueError(f"topology {self.name!r} needs both prefill and decode workers")
        if self.num_workers == 0:
            raise ValueError(f"topology {self.name!r} has no workers")

    @property
    def num_workers(self) -> int:
        return self.num_prefill + self.num_decode + self.num_mixed

    @property
    def label(self) -> str:
        if self.num_mixed and not self.num_prefill:
            return f"colocated {self.num_mixed}x mixed"
        if not self.num_mixed:
            return f"disaggregated {self.num_prefill}P{self.num_decode}D"
        return f"hybrid {self.num_prefill}P{self.num_decode}D+{self.num_mixed}M"

    @classmethod
    def parse(cls, text: str) -> Topology:
        """`Km` (K mixed workers) or `XpYd` (X prefill + Y decode workers)."""
        match = _TOPOLOGY.match(text.strip().lower())
        if not match:
            raise ValueError(f"topology must look like '2m' or '1p1d', got {text!r}")
        mixed, prefill, decode = match.groups()
        if mixed is not None:
            return cls(text.strip().lower(), num_mixed=int(mixed))
        return cls(text.strip().lower(), num_prefill=int(prefill), num_decode=int(decode))


@dataclass(frozen=True)
class CompareConfig:
    """What to compare. `bench` is the run template: its url is replaced by each cluster's,
    its rate by each of `rates` (no rates: one run, e.g. a trace replay)."""

    model_dir: str
    bench: BenchConfig
    topologies: tuple[Topology, ...]
    rates: tuple[float, ...] = ()
    slos: Mapping[str, SLO] = field(default_factory=dict)
    target: float = 0.9
    cores: tuple[int, ...] | None = None
    worker_args: tuple[str, ...] = ()
    router_args: tuple[str, ...] = ()
    ready_timeout_s: float = 300.0
    max_per_topology_s: float | None = None  # no new run on a cluster after S s of it
    out_dir: str | None = None
    log_dir: str | None = None  # cluster logs (default: a fresh temporary folder per cluster)

    def __post_init__(self) -> None:
        if len(self.topologies) < 1:
            raise ValueError("compare needs at least one topology")
        sizes = {t.num_workers for t in self.topologies}
        if len(sizes) != 1:
            raise ValueError(
                "topologies must have the same number of workers to share the cores equally, "
                f"got {[t.name for t in self.topologies]}")
        if len({t.name for t in self.topologies}) != len(self.topologies):
            raise ValueError("topologies must be distinct")
        if any(r <= 0 for r in self.rates):
            raise ValueError(f"rates must be > 0, got {self.rates}")
        if self.bench.trace is not None and self.rates:
            raise ValueError("a trace replay sets its own arrivals: give no rates")
        if not 0 < self.target <= 1:
            raise ValueError(f"target must be in (0, 1], got {self.target}")
        if self.max_per_topology_s is not None and self.max_per_topology_s <= 0:
            raise ValueError(f"max_per_topology_s must be > 0, got {self.max_per_topology_s}")


def attainments(records: Sequence[RequestRecord], slos: Mapping[str, SLO]) -> dict[str, float]:
    """Attainment of every named SLO over the sent requests of one run (failed ones are
    misses), as the summary's `slo_attainment` counts it."""
    sent = [r for r in records if r.send_s is not None]
    return {name: float(attainment(sent, slo) or 0.0) for name, slo in slos.items()}


def gap_stats(records: Sequence[RequestRecord]) -> dict[str, Any]:
    """ITL split in two: each stream's first gap (under disaggregation it holds the KV
    handoff: pull, then admission into the decode batch) and all later gaps (steady decode,
    where a colocated prefill shows as a stall)."""
    done = [r for r in records if r.success and r.itl_s]
    return {"first_itl_s": describe([r.itl_s[0] for r in done]),
            "itl_after_first_s": describe([g for r in done for g in r.itl_s[1:]])}


def goodput_by_slo(summaries: Sequence[dict[str, Any]], target: float) -> dict[str, float]:
    """Per SLO name: highest run rate whose attainment met the target (0.0 if none)."""
    names = {name for s in summaries for name in s.get("attainment_by_slo", {})}
    out = {}
    for name in sorted(names):
        passing = [s["rate_rps"] for s in summaries if s.get("rate_rps") is not None
                   and s["attainment_by_slo"].get(name, 0.0) >= target]
        out[name] = max(passing, default=0.0)
    return out


def _start(config: CompareConfig, topology: Topology, log_dir: str | None) -> Any:
    if log_dir is not None:
        log_dir = os.path.join(log_dir, topology.name)
    from splitserve.cluster.launcher import Cluster, ClusterSpec, free_port

    worker_args = config.worker_args
    if not any("prefix-caching" in arg for arg in worker_args):
        # every rate (and topology) replays the same seeded prompts: with prefix caching on,
        # later runs on the same cluster would skip most of their prefill
        worker_args = ("--no-enable-prefix-caching", *worker_args)
    spec = ClusterSpec(
        model_dir=config.model_dir, num_prefill=topology.num_prefill,
        num_decode=topology.num_decode, num_mixed=topology.num_mixed,
        router_port=free_port(), cores=config.cores, worker_args=worker_args,
        router_args=config.router_args, ready_timeout_s=config.ready_timeout_s,
        log_dir=log_dir)
    cluster = Cluster(spec)
    cluster.start()  # stops what it started if it fails
    return cluster


ROUTER_COUNTERS = ("splitserve_router_routing_decisions_total",
                   "splitserve_router_kv_transfer_seconds_sum",
                   "splitserve_router_kv_transfer_seconds_count",
                   "splitserve_router_retries_total")


def router_counters(url: str) -> dict[str, float]:
    """Routing decisions by kind and KV handoff totals from the router's /metrics (parsed
    with prometheus_client); {} when the router does not answer."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = httpx.get(f"{url}/metrics", timeout=5.0).text
        families = list(text_string_to_metric_families(text))
    except (httpx.HTTPError, ValueError):
        return {}
    out = {}
    for family in families:
        for sample in family.samples:
            if sample.name in ROUTER_COUNTERS:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def _delta(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}


def run_compare(
    config: CompareConfig, on_result: Callable[[Topology, BenchResult], None] | None = None
) -> dict[str, Any]:
    """Run every topology in turn; returns (and writes, with out_dir) the comparison."""
    started = time.monotonic()
    load_before = os.getloadavg()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rates: list[float | None] = list(config.rates) or [None]
    results: dict[str, list[BenchResult]] = {}
    skipped: list[dict[str, Any]] = []
    log_dirs: dict[str, str] = {}
    for topology in config.topologies:
        results[topology.name] = []
        cluster = _start(config, topology, config.log_dir)
        topology_started = time.monotonic()
        log_dirs[topology.name] = str(cluster.log_dir)
        try:
            for rate in rates:
                limit_s = config.max_per_topology_s
                if limit_s is not None and time.monotonic() - topology_started > limit_s:
                    skipped.append({"topology": topology.name, "rate_rps": rate,
                                    "reason": f"max_per_topology_s={limit_s:g} reached"})
                    continue
                bench = dataclasses.replace(
                    config.bench, url=cluster.url, label=topology.label,
                    rate_rps=rate if rate is not None else config.bench.rate_rps)
                counters_before = router_counters(cluster.url)
                result = run_bench(bench)
                result.summary["router_counters"] = _delta(router_counters(cluster.url),
                                                           counters_before)
                result.summary["topology"] = topology.name
                result.summary["attainment_by_slo"] = attainments(result.records, config.slos)
                result.summary.update(gap_stats(result.records))
                results[topology.name].append(result)
                if on_result is not None:
                    on_result(topology, result)
        finally:
            cluster.stop()
    comparison = {
        "schema": COMPARE_SCHEMA,
        "started_at": started_at,
        "model_dir": config.model_dir,
        "cores": list(config.cores) if config.cores else sorted(os.sched_getaffinity(0)),
        "worker_args": list(config.worker_args),
        "router_args": list(config.router_args),
        "topologies": [dict(dataclasses.asdict(t), label=t.label) for t in config.topologies],
        "rates_rps": list(config.rates),
        "slos": {name: dataclasses.asdict(slo) for name, slo in config.slos.items()},
        "target": config.target,
        "runs": {name: [r.summary for r in rs] for name, rs in results.items()},
        "goodput_rps": {name: goodput_by_slo([r.summary for r in rs], config.target)
                        for name, rs in results.items()} if config.rates else None,
        "skipped": skipped,
        "log_dirs": log_dirs,
        "loadavg_before": list(load_before),
        "loadavg_after": list(os.getloadavg()),
        "wall_s": round(time.monotonic() - started, 1),
    }
    if config.out_dir:
        write_outputs(config, comparison, results)
    return comparison


def write_outputs(config: CompareConfig, comparison: dict[str, Any],
                  results: Mapping[str, list[BenchResult]]) -> dict[str, str]:
    """compare.json, per-run files under <out>/<topology>/, and the PNG plots."""
    out = config.out_dir
    assert out is not None
    for name, rs in results.items():
        for result in rs:
            report.save_run(os.path.join(out, name), run_name(result.summary),
                            result.summary, result.records)
    paths = {"json": os.path.join(out, "compare.json")}
    report.write_json(paths["json"], comparison)
    records = {name: {run_name(r.summary): r.records for r in rs}
               for name, rs in results.items()}
    return {**paths, **plot_comparison(out, comparison, records)}


def format_comparison(comparison: dict[str, Any]) -> str:
    """The side-by-side table, goodput per SLO, ITL tail ratios and the load average."""
    # rows named by the compact topology name: the table cuts labels at 21 characters
    summaries = [dict(s, label=name) for name, runs in comparison["runs"].items() for s in runs]
    lines = [", ".join(f"{t['name']} = {t['label']}" for t in comparison["topologies"])]
    lines += [report.format_table(summaries)] if summaries else ["(no runs)"]
    for name, runs in comparison["runs"].items():
        for s in runs:
            itl, later = s["itl_s"], s.get("itl_after_first_s") or {}
            first = (s.get("first_itl_s") or {}).get("p50")
            if itl["p50"]:
                text = f"{name} {run_name(s)}: ITL p99/p50 = {itl['p99'] / itl['p50']:.1f}"
                if later.get("p50") and first is not None:
                    text += (f" (after each stream's first gap {later['p99'] / later['p50']:.1f};"
                             f" first gap p50 {first * 1000:.0f} ms)")
                lines.append(text + "".join(f", {k} {v:.0%}"
                                            for k, v in s["attainment_by_slo"].items()))
    for name, by_slo in (comparison.get("goodput_rps") or {}).items():
        text = ", ".join(f"{slo} {rps:g} req/s" for slo, rps in by_slo.items())
        lines.append(f"goodput {name}: {text or '-'}")
    for skip in comparison["skipped"]:
        lines.append(f"skipped {skip['topology']} @ {skip['rate_rps']}: {skip['reason']}")
    before, after = comparison["loadavg_before"], comparison["loadavg_after"]
    lines.append(f"load average before {before[0]:.2f}, after {after[0]:.2f} "
                 f"(1-min; other processes on these cores add noise)")
    return "\n".join(lines)
