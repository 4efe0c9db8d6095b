"""PNG plots of a comparison (`compare.json` + per-run JSONL), from memory or from disk.

The timeline shows the same request (same seeded index) in every topology: the stream
that was in flight while the most long prompts were sent, so a colocated stall (a long
prefill sharing the worker's steps) and its absence under disaggregation show side by side.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from splitserve.bench import plots, report
from splitserve.bench.records import RequestRecord


def run_name(summary: Mapping[str, Any]) -> str:
    rate = summary.get("rate_rps")
    return "trace" if rate is None else f"rate_{rate:g}"


def _overlapping_longs(stream: RequestRecord, records: Sequence[RequestRecord]) -> int:
    assert stream.send_s is not None and stream.e2e_s is not None
    start, end = stream.send_s, stream.send_s + stream.e2e_s
    return sum(1 for r in records if r.is_long and r.index != stream.index
               and r.send_s is not None and start <= r.send_s <= end)


def pick_timeline_stream(runs: Mapping[str, Sequence[RequestRecord]]) -> int | None:
    """Index of the request, successful in every run, that overlapped the most long-prompt
    sends (summed over runs); ties go to the stream with the most gaps."""
    candidates: set[int] | None = None
    for records in runs.values():
        ok = {r.index for r in records if r.success and r.itl_s and not r.is_long}
        candidates = ok if candidates is None else candidates & ok
    if not candidates:
        return None

    def score(index: int) -> tuple[int, int]:
        total, gaps = 0, 0
        for records in runs.values():
            stream = next(r for r in records if r.index == index)
            total += _overlapping_longs(stream, records)
            gaps = max(gaps, len(stream.itl_s))
        return total, gaps

    return max(sorted(candidates), key=score)


def timeline_inputs(runs: Mapping[str, Sequence[RequestRecord]]) -> dict[str, list[RequestRecord]]:
    """Per run: the chosen stream plus the long prompts as gap-less markers, the shape
    `plots.plot_stream_timelines` (which draws the longest stream it is given) expects."""
    index = pick_timeline_stream(runs)
    if index is None:
        return {label: [] for label in runs}
    return {label: [r if r.index == index else dataclasses.replace(r, itl_s=[])
                    for r in records if r.index == index or r.is_long]
            for label, records in runs.items()}


def _picked_runs(comparison: Mapping[str, Any],
                 records: Mapping[str, Mapping[str, list[RequestRecord]]]
                 ) -> dict[str, list[RequestRecord]]:
    """Records of one run per topology: the highest rate every topology ran (or the trace)."""
    common: set[str] | None = None
    for by_run in records.values():
        common = set(by_run) if common is None else common & set(by_run)
    if not common:
        return {}
    rates = {run_name(s): s.get("rate_rps") for runs in comparison["runs"].values()
             for s in runs}
    pick = max(common, key=lambda name: rates.get(name) or 0.0)
    label = {t["name"]: t["label"] for t in comparison["topologies"]}
    return {label[name]: by_run[pick] for name, by_run in records.items()}


def plot_comparison(out_dir: str, comparison: Mapping[str, Any],
                    records: Mapping[str, Mapping[str, list[RequestRecord]]]) -> dict[str, str]:
    """All PNGs of one comparison; `records` is topology name -> run name -> records."""
    paths = {}
    label = {t["name"]: t["label"] for t in comparison["topologies"]}
    if comparison["rates_rps"]:
        for slo_name in comparison["slos"]:
            runs = {label[name]: [dict(s, slo_attainment=s["attainment_by_slo"][slo_name])
                                  for s in summaries]
                    for name, summaries in comparison["runs"].items()}
            paths[f"attainment_{slo_name}"] = plots.plot_attainment_vs_rate(
                runs, os.path.join(out_dir, f"attainment_{slo_name}.png"),
                target=comparison["target"])
    picked = _picked_runs(comparison, records)
    if picked:
        paths["itl_cdf"] = plots.plot_itl_cdf(picked, os.path.join(out_dir, "itl_cdf.png"))
        paths["ttft_cdf"] = plots.plot_ttft_cdf(picked, os.path.join(out_dir, "ttft_cdf.png"))
        paths["timeline"] = plots.plot_stream_timelines(
            timeline_inputs(picked), os.path.join(out_dir, "timeline.png"))
    return paths


def replot(out_dir: str) -> dict[str, str]:
    """Redraw the PNGs of a stored comparison (compare.json + <topology>/<run>.jsonl)."""
    with open(os.path.join(out_dir, "compare.json")) as f:
        comparison = json.load(f)
    records = {name: {run_name(s): report.read_records(
                          os.path.join(out_dir, name, f"{run_name(s)}.jsonl"))
                      for s in summaries}
               for name, summaries in comparison["runs"].items()}
    return plot_comparison(out_dir, comparison, records)
