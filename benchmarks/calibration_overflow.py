"""Which prompts overflow to the decode worker, real against simulated, and what the decode
worker's steps cost meanwhile: a check of one calibration point where 1P1D saturates.

The router prefills a prompt on the decode worker while the prefill worker has 8 waiting
(`local_prefill_saturated`); so does the simulation (`saturated_num_waiting`). When a
variant misses such a point's TPOT, this says whether the simulation overflowed more or
longer prompts than the real run, or priced the decode worker's steps differently (the
real ones from the judged run's and its gauge's worker /metrics).

    PYTHONPATH=. python benchmarks/calibration_overflow.py \
        benchmarks/results/planner_calibration_ml6_raw.json.gz --rate 6 \
        --out benchmarks/results/planner_calibration_ml6_overflow.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.calibration import replay, step_metrics, variants
from benchmarks.calibration.rawfile import read_raw, setup_from_dict

LONG_TOKENS = 1000


def lengths_summary(lengths: list[int]) -> dict[str, Any]:
    a = np.asarray(lengths, dtype=float)
    return {"num": len(lengths), "tokens": int(a.sum()),
            "median_tokens": float(np.median(a)) if len(a) else None,
            "num_long": int((a > LONG_TOKENS).sum())}


def decode_steps(summary: Any, num_draws: int = 1) -> dict[str, Any] | None:
    """Mean decode-only step seconds and batch of a role's StepSummary; counts per run
    (a simulated summary adds its draws up)."""
    if summary is None:
        return None
    return {"num_decode_steps": summary.num_steps.get("decode", 0) / num_draws,
            "mean_decode_step_s": summary.mean_step_s("decode"),
            "num_mixed_steps": summary.num_steps.get("mixed", 0) / num_draws,
            "mean_mixed_step_s": summary.mean_step_s("mixed"),
            "mean_decode_batch": summary.mean_decode_batch,
            "num_prefill_tokens": summary.num_prefill_tokens / num_draws}


def check_run(setup: Any, topology: str, run: dict[str, Any], profile: dict[str, Any],
              variant: str, by_key: dict[Any, Any], speed_from_judged: bool = False,
              ) -> dict[str, Any]:
    rows = replay.sent(run["records"])
    lengths = np.array([r["input_len"] for r in rows])
    real_over = [int(r["input_len"]) for r in rows
                 if (r.get("timeline") or {}).get("route_kind") == "local_prefill_saturated"]
    real_tpot = [r["tpot_s"] for r in rows if r.get("tpot_s") is not None]
    sim, _ = variants.simulate_variant(setup, topology, run, profile, variant, by_key,
                                       speed_from_judged)
    n = len(rows)
    draws = []
    for k in range(len(sim["ttft_s"]) // n):
        part = slice(k * n, (k + 1) * n)
        over = sim["local_prefill"][part] & (lengths > setup.short_prompt_len)
        tpot = sim["tpot_s"][part]
        draws.append({**lengths_summary(lengths[over].tolist()),
                      "p90_tpot_s": float(np.nanquantile(tpot, 0.9))})
    real_steps = step_metrics.measured(run) or {}
    gauge_steps = step_metrics.measured(run["gauge"]) if run.get("gauge") else None
    return {"repeat": run["repeat"],
            "real": {**lengths_summary(real_over),
                     "p90_tpot_s": float(np.quantile(real_tpot, 0.9)) if real_tpot else None,
                     "decode_worker": decode_steps(real_steps.get("decode")),
                     "gauge_decode_worker": decode_steps((gauge_steps or {}).get("decode"))},
            "simulated_draws": draws,
            "simulated_decode_worker": decode_steps(sim["step_stats"].get("decode"),
                                                    len(draws))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw", help="a planner_calibration *_raw.json[.gz]")
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--topology", default="1P1D")
    parser.add_argument("--variant", default="steps_load_step_noise")
    parser.add_argument("--speed-from-judged", action="store_true",
                        help="read the step speed off the judged run itself, not its gauge "
                             "(what the forecast would be with a perfect gauge)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    raw = read_raw(args.raw)
    setup = setup_from_dict(raw["setup"])
    topo = next(t for t in raw["topologies"] if t["topology"] == args.topology)
    by_key = variants.fits(setup, args.topology, topo["probe"], raw["profile"],
                           topo.get("speed_probe"))
    out = {"raw": Path(args.raw).name, "topology": args.topology, "rate_rps": args.rate,
           "variant": args.variant, "speed_from_judged": args.speed_from_judged,
           "long_tokens": LONG_TOKENS,
           "runs": [check_run(setup, args.topology, run, raw["profile"], args.variant, by_key,
                              args.speed_from_judged)
                    for run in topo["runs"] if run["rate_rps"] == args.rate]}
    for r in out["runs"]:
        real, dw, gw = r["real"], r["real"]["decode_worker"], r["real"]["gauge_decode_worker"]
        sw = r["simulated_decode_worker"]
        print(f"repeat {r['repeat']}: real overflow {real['num']} prompts, {real['tokens']} "
              f"tokens ({real['num_long']} long), p90 TPOT {real['p90_tpot_s']:.3f} s")
        for d in r["simulated_draws"]:
            print(f"   simulated draw: {d['num']} prompts, {d['tokens']} tokens "
                  f"({d['num_long']} long), p90 TPOT {d['p90_tpot_s']:.3f} s")
        for label, w in (("gauge (real)", gw), ("judged (real)", dw), ("simulated", sw)):
            if w and w["mean_decode_step_s"]:
                print(f"   decode worker, {label:13s}: decode step "
                      f"{w['mean_decode_step_s'] * 1e3:5.1f} ms at batch "
                      f"{w['mean_decode_batch']:.1f}, {w['num_mixed_steps']:.0f} mixed steps")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
