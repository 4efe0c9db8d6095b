"""The KV link as the probe prices it against the judged runs' own transfers, on every
committed split measurement: a check of `link_fit.fit_link_transfers` (the
`steps_load_xfer` variant's link), and where a handoff's time goes.

Per measurement's 1P1D topology: the link fitted on the probe's clean phases (as the
variant fits it) and the same fit over the judged runs' transfers; least squares of the
judged transfers' seconds on their bytes, split by whether the prefill worker computed
another prompt during the transfer (`link_fit.source_busy_shares`: > 0.9 busy, < 0.1
idle); the medians of the handoff's parts (hop, admission, transfer, join + first step)
per probe phase and over the judged runs.

    PYTHONPATH=. python benchmarks/calibration_transfers.py \
        --out benchmarks/results/calibration_transfers.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.calibration.fit_steps import clean_phases
from benchmarks.calibration.link_fit import fit_link_transfers, source_busy_shares, transfers
from benchmarks.calibration.rawfile import read_raw
from benchmarks.calibration.variants import DEFAULT_LINK

RESULTS = Path(__file__).resolve().parent / "results"
_STAMPS = ("prefill.engine_first_token_s", "decode.worker_received_s",
           "decode.kv_transfer_start_s", "decode.kv_transfer_end_s",
           "decode.engine_first_token_s")
PARTS = ("hop", "admission", "transfer", "join_and_step")


def handoff_parts(records: list[dict[str, Any]]) -> dict[str, float] | None:
    """Median seconds of each part of the successful handoffs; None without any."""
    rows = []
    for r in records:
        tl = r.get("timeline") or {}
        if r["success"] and all(tl.get(k) is not None for k in _STAMPS):
            t = [tl[k] for k in _STAMPS]
            rows.append([b - a for a, b in zip(t, t[1:], strict=False)])
    if not rows:
        return None
    med = np.median(np.array(rows), axis=0)
    return {"num": len(rows), **{p: round(float(v), 5) for p, v in zip(PARTS, med, strict=True)}}


def line(points: list[tuple[float, float]]) -> dict[str, float] | None:
    """Least squares seconds = latency + bytes / bytes_s; None with under 3 points or a
    slope that is not positive."""
    if len(points) < 3:
        return None
    s, b = (np.array(v, dtype=float) for v in zip(*points, strict=True))
    slope, latency = np.polyfit(b, s, 1)
    if slope <= 0:
        return None
    return {"num": len(points), "latency_s": float(latency), "bytes_s": float(1 / slope)}


def check(path: Path) -> dict[str, Any] | None:
    raw = read_raw(path)
    kv_bytes = int(raw["profile"]["kv_bytes_per_token"])
    topo = next((t for t in raw["topologies"] if t["topology"] == "1P1D"), None)
    if topo is None:
        return None
    kept, _ = clean_phases(topo["probe"])
    judged = [r for run in topo["runs"] for r in run["records"]]
    probe_fit = fit_link_transfers(kept, kv_bytes, DEFAULT_LINK)
    judged_fit = fit_link_transfers([{"phase": "judged", "records": judged}], kv_bytes,
                                    DEFAULT_LINK)
    points = transfers(judged, kv_bytes)
    # per run: its records' times are on that run's clock
    shares = [f for run in topo["runs"] for f in source_busy_shares(run["records"])]
    out: dict[str, Any] = {
        "raw": path.name, "probe_link": probe_fit["link"], "judged_link": judged_fit["link"],
        "fallback": probe_fit.get("fallback") or judged_fit.get("fallback"),
        "judged_busy_source": line([p for p, f in zip(points, shares, strict=True) if f > 0.9]),
        "judged_idle_source": line([p for p, f in zip(points, shares, strict=True) if f < 0.1]),
        "parts": {p["phase"]: handoff_parts(p["records"]) for p in topo["probe"]},
    }
    out["parts"]["judged"] = handoff_parts(judged)
    if out["fallback"] is None:
        out["probe_over_judged"] = probe_fit["link"]["bytes_s"] / judged_fit["link"]["bytes_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raws", nargs="*", type=Path,
                        default=sorted(RESULTS.glob("planner_calibration_*_raw.json.gz")))
    parser.add_argument("--out", type=Path, default=RESULTS / "calibration_transfers.json")
    args = parser.parse_args()
    rows = [row for path in args.raws if (row := check(path)) is not None]
    ratios = [r["probe_over_judged"] for r in rows if "probe_over_judged" in r]
    for r in rows:
        ratio = r.get("probe_over_judged")
        print(f"{r['raw']:44s} probe {r['probe_link']['bytes_s'] / 1e6:7.0f} MB/s, judged "
              f"{r['judged_link']['bytes_s'] / 1e6:7.0f} MB/s"
              + (f", ratio {ratio:.2f}" if ratio else f" ({r['fallback']})"))
    summary = {"num": len(ratios),
               "within_1_25x": sum(1 / 1.25 <= x <= 1.25 for x in ratios),
               "min": min(ratios, default=None), "max": max(ratios, default=None),
               "median": float(np.median(ratios)) if ratios else None}
    print(summary)
    args.out.write_text(json.dumps({"summary": summary, "measurements": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
