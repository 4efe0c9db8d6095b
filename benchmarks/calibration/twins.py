"""Each repeat against its twins: the noise floor of the judged comparison.

A judged point is made three times with the same requests. Hold one repeat out; pool the
other two (its twins) and place the quantile SLOs on them as `pooled.judge` does. Then
ask two forecasts of the held-out repeat how far they land from the twins: the repeat
itself (what an identical real rerun gives) and the simulation of that repeat (its own
send times, its own gauge). Where the real repeat misses its twins by more than a target
as often as the simulation does, the target is below what this machine repeats to, and
no simulator can be judged finer than that here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.calibration import pooled
from benchmarks.calibration.report import TARGETS

REAL = "real twin"  # the forecast "an identical real rerun"


def _p90(arrays: dict[str, np.ndarray], key: str) -> float:
    values = arrays[key][arrays["finished"]]
    values = values[np.isfinite(values)]
    return float(np.quantile(values, 0.9)) if len(values) else float("nan")


def differences(rows: list[dict[str, Any]], arrays: list[dict[str, Any]],
                variants: tuple[str, ...]) -> dict[str, dict[str, list[float]]]:
    """Per forecast (REAL and each variant) and measure: the signed differences, one per
    held-out quiet repeat of every point with at least three (p90s relative, attainment
    at the twins' quantile SLOs in points)."""
    groups: dict[tuple[str, float], list[int]] = {}
    for i, row in enumerate(rows):
        if not row.get("contaminated"):
            groups.setdefault((row["topology"], row["rate_rps"]), []).append(i)
    out: dict[str, dict[str, list[float]]] = {k: {} for k in (REAL, *variants)}
    for members in groups.values():
        if len(members) < 3:
            continue
        for i in members:
            twins = pooled.pool([arrays[j]["real"] for j in members if j != i])
            slos = pooled._quantile_slos(twins)
            for name in (REAL, *variants):
                forecast = arrays[i]["real" if name == REAL else name]
                d = out[name]
                for key in ("ttft_s", "tpot_s"):
                    ref = _p90(twins, key)
                    d.setdefault(f"p90_{key[:-2]}_rel_err", []).append(
                        _p90(forecast, key) / ref - 1)
                for q, slo in slos.items():
                    d.setdefault(f"attainment_pp@{q}", []).append(100 * (
                        pooled._attainment(forecast, *slo) - pooled._attainment(twins, *slo)))
    return out


def summarize(diffs: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, Any]]:
    """Per forecast and measure: how many land within the target, median |difference|."""
    out: dict[str, dict[str, Any]] = {}
    for name, by_key in diffs.items():
        out[name] = {}
        for key, values in by_key.items():
            a = np.abs(np.array(values))
            a = a[np.isfinite(a)]
            target = TARGETS.get(key, 3.0)
            out[name][key] = {"num_within_target": int((a <= target + 1e-12).sum()),
                              "of": len(a), "median_abs": float(np.median(a)) if len(a)
                              else None, "bias": float(np.nanmean(values)) if len(a) else None}
    return out


def markdown(summary: dict[str, dict[str, Any]]) -> str:
    keys = sorted({k for by_key in summary.values() for k in by_key})
    lines = ["| forecast of a held-out repeat | " + " | ".join(
        f"{k} within target (median abs)" for k in keys) + " |",
        "|---|" + "---|" * len(keys)]
    for name, by_key in summary.items():
        cells = []
        for k in keys:
            s = by_key.get(k)
            if not s or s["median_abs"] is None:
                cells.append("-")
                continue
            med = (f"{s['median_abs']:.0%}" if k.endswith("rel_err")
                   else f"{s['median_abs']:.1f} pp")
            cells.append(f"{s['num_within_target']}/{s['of']} ({med})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
