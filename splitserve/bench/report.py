"""Output of a run: per-request JSONL, summary JSON, and a printed table."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from splitserve.bench.records import RequestRecord

LAG_WARNING_S = 0.05


def write_records(path: str, records: Sequence[RequestRecord]) -> None:
    """One JSON object per line per request (sent or not: unsent have send_s null)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        for record in records:
            f.write(json.dumps(record.to_dict()) + "\n")


def read_records(path: str) -> list[RequestRecord]:
    with open(path) as f:
        return [RequestRecord.from_dict(json.loads(line)) for line in f if line.strip()]


def write_json(path: str, data: Any) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def _row_label(summary: dict[str, Any]) -> str:
    label = summary.get("label")
    rate = summary.get("rate_rps")
    parts = [str(label)] if label else []
    parts.append("trace" if rate is None else f"{rate:g} rps")
    return " ".join(parts)


def format_table(summaries: Sequence[dict[str, Any]]) -> str:
    """A fixed-width table, one row per run: counts, throughput, latency percentiles (ms),
    attainment."""
    header = (
        f"{'run':<22}{'sent':>6}{'ok':>6}{'fail':>6}{'req/s':>8}{'tok/s':>9}"
        f"{'TTFT p50':>10}{'p90':>8}{'p99':>8}{'TPOT p50':>10}{'p90':>8}{'p99':>8}"
        f"{'ITL p50':>9}{'p99':>8}{'E2E p50':>9}{'SLO ok':>8}"
    )
    lines = [header, "-" * len(header)]
    for s in summaries:
        att = s.get("slo_attainment")
        ttft, tpot, itl, e2e = s["ttft_s"], s["tpot_s"], s["itl_s"], s["e2e_s"]
        lines.append(
            f"{_row_label(s)[:21]:<22}{s['sent']:>6}{s['completed']:>6}{s['failed']:>6}"
            f"{s['request_throughput_rps']:>8.2f}{s['output_throughput_tps']:>9.1f}"
            f"{_ms(ttft['p50']):>10}{_ms(ttft['p90']):>8}{_ms(ttft['p99']):>8}"
            f"{_ms(tpot['p50']):>10}{_ms(tpot['p90']):>8}{_ms(tpot['p99']):>8}"
            f"{_ms(itl['p50']):>9}{_ms(itl['p99']):>8}{_ms(e2e['p50']):>9}"
            f"{'-' if att is None else f'{att:.0%}':>8}"
        )
    notes = {s["trace_scaling"]["description"] for s in summaries if s.get("trace_scaling")}
    notes |= {
        f"lengths / {s['length_scale']:g}" for s in summaries
        if not s.get("trace_scaling") and s.get("length_scale", 1) != 1
    }
    lines += [f"scaling: {n}" for n in sorted(notes)]
    for s in summaries:
        lag = (s.get("send_lag_s") or {}).get("p99")
        bounds = s.get("bounds") or {}
        if lag is not None and lag > LAG_WARNING_S and not bounds.get("max_concurrency"):
            lines.append(
                f"warning: {_row_label(s)}: p99 send lag {lag * 1000:.0f} ms: the client fell "
                "behind its arrival schedule, so the offered rate was lower than asked"
            )
    errors: dict[str, int] = {}
    for s in summaries:
        for msg, count in s.get("errors", {}).items():
            errors[msg] = errors.get(msg, 0) + count
    lines += [f"error x{count}: {msg}" for msg, count in sorted(errors.items())[:5]]
    return "\n".join(lines)


def save_run(out_dir: str, name: str, summary: dict[str, Any],
             records: Sequence[RequestRecord]) -> dict[str, str]:
    """Writes NAME.jsonl and NAME.summary.json under out_dir; returns their paths."""
    paths = {
        "records": os.path.join(out_dir, f"{name}.jsonl"),
        "summary": os.path.join(out_dir, f"{name}.summary.json"),
    }
    write_records(paths["records"], records)
    write_json(paths["summary"], summary)
    return paths
