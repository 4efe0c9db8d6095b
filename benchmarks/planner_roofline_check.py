"""The planner's roofline beside a profile our engine measured on a real accelerator.

`splitserve plan --hardware h200` prices steps with a roofline and three efficiency factors
(compute 0.6, memory 0.8, 2 ms per step: `cost_model.Efficiency`). This script reads a
`splitserve profile` measured on that accelerator (e.g. on a lent H200) and the model's
config.json, and reports, per measured cell, the roofline's price at the default factors,
the fraction of the spec-sheet peak the step reached (prefill: FLOP/s; decode: bytes/s),
and the factors that fit the measured cells best (least squares on log seconds over a
grid of factors), with the error left after that fit.

    PYTHONPATH=. python benchmarks/planner_roofline_check.py --profile P.json \
        --config MODEL_DIR --hardware h200 --out benchmarks/results/planner_roofline_h200.json

Nothing here imports torch: the profile is read as JSON.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from splitserve.bench.report import write_json
from splitserve.planner.cost_model import Efficiency, RooflineLatencyModel, prefill_attn_pairs
from splitserve.planner.hardware import HardwareProfile, get_hardware
from splitserve.planner.model_spec import ModelSpec, load_model_spec
from splitserve.planner.profile_format import load_profile

# factor grids the fit searches (log-spaced where the factor spans decades)
COMPUTE_EFF = np.round(np.arange(0.05, 1.0001, 0.025), 3)
MEMORY_EFF = np.round(np.arange(0.05, 1.0001, 0.025), 3)
OVERHEAD_S = np.concatenate([[0.0], np.geomspace(1e-4, 0.1, 61)])
HALF_TOKENS = np.array([0.0, 16, 32, 64, 128, 256, 512])


@dataclass(frozen=True)
class Cell:
    """One measured step and what the roofline needs to price it."""

    table: str  # "prefill" (row = new tokens, col = cached) or "decode" (batch, total KV)
    row: int
    col: int
    measured_s: float
    num_prefill_tokens: int
    attn_pairs: float
    prefill_kv_tokens: int
    num_decode_seqs: int
    decode_ctx_tokens: int

    @property
    def num_tokens(self) -> int:
        return self.num_prefill_tokens + self.num_decode_seqs

    def step_args(self) -> tuple[int, float, int, int, int]:
        return (self.num_prefill_tokens, self.attn_pairs, self.prefill_kv_tokens,
                self.num_decode_seqs, self.decode_ctx_tokens)


def profile_cells(profile: dict[str, Any]) -> list[Cell]:
    """Every measured cell of a profile, as the step the roofline prices."""
    cells = []
    p = profile["prefill"]
    for n, row in zip(p["num_tokens"], p["latency_s"], strict=True):
        for c, seconds in zip(p["context_len"], row, strict=True):
            cells.append(Cell("prefill", n, c, seconds, n, prefill_attn_pairs(n, c), n + c, 0, 0))
    d = profile["decode"]
    for b, row in zip(d["batch_size"], d["latency_s"], strict=True):
        for t, seconds in zip(d["context_tokens"], row, strict=True):
            # the profiler gives every sequence at least one KV token
            cells.append(Cell("decode", b, t, seconds, 0, 0.0, 0, b, max(t, b)))
    return cells


def check_same_model(profile: dict[str, Any], spec: ModelSpec) -> None:
    """ValueError unless the profile was measured on a model of this shape."""
    if profile["num_layers"] != spec.num_layers:
        raise ValueError(f"profile has {profile['num_layers']} layers, config {spec.num_layers}")
    if profile["kv_bytes_per_token"] != spec.kv_bytes_per_token:
        raise ValueError(f"profile stores {profile['kv_bytes_per_token']} KV bytes per token, "
                         f"the config {spec.kv_bytes_per_token} (another model or dtype?)")
    if profile.get("tensor_parallel", 1) != 1:
        raise ValueError("only single-device profiles are compared (tensor_parallel 1)")


def work(spec: ModelSpec, cell: Cell) -> tuple[float, float]:
    """(FLOPs, bytes moved) of one step in the roofline's accounting."""
    flops = (2.0 * spec.num_matmul_params * cell.num_tokens
             + 4.0 * spec.num_layers * spec.num_heads * spec.head_dim
             * (cell.attn_pairs + cell.decode_ctx_tokens))
    moved = spec.weight_bytes + spec.kv_bytes_per_token * (cell.prefill_kv_tokens
                                                           + cell.decode_ctx_tokens)
    return flops, float(moved)


def log_error_stats(measured: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Median and worst relative error of predicted against measured, and the RMS of the
    log ratio (what the fit minimises)."""
    ratio = predicted / measured
    return {"median_ratio": float(np.median(ratio)), "min_ratio": float(ratio.min()),
            "max_ratio": float(ratio.max()),
            "rms_log_ratio": float(np.sqrt(np.mean(np.log(ratio) ** 2))),
            "within_10pct": int(np.sum(np.abs(ratio - 1) <= 0.10)),
            "within_25pct": int(np.sum(np.abs(ratio - 1) <= 0.25)), "cells": int(ratio.size)}


def predict(spec: ModelSpec, hw: HardwareProfile, eff: Efficiency,
            cells: list[Cell]) -> np.ndarray:
    model = RooflineLatencyModel(spec, hw, 1, eff)
    return np.array([model.step_s(*c.step_args()) for c in cells])


def fit_efficiency(spec: ModelSpec, hw: HardwareProfile, cells: list[Cell]) -> Efficiency:
    """The factors on the search grids whose roofline is closest to the measured cells in
    log seconds (the same formula as `RooflineLatencyModel.step_s` at tensor parallel 1,
    vectorised over the grid)."""
    peak, bw = hw.flops_for(spec.dtype), hw.memory_bw_bytes_s
    tokens = np.array([c.num_tokens for c in cells], dtype=float)
    pairs = np.array([c.attn_pairs + c.decode_ctx_tokens for c in cells], dtype=float)
    kv = np.array([c.prefill_kv_tokens + c.decode_ctx_tokens for c in cells], dtype=float)
    log_measured = np.log([c.measured_s for c in cells])
    per_token = 2.0 * spec.num_matmul_params / peak
    per_pair = 4.0 * spec.num_layers * spec.num_heads * spec.head_dim / peak
    # [half, cell] compute seconds at efficiency 1, then / efficiency
    compute1 = (tokens[None, :] + HALF_TOKENS[:, None]) * per_token + pairs[None, :] * per_pair
    memory1 = (spec.weight_bytes + kv * spec.kv_bytes_per_token) / bw
    compute = compute1[None, :, :] / COMPUTE_EFF[:, None, None]  # [ce, half, cell]
    memory = memory1[None, :] / MEMORY_EFF[:, None]  # [me, cell]
    roof = np.maximum(compute[:, :, None, :], memory[None, None, :, :])  # [ce, half, me, cell]
    best: tuple[float, tuple[int, ...]] = (math.inf, ())
    for k, overhead in enumerate(OVERHEAD_S):
        err = np.sum((np.log(roof + overhead) - log_measured) ** 2, axis=-1)
        index = np.unravel_index(int(np.argmin(err)), err.shape)
        if float(err[index]) < best[0]:
            best = (float(err[index]), (*(int(v) for v in index), k))
    i, h, m, k = best[1]
    return Efficiency(compute_efficiency=float(COMPUTE_EFF[i]),
                      memory_efficiency=float(MEMORY_EFF[m]),
                      step_overhead_s=float(OVERHEAD_S[k]),
                      compute_half_tokens=float(HALF_TOKENS[h]))


def check(profile: dict[str, Any], spec: ModelSpec, hw: HardwareProfile) -> dict[str, Any]:
    """The comparison as a JSON-ready dict (see the module docstring)."""
    check_same_model(profile, spec)
    cells = profile_cells(profile)
    measured = np.array([c.measured_s for c in cells])
    default = Efficiency()
    fitted = fit_efficiency(spec, hw, cells)
    at_default, at_fit = predict(spec, hw, default, cells), predict(spec, hw, fitted, cells)
    peak, bw = hw.flops_for(spec.dtype), hw.memory_bw_bytes_s
    rows: list[dict[str, Any]] = []
    for cell, default_s, fit_s in zip(cells, at_default, at_fit, strict=True):
        flops, moved = work(spec, cell)
        rows.append({"table": cell.table, "row": cell.row, "col": cell.col,
                     "measured_s": cell.measured_s, "roofline_default_s": float(default_s),
                     "roofline_fitted_s": float(fit_s),
                     "compute_fraction_of_peak": flops / cell.measured_s / peak,
                     "bandwidth_fraction_of_peak": moved / cell.measured_s / bw})

    def stats(predicted: np.ndarray) -> dict[str, Any]:
        by_table = {table: log_error_stats(measured[mask], predicted[mask])
                    for table in ("prefill", "decode")
                    if (mask := np.array([c.table == table for c in cells])).any()}
        return {"all": log_error_stats(measured, predicted), **by_table}

    prefill = [float(r["compute_fraction_of_peak"]) for r in rows if r["table"] == "prefill"]
    decode = [float(r["bandwidth_fraction_of_peak"]) for r in rows if r["table"] == "decode"]
    return {
        "hardware": asdict(hw) | {"aliases": list(hw.aliases)},
        "model": asdict(spec) | {"num_params": spec.num_params,
                                 "weight_bytes": spec.weight_bytes},
        "profile": {k: profile.get(k) for k in ("measured_at", "wall_s", "torch_version",
                                                 "repeats", "settle_calls", "refined")}
        | {"device": profile["hardware"], "model": profile["model"].get("name")},
        "default_efficiency": asdict(default),
        "default_error": stats(at_default),
        "fitted_efficiency": asdict(fitted),
        "fitted_error": stats(at_fit),
        "best_prefill_compute_fraction": max(prefill, default=None),
        "best_decode_bandwidth_fraction": max(decode, default=None),
        "cells": rows,
    }


def _summary(result: dict[str, Any]) -> str:
    lines = [f"{result['profile']['model']} on {result['profile']['device'].get('name')} "
             f"vs the {result['hardware']['name']} roofline"]
    for label in ("default", "fitted"):
        eff = result[f"{label}_efficiency"]
        err = result[f"{label}_error"]
        parts = ", ".join(
            f"{t} x{e['median_ratio']:.2f} [{e['min_ratio']:.2f}-{e['max_ratio']:.2f}] "
            f"{e['within_25pct']}/{e['cells']} within 25%"
            for t, e in err.items() if t != "all")
        lines.append(f"  {label:7s} compute {eff['compute_efficiency']:.3f} memory "
                     f"{eff['memory_efficiency']:.3f} overhead {eff['step_overhead_s'] * 1e3:.2f} ms "
                     f"half {eff['compute_half_tokens']:.0f}: predicted/measured {parts}")
    lines.append(f"  best prefill step: {result['best_prefill_compute_fraction']:.2f} of peak "
                 f"FLOP/s; best decode step: {result['best_decode_bandwidth_fraction']:.2f} of "
                 "peak bandwidth")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", required=True, help="a splitserve.profile/v1 JSON")
    parser.add_argument("--config", required=True,
                        help="the profiled model's config.json or folder (or a bundled name)")
    parser.add_argument("--hardware", required=True, help="hardware profile name, e.g. h200")
    parser.add_argument("--out", default=None, help="write the comparison JSON here")
    args = parser.parse_args(argv)
    result = check(load_profile(args.profile), load_model_spec(args.config),
                   get_hardware(args.hardware))
    print(_summary(result))
    if args.out:
        write_json(args.out, result)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
