"""Prometheus exposition of a worker: load, KV blocks, per-phase work and engine steps.

Values are read from the engine at scrape time through a custom collector (no second
copy of the counters to keep in sync).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from splitserve.metrics.step_stats import STEP_KINDS, Histogram, StepSnapshot

if TYPE_CHECKING:
    from splitserve.engine.llm_engine import LLMEngine
    from splitserve.worker.config import WorkerConfig


class _EngineCollector(Collector):
    def __init__(self, cfg: WorkerConfig, engine: LLMEngine) -> None:
        self.cfg = cfg
        self.engine = engine
        self.busy_s = 0.0

    def collect(self) -> Iterator[Metric]:
        labels = ["worker", "role"]
        values = [self.cfg.worker_id, self.cfg.role]
        stats = self.engine.stats()
        for key in ("num_waiting", "num_running", "num_held", "num_free_blocks",
                    "num_used_blocks", "num_cached_blocks", "num_total_blocks"):
            g = GaugeMetricFamily(f"splitserve_worker_{key}", key.replace("_", " "),
                                  labels=labels)
            g.add_metric(values, float(stats.get(key, 0)))
            yield g
        busy = CounterMetricFamily("splitserve_worker_engine_busy_seconds",
                                   "Seconds the engine thread spent in steps", labels=labels)
        busy.add_metric(values, self.busy_s)
        yield busy
        phase = self.engine.phase_counters
        phase_labels = [*labels, "phase"]
        families = (
            ("splitserve_worker_phase_busy_seconds", "Step seconds attributed to a phase",
             phase.busy_s),
            ("splitserve_worker_phase_tokens", "Tokens processed per phase", phase.tokens),
            ("splitserve_worker_phase_flops", "Estimated FLOPs per phase", phase.flops),
            ("splitserve_worker_phase_bytes_read", "Estimated bytes read per phase",
             phase.bytes_read),
        )
        for name, doc, data in families:
            c = CounterMetricFamily(name, doc, labels=phase_labels)
            for ph, v in data.items():
                c.add_metric([*values, ph], float(v))
            yield c
        util = GaugeMetricFamily(
            "splitserve_worker_phase_utilization",
            "MFU (prefill) and MBU (decode) against this device's measured peaks",
            labels=[*labels, "kind"])
        peak_flops, peak_bw = self.engine.device_peaks()
        for kind, v in phase.utilization(peak_flops, peak_bw).items():
            util.add_metric([*values, kind], v)
        yield util
        yield from step_families(labels, values, phase.steps.snapshot())


def _buckets(hist: Histogram) -> list[tuple[str, float]]:
    return [(floatToGoString(edge), float(n)) for edge, n in hist.cumulative()]


def step_families(labels: list[str], values: list[str], snap: StepSnapshot) -> Iterator[Metric]:
    """The engine-step families: steps and step seconds by kind, decode batch sizes and
    prompt tokens per step (see `splitserve.metrics.step_stats`)."""
    kind_labels = [*labels, "kind"]
    steps = CounterMetricFamily("splitserve_worker_steps", "Engine steps by kind (prefill: "
                                "prompt tokens only, decode: decodes only, mixed: both)",
                                labels=kind_labels)
    duration = HistogramMetricFamily("splitserve_worker_step_duration_seconds",
                                     "Engine step duration by step kind", labels=kind_labels)
    for kind in STEP_KINDS:
        hist = snap.step_seconds[kind]
        steps.add_metric([*values, kind], float(hist.count))
        duration.add_metric([*values, kind], _buckets(hist), hist.sum_value)
    yield steps
    yield duration
    batch = HistogramMetricFamily("splitserve_worker_decode_batch_size",
                                  "Decoding sequences per step (steps with decodes)",
                                  labels=labels)
    batch.add_metric(values, _buckets(snap.decode_batch), snap.decode_batch.sum_value)
    yield batch
    prompt = HistogramMetricFamily("splitserve_worker_prefill_tokens_per_step",
                                   "Prompt tokens computed per step (steps with prompt "
                                   "tokens)", labels=labels)
    prompt.add_metric(values, _buckets(snap.prefill_tokens), snap.prefill_tokens.sum_value)
    yield prompt


class WorkerMetrics:
    def __init__(self, cfg: WorkerConfig, engine: LLMEngine) -> None:
        self.registry = CollectorRegistry()
        self.collector = _EngineCollector(cfg, engine)
        self.registry.register(self.collector)

    def render(self, busy_s: float) -> tuple[bytes, str]:
        self.collector.busy_s = busy_s
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
