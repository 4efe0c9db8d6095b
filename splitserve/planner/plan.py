"""`plan`: search both architectures for one workload and rate, and price the answer."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from splitserve.planner.search import (
    Evaluator,
    Layout,
    PlanSetup,
    best_colocated,
    best_disaggregated,
    max_goodput,
)
from splitserve.planner.workload import Requests

MIN_SAVING = 0.05  # below this, splitting is not worth its operational cost


def describe(
    setup: PlanSetup,
    ev: Evaluator,
    layout: Layout | None,
    requests: Requests,
    with_goodput: bool = True,
) -> dict[str, Any] | None:
    """Price and measure one layout at the workload's rate."""
    if layout is None:
        return None
    result = ev.run(layout, requests, early_stop=False)
    rate = requests.rate
    mean_out = float(np.mean(requests.output_len))
    cost_h = setup.cost_per_hour(layout)
    out: dict[str, Any] = {
        "layout": layout.label(),
        **asdict(layout),
        "num_gpus": layout.num_gpus,
        "cost_per_hour": cost_h,
        "rate_per_gpu": rate / layout.num_gpus,
        "cost_per_million_output_tokens": cost_h / 3600 / (rate * mean_out) * 1e6,
        **result.summary(setup.slo),
    }
    if with_goodput:
        goodput = max_goodput(ev, layout, requests)
        out["max_goodput_rps"] = goodput
        out["goodput_per_gpu_rps"] = goodput / layout.num_gpus
    return out


def recommend(
    colocated: dict[str, Any] | None, split: dict[str, Any] | None
) -> tuple[str, float | None]:
    if colocated is None and split is None:
        return (
            "no fleet up to the search limit meets the SLO: relax it or use a larger accelerator",
            None,
        )
    if split is None:
        return "don't split: no disaggregated layout meets the SLO", None
    if colocated is None:
        return f"split: {split['layout']} (no colocated fleet meets the SLO)", None
    saving = 1 - split["cost_per_hour"] / colocated["cost_per_hour"]
    if saving >= MIN_SAVING:
        return f"split: {split['layout']} saves {saving:.0%} against {colocated['layout']}", saving
    return (
        f"don't split: {colocated['layout']} costs the same or less "
        f"(split would save {saving:.0%})",
        saving,
    )


def run_plan(setup: PlanSetup, requests: Requests, with_goodput: bool = True) -> dict[str, Any]:
    """Cheapest colocated fleet, cheapest split, and the recommendation, as a JSON-able dict."""
    start = time.perf_counter()
    ev = Evaluator(setup)
    colo_layout = best_colocated(ev, requests)
    split_layout = best_disaggregated(ev, requests)
    colocated = describe(setup, ev, colo_layout, requests, with_goodput)
    split = describe(setup, ev, split_layout, requests, with_goodput)
    text, saving = recommend(colocated, split)
    return {
        "model": setup.model.name,
        "hardware": setup.hardware.name,
        "price_per_gpu_hour": setup.hardware.price_per_hour,
        "workload": requests.source,
        "num_requests": len(requests),
        "rate_rps": requests.rate,
        "mean_input_len": float(np.mean(requests.input_len)),
        "mean_output_len": float(np.mean(requests.output_len)),
        "slo": asdict(setup.slo),
        "kv_link": setup.kv_link,
        "local_prefill_max_len": setup.local_prefill_max_len,
        "colocated": colocated,
        "disaggregated": split,
        "saving": saving,
        "recommendation": text,
        "num_simulations": ev.num_sims,
        "search_s": time.perf_counter() - start,
    }


def format_table(plan: dict[str, Any]) -> str:
    rows = [("", "colocated", "disaggregated")]

    def cell(side: str, key: str, fmt: str) -> str:
        d = plan[side]
        if d is None:
            return "none meets SLO" if key == "layout" else "-"
        value = d.get(key)
        return "-" if value is None else format(value, fmt)

    for title, key, fmt in (
        ("layout", "layout", "s"),
        ("GPUs", "num_gpus", "d"),
        ("$/hour", "cost_per_hour", ".2f"),
        ("$/M output tokens", "cost_per_million_output_tokens", ".3f"),
        ("SLO attainment", "attainment", ".3f"),
        ("p90 TTFT s", "p90_ttft_s", ".3f"),
        ("p90 TPOT s", "p90_tpot_s", ".4f"),
        ("max goodput req/s", "max_goodput_rps", ".2f"),
        ("goodput/GPU req/s", "goodput_per_gpu_rps", ".3f"),
    ):
        rows.append((title, cell("colocated", key, fmt), cell("disaggregated", key, fmt)))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [
        f"{plan['model']} on {plan['hardware']}, {plan['workload']}: {plan['rate_rps']:.2f} req/s, "
        f"SLO p{plan['slo']['attainment'] * 100:.0f} TTFT {plan['slo']['ttft_s']} s / "
        f"TPOT {plan['slo']['tpot_s']} s"
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.append(f"recommendation: {plan['recommendation']}")
    return "\n".join(lines)


def attainment_curve(
    setup: PlanSetup, layout: Layout, requests: Requests, rates: list[float]
) -> list[float]:
    ev = Evaluator(setup)
    return [
        ev.run(layout, requests.with_rate(r), early_stop=False).attainment(setup.slo) for r in rates
    ]


def plot_attainment(
    setup: PlanSetup, plan: dict[str, Any], requests: Requests, path: Path, num_points: int = 8
) -> dict[str, Any]:
    """Attainment against rate for both chosen fleets; returns the plotted numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rate = requests.rate
    rates = [float(x) for x in np.linspace(0.25 * rate, 2.0 * rate, num_points)]
    curves: dict[str, Any] = {"rates_rps": rates}
    fig, ax = plt.subplots(figsize=(6, 4))
    for side in ("colocated", "disaggregated"):
        d = plan[side]
        if d is None:
            continue
        layout = Layout(
            d["num_prefill"], d["tp_prefill"], d["num_decode"], d["tp_decode"], d["token_budget"]
        )
        values = attainment_curve(setup, layout, requests, rates)
        curves[side] = values
        ax.plot(rates, values, marker="o", label=f"{side}: {d['layout']}")
    ax.axhline(setup.slo.attainment, color="gray", linestyle="--", label="target")
    ax.axvline(rate, color="gray", linestyle=":")
    ax.set_xlabel("arrival rate (req/s)")
    ax.set_ylabel("SLO attainment")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{plan['model']} on {plan['hardware']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return curves
