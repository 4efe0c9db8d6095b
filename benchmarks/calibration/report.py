"""Real vs simulated statistics per run, errors against the issue's targets, tables."""

from __future__ import annotations

from typing import Any

import numpy as np

# Attainment is also compared at tighter SLOs (TTFT s, TPOT s) computed from the same
# per-request latencies: at a loose SLO every request meets, agreement is trivial.
SLO_SWEEP = ((0.5, 0.05), (0.3, 0.04), (0.2, 0.03))
TARGETS = {"p90_ttft_rel_err": 0.10, "p90_tpot_rel_err": 0.10, "attainment_pp": 3.0}


def stats(ttft: np.ndarray, tpot: np.ndarray, ok: np.ndarray, slo: tuple[float, float],
          sweep: tuple[tuple[float, float], ...] = SLO_SWEEP) -> dict[str, Any]:
    def pct(values: np.ndarray, q: float) -> float | None:
        v = values[ok & np.isfinite(values)]
        return float(np.percentile(v, q)) if len(v) else None

    def attainment(ttft_slo_s: float, tpot_slo_s: float) -> float | None:
        # one-token outputs have no TPOT: they meet any TPOT target
        with np.errstate(invalid="ignore"):
            met = ok & (ttft <= ttft_slo_s) & ((tpot <= tpot_slo_s) | np.isnan(tpot))
        return float(met.mean()) if len(met) else None

    return {"p50_ttft_s": pct(ttft, 50), "p90_ttft_s": pct(ttft, 90),
            "p50_tpot_s": pct(tpot, 50), "p90_tpot_s": pct(tpot, 90),
            "attainment": attainment(*slo),
            "attainment_sweep": {f"{a:g}/{b:g}": attainment(a, b) for a, b in sweep}}


def errors(real: dict[str, Any], sim: dict[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key in ("p50_ttft_s", "p90_ttft_s", "p50_tpot_s", "p90_tpot_s"):
        r, s = real[key], sim[key]
        out[key.replace("_s", "_rel_err")] = (s - r) / r if r and s is not None else None
    ra, sa = real["attainment"], sim["attainment"]
    out["attainment_pp"] = 100 * (sa - ra) if ra is not None and sa is not None else None
    for key, sa in sim["attainment_sweep"].items():
        ra = real["attainment_sweep"][key]
        out[f"attainment_pp@{key}"] = 100 * (sa - ra) if ra is not None and sa is not None else None
    return out


def summarize_errors(rows: list[dict[str, Any]], variant: str) -> dict[str, Any]:
    keys = [*TARGETS, *(f"attainment_pp@{a:g}/{b:g}" for a, b in SLO_SWEEP)]
    out: dict[str, Any] = {}
    for key in keys:
        target = TARGETS.get(key, 3.0)
        values = [abs(row[variant]["error"][key]) for row in rows
                  if row[variant]["error"][key] is not None]
        out[key] = {"max_abs": max(values) if values else None,
                    "mean_abs": float(np.mean(values)) if values else None,
                    "num_within_target": sum(v <= target + 1e-12 for v in values),
                    "of": len(values), "target": target}
    return out


def _rate(row: dict[str, Any]) -> str:
    repeat = row.get("repeat")
    return f"{row['rate_rps']:g}" + (f" #{repeat + 1}" if repeat is not None else "")


def repeatability(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Identical real runs (same requests, same cluster, back to back) against each
    other: the later repeats' differences from the first, per (topology, rate)."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["topology"], row["rate_rps"]), []).append(row)
    out: list[dict[str, Any]] = []
    for (topology, rate), group in groups.items():
        first = group[0]["real"]
        for row in group[1:]:
            out.append({"topology": topology, "rate_rps": rate, "repeat": row.get("repeat"),
                        "real_vs_first": errors(first, row["real"])})
    summary: dict[str, Any] = {}
    for key in TARGETS:
        values = [abs(o["real_vs_first"][key]) for o in out
                  if o["real_vs_first"][key] is not None]
        summary[key] = {"max_abs": max(values) if values else None,
                        "mean_abs": float(np.mean(values)) if values else None,
                        "of": len(values)}
    return {"pairs": out, "summary": summary}


def repeat_markdown(rep: dict[str, Any]) -> str:
    lines = ["| topology | rate req/s | p90 TTFT, repeat vs first | p90 TPOT, repeat vs first "
             "| attainment, repeat vs first |", "|---|---:|---:|---:|---:|"]
    for pair in rep["pairs"]:
        e = pair["real_vs_first"]
        lines.append(f"| {pair['topology']} | {pair['rate_rps']:g} "
                     f"| {_pct(e['p90_ttft_rel_err'])} | {_pct(e['p90_tpot_rel_err'])} "
                     f"| {e['attainment_pp']:+.1f} pp |")
    return "\n".join(lines)


def _pct(err: float | None) -> str:
    return "n/a" if err is None else f"{err:+.0%}"


def markdown(rows: list[dict[str, Any]], variant: str) -> str:
    lines = ["| topology | rate req/s | sent | p90 TTFT real / sim (err) "
             "| p90 TPOT real / sim (err) | attainment real / sim (pp) "
             "| engine busy s real / sim | worker CPU / busy s |",
             "|---|---:|---:|---|---|---|---|---|"]
    for row in rows:
        r, s = row["real"], row[variant]
        e = s["error"]
        lines.append(
            f"| {row['topology']} | {_rate(row)} | {r['num_sent']} "
            f"| {r['p90_ttft_s']:.3f} / {s['p90_ttft_s']:.3f} s ({_pct(e['p90_ttft_rel_err'])}) "
            f"| {r['p90_tpot_s'] * 1e3:.1f} / {s['p90_tpot_s'] * 1e3:.1f} ms "
            f"({_pct(e['p90_tpot_rel_err'])}) "
            f"| {r['attainment']:.0%} / {s['attainment']:.0%} ({e['attainment_pp']:+.0f}) "
            f"| {sum(r['engine_busy_s'].values()):.1f} / {sum(s['engine_busy_s'].values()):.1f} "
            f"| {', '.join(f'{v:.2f}' for v in r['worker_cpu_per_busy_s'].values())} |")
    return "\n".join(lines)


def sweep_markdown(rows: list[dict[str, Any]], variant: str) -> str:
    keys = [f"{a:g}/{b:g}" for a, b in SLO_SWEEP]
    lines = ["| topology | rate req/s | " + " | ".join(
                 f"attainment real / sim @ {k} s" for k in keys) + " |",
             "|---|---:|" + "---|" * len(keys)]
    for row in rows:
        r, s = row["real"]["attainment_sweep"], row[variant]["attainment_sweep"]
        cells = [f"{r[k]:.0%} / {s[k]:.0%}" for k in keys]
        lines.append(f"| {row['topology']} | {_rate(row)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(summary: dict[str, Any]) -> str:
    parts = []
    for key, name in (("p90_ttft_rel_err", "p90 TTFT within 10%"),
                      ("p90_tpot_rel_err", "p90 TPOT within 10%"),
                      ("attainment_pp", "attainment within 3 pp")):
        s = summary[key]
        parts.append(f"{name}: {s['num_within_target']}/{s['of']} runs"
                     + (f" (worst {s['max_abs']:.0%})" if key != "attainment_pp" and s["max_abs"]
                        is not None else f" (worst {s['max_abs']:.1f} pp)"
                        if s["max_abs"] is not None else ""))
    return "; ".join(parts)
