"""PNG plots over labelled runs (label -> records or summaries), e.g. per topology.

matplotlib is imported inside each function with the Agg backend, so importing this
module is cheap and never needs a display.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from splitserve.bench.records import RequestRecord


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def _legend(ax: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center")


def _cdf(ax: Any, values: Sequence[float], label: str) -> None:
    ordered = sorted(values)
    if not ordered:
        return
    n = len(ordered)
    ax.step([v * 1000 for v in ordered], [(i + 1) / n for i in range(n)], where="post",
            label=f"{label} (n={n})")


def plot_ttft_cdf(runs: Mapping[str, Sequence[RequestRecord]], path: str) -> str:
    """CDF of time to first token per label (successful requests)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, records in runs.items():
        _cdf(ax, [r.ttft_s for r in records if r.success and r.ttft_s is not None], label)
    ax.set(xlabel="TTFT (ms)", ylabel="fraction of requests", title="Time to first token")
    ax.grid(alpha=0.3)
    _legend(ax)
    return _save(fig, path)


def plot_itl_cdf(runs: Mapping[str, Sequence[RequestRecord]], path: str) -> str:
    """CDF of every inter-token gap per label, log x so stalls show."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, records in runs.items():
        _cdf(ax, [g for r in records if r.success for g in r.itl_s if g > 0], label)
    ax.set(xlabel="inter-token gap (ms)", ylabel="fraction of gaps", xscale="log",
           title="Inter-token latency")
    ax.grid(alpha=0.3)
    _legend(ax)
    return _save(fig, path)


def plot_attainment_vs_rate(
    runs: Mapping[str, Sequence[dict[str, Any]]], path: str, target: float = 0.9
) -> str:
    """SLO attainment against request rate, one line per label (e.g. topology)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, summaries in runs.items():
        points = sorted(
            (s["rate_rps"], s["slo_attainment"]) for s in summaries
            if s.get("rate_rps") is not None and s.get("slo_attainment") is not None
        )
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    ax.axhline(target, color="grey", linestyle="--", label=f"target {target:.0%}")
    ax.set(xlabel="request rate (req/s)", ylabel="SLO attainment", ylim=(0, 1.05),
           title="SLO attainment vs rate")
    ax.grid(alpha=0.3)
    _legend(ax)
    return _save(fig, path)


def longest_stream(records: Sequence[RequestRecord]) -> RequestRecord | None:
    """The successful request with the most inter-token gaps."""
    streams = [r for r in records if r.success and r.itl_s and r.send_s is not None]
    return max(streams, key=lambda r: len(r.itl_s), default=None)


def stream_timeline(record: RequestRecord) -> tuple[list[float], list[float]]:
    """(time since run start of each gap's end, gap) for one stream, in seconds."""
    assert record.send_s is not None and record.ttft_s is not None
    t = record.send_s + record.ttft_s
    times, gaps = [], []
    for gap in record.itl_s:
        t += gap
        times.append(t)
        gaps.append(gap)
    return times, gaps


def plot_stream_timelines(runs: Mapping[str, Sequence[RequestRecord]], path: str) -> str:
    """For each label, the longest stream's inter-token gaps over time, with the send times
    of long prompts (records marked `is_long`) drawn as vertical lines: a prefill that
    stalls the decode batch shows as a spike right after a line."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(runs), 1, figsize=(8, 2.6 * max(1, len(runs))), squeeze=False)
    for ax, (label, records) in zip(axes[:, 0], runs.items(), strict=True):
        stream = longest_stream(records)
        ax.set(title=label, ylabel="gap (ms)")
        ax.grid(alpha=0.3)
        if stream is None:
            ax.text(0.5, 0.5, "no completed stream", transform=ax.transAxes, ha="center")
            continue
        times, gaps = stream_timeline(stream)
        ax.plot(times, [g * 1000 for g in gaps], linewidth=0.8,
                label=f"request {stream.index} ({len(gaps) + 1} chunks)")
        longs = [r.send_s for r in records
                 if r.is_long and r.send_s is not None and times[0] - 1 <= r.send_s <= times[-1]]
        for i, t in enumerate(longs):
            ax.axvline(t, color="red", alpha=0.5, linestyle=":",
                       label="long prompt sent" if i == 0 else None)
        ax.legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("time since run start (s)")
    return _save(fig, path)
