"""One bench run end to end (probe, plan requests, send, summarize) and rate sweeps.

`run_bench(config)` is what `splitserve bench` does once; `run_sweep` repeats it over
rates with the same seed (so every rate sees the same lengths and prompts) and is the
building block `bench compare` uses per topology.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from splitserve.bench.arrivals import ARRIVAL_KINDS, TraceScaling, arrival_offsets, read_trace
from splitserve.bench.client import (
    BenchError,
    ClientConfig,
    RequestSpec,
    probe_server,
    run_requests,
)
from splitserve.bench.records import RequestRecord
from splitserve.bench.stats import SLO, GoodputResult, goodput_search, summarize
from splitserve.bench.workloads import (
    PRESETS,
    LengthPolicy,
    PromptBuilder,
    Workload,
    get_workload,
    load_tokenizer,
    sample_lengths,
)

SUMMARY_SCHEMA = "splitserve.bench.summary/1"


@dataclass(frozen=True)
class BenchConfig:
    """Everything one run needs; the CLI flags mirror these fields."""

    url: str
    tokenizer_dir: str
    workload: Workload = field(default_factory=lambda: PRESETS["chat"])
    model: str | None = None  # None: the first model the server lists
    arrival: str = "poisson"
    rate_rps: float = 1.0
    burst_size: int = 8
    num_requests: int | None = 100
    duration_s: float | None = None
    seed: int = 0
    length_scale: float = 1.0
    max_model_len: int | None = None  # None: the server's, if it reports one
    chat: bool = False
    text_prompts: bool = False
    timeout_s: float = 300.0
    max_concurrency: int | None = None
    trace: TraceScaling | None = None
    slo: SLO = field(default_factory=SLO)
    label: str | None = None  # names the run in tables and plots (e.g. the topology)
    capture_timeline: bool = False  # per-request router timelines (splitserve's router only)

    def __post_init__(self) -> None:
        if self.arrival not in ARRIVAL_KINDS:
            raise ValueError(f"arrival {self.arrival!r} not in {ARRIVAL_KINDS}")
        if (self.arrival == "trace") != (self.trace is not None):
            raise ValueError("arrival 'trace' and a trace file go together")
        if self.num_requests is None and self.duration_s is None:
            raise ValueError("bound the run: give num_requests and/or duration_s")
        if not self.rate_rps > 0:
            raise ValueError(f"rate_rps must be > 0, got {self.rate_rps}")
        if self.num_requests is not None and self.num_requests < 1:
            raise ValueError(f"num_requests must be >= 1 (or None), got {self.num_requests}")
        if self.burst_size < 1:
            raise ValueError(f"burst_size must be >= 1, got {self.burst_size}")
        LengthPolicy(self.length_scale, self.max_model_len)  # validates both
        # validates timeout_s, duration_s and max_concurrency
        ClientConfig(self.url, "", self.chat, self.timeout_s, self.duration_s,
                     self.max_concurrency)


@dataclass
class BenchResult:
    summary: dict[str, Any]
    records: list[RequestRecord]


def plan_requests(config: BenchConfig, max_model_len: int | None) -> list[RequestSpec]:
    """Arrival times, lengths and prompts for every request of the run (seeded)."""
    policy = LengthPolicy(config.length_scale, max_model_len)
    if config.trace is not None:
        trace = read_trace(config.trace, max_requests=config.num_requests)
        fitted = [LengthPolicy(1.0, max_model_len).apply(t.input_len, t.output_len) for t in trace]
        # In a trace "long" means well above the window's typical prompt.
        cut = 2 * statistics.mean(i for i, _ in fitted) if fitted else 0
        offsets = [t.arrival_s for t in trace]
        lengths = [(i, o, i >= cut) for i, o in fitted]
    else:
        offsets = arrival_offsets(
            config.arrival, config.rate_rps, num_requests=config.num_requests,
            duration_s=config.duration_s, seed=config.seed, burst_size=config.burst_size,
        )
        pairs = sample_lengths(config.workload, len(offsets), config.seed, policy)
        lengths = [(p.input_len, p.output_len, p.is_long) for p in pairs]
    builder = PromptBuilder(load_tokenizer(config.tokenizer_dir), seed=config.seed)
    specs = []
    planned = zip(offsets, lengths, strict=True)
    for index, (offset, (input_len, output_len, is_long)) in enumerate(planned):
        prompt: list[int] | str
        if config.chat or config.text_prompts:
            prompt, input_len = builder.text(input_len)
        else:
            prompt = builder.token_ids(input_len)
        specs.append(RequestSpec(index, offset, prompt, input_len, output_len, is_long))
    return specs


def _metadata(config: BenchConfig, model: str, max_model_len: int | None) -> dict[str, Any]:
    w = config.workload
    return {
        "schema": SUMMARY_SCHEMA,
        "label": config.label,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "url": config.url,
        "model": model,
        "workload": None if config.trace else {
            "name": w.name, "description": w.description,
            "input": dataclasses.asdict(w.input_dist),
            "output": dataclasses.asdict(w.output_dist),
            "long_fraction": w.long_fraction,
        },
        "arrival": config.arrival,
        "rate_rps": None if config.trace else config.rate_rps,
        "seed": config.seed,
        "length_scale": config.length_scale,
        "max_model_len": max_model_len,
        "trace_scaling": config.trace.to_dict() if config.trace else None,
        "api": "chat" if config.chat else "completions",
        "prompt_mode": "text" if (config.chat or config.text_prompts) else "token_ids",
        "bounds": {"num_requests": config.num_requests, "duration_s": config.duration_s,
                   "timeout_s": config.timeout_s, "max_concurrency": config.max_concurrency},
    }


async def run_bench_async(
    config: BenchConfig, on_done: Callable[[RequestRecord], None] | None = None
) -> BenchResult:
    info = await probe_server(config.url)
    model = config.model or (info.model_ids[0] if info.model_ids else None)
    if model is None:
        raise BenchError(f"{config.url} lists no models; pass --model-name")
    max_model_len = config.max_model_len or info.max_model_len
    specs = plan_requests(config, max_model_len)
    client_config = ClientConfig(
        config.url, model, config.chat, config.timeout_s, config.duration_s,
        config.max_concurrency, config.capture_timeline,
    )
    records, wall_s = await run_requests(client_config, specs, on_done)
    sent = [r for r in records if r.send_s is not None]
    if sent and all(r.error and r.error.startswith("connect error") for r in sent):
        raise BenchError(f"server at {config.url} stopped accepting connections: {sent[0].error}")
    summary = {**_metadata(config, model, max_model_len), **summarize(records, wall_s, config.slo)}
    return BenchResult(summary, records)


def run_bench(
    config: BenchConfig, on_done: Callable[[RequestRecord], None] | None = None
) -> BenchResult:
    """One run; raises BenchError when the server cannot be used."""
    return asyncio.run(run_bench_async(config, on_done))


def run_sweep(
    url: str,
    workload: Workload | str,
    rates: Sequence[float],
    *,
    on_result: Callable[[BenchResult], None] | None = None,
    **options: Any,
) -> list[BenchResult]:
    """One run per rate (same seed, so the same requests); `options` are BenchConfig
    fields (tokenizer_dir is required). Returns results in rate order given."""
    if not rates:
        raise ValueError("a sweep needs at least one rate")
    if isinstance(workload, str):
        workload = get_workload(workload)
    results = []
    for rate in rates:
        result = run_bench(BenchConfig(url=url, workload=workload, rate_rps=rate, **options))
        if on_result is not None:
            on_result(result)
        results.append(result)
    return results


def sweep_goodput(summaries: Sequence[dict[str, Any]], target: float = 0.9) -> float:
    """Highest swept rate whose attainment met the target (0.0 if none did)."""
    passing = [
        s["rate_rps"] for s in summaries
        if s.get("slo_attainment") is not None and s["slo_attainment"] >= target
    ]
    return max(passing, default=0.0)


def search_goodput(
    config: BenchConfig, min_rate: float, max_rate: float, target: float = 0.9,
    max_runs: int = 6, on_result: Callable[[BenchResult], None] | None = None,
) -> tuple[GoodputResult, list[BenchResult]]:
    """Bracketing + bisection over real runs (each run costs one bench)."""
    if config.slo.ttft_s is None and config.slo.tpot_s is None:
        raise ValueError("a goodput search needs a TTFT and/or a TPOT SLO")
    results: list[BenchResult] = []

    def attainment_at(rate: float) -> float:
        result = run_bench(dataclasses.replace(config, rate_rps=rate))
        results.append(result)
        if on_result is not None:
            on_result(result)
        return float(result.summary["slo_attainment"] or 0.0)

    found = goodput_search(
        attainment_at, min_rate=min_rate, max_rate=max_rate, target=target, max_runs=max_runs
    )
    return found, results
