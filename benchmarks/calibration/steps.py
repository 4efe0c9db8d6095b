"""A worker's engine steps, rebuilt from the client's token arrival times.

A running request gets exactly one token per engine step of its worker, and the worker
sends every token of a step at once: the tokens of all requests on one worker arrive at
the client in bursts, one per step. Chaining arrivals closer than `GAP_S` into one burst
gives the worker's step ends; a burst holding a token of a request that also had one in
the previous burst ends a step that started at the previous burst (a step whose running
requests are all new follows idle time and is not timed). Per step: its duration, how
many sequences decoded in it, their KV tokens, and whether it also computed prompt tokens
(a request on that worker was between its first scheduled time and its first token; the
router timeline, shifted by the run's median engine-to-client delay). A decode worker of
a split also imports KV concurrently with its steps; a step overlapping an import is
marked too.

The point: a decode step's real duration against the profile's price for the same batch
(`decode_ratios`), on the calibration probe (where it is fitted) and on the validation
runs (where it is only reported).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

GAP_S = 0.005  # tokens of one step reach the client within a few ms; steps last >= 15 ms
MIN_STEPS = 20  # fewest pure decode steps a median is taken over


@dataclass(frozen=True)
class Step:
    end_s: float
    duration_s: float
    num_decode: int
    decode_ctx_tokens: int
    has_prompt: bool
    has_import: bool
    worker: str
    # requests whose prompt stage overlaps the step (a split's decode worker: requests
    # joining with transferred KV, their first step there)
    num_prompt: int = 0
    # of those, prompts a split's decode worker computed itself (the router's short or
    # saturated local prefill): a prompt step, not a join
    num_local_prompt: int = 0


def _token_times(r: dict[str, Any]) -> np.ndarray:
    first = r["send_s"] + r["ttft_s"]
    return first + np.concatenate([[0.0], np.cumsum(r.get("itl_s") or [])])


def _intervals(rows: list[dict[str, Any]], role: str, start: str, end: str,
               shift_s: float) -> list[tuple[float, float]]:
    out = []
    for r in rows:
        tl = r["timeline"]
        a, b = tl.get(f"{role}.{start}"), tl.get(f"{role}.{end}")
        if a is not None and b is not None:
            out.append((r["send_s"] + a + shift_s, r["send_s"] + b + shift_s))
    return out


def _overlapping(spans: list[tuple[float, float]], lo: float, hi: float) -> int:
    return sum(1 for a, b in spans if a < hi and b > lo)


def reconstruct(records: list[dict[str, Any]]) -> list[Step]:
    """Every timed step of every worker that decoded (a mixed worker, or a split's
    decode worker) in one run, from records that carry `itl_s` and a timeline."""
    rows = [r for r in records if r["success"] and r.get("itl_s") and r.get("timeline")
            and (r["timeline"].get("workers") or {})]
    split = any("decode" in r["timeline"]["workers"] for r in rows)
    role = "decode" if split else "full"
    # engine -> client delay of a token, to place engine-side marks on the client's clock
    delays = [r["ttft_s"] - r["timeline"][f"{role}.engine_first_token_s"] for r in rows
              if r["timeline"].get(f"{role}.engine_first_token_s") is not None]
    shift_s = float(np.median(delays)) if delays else 0.0
    by_worker: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        url = r["timeline"]["workers"].get(role)
        if url:
            by_worker.setdefault(url, []).append(r)
    steps: list[Step] = []
    for url, mine in by_worker.items():
        steps.extend(_worker_steps(url, mine, role, split, shift_s))
    return steps


def _worker_steps(url: str, rows: list[dict[str, Any]], role: str, split: bool,
                  shift_s: float) -> list[Step]:
    # (client time, request, token index); a split's first token is the prefill worker's
    events = sorted((float(t), i, k) for i, r in enumerate(rows)
                    for k, t in enumerate(_token_times(r)) if not (split and k == 0))
    prompts = _intervals(rows, role, "engine_first_scheduled_s", "engine_first_token_s",
                         shift_s)
    imports = _intervals(rows, "decode", "kv_transfer_start_s", "kv_transfer_end_s",
                         shift_s) if split else []
    local = _intervals([r for r in rows if r["timeline"].get("route_kind") != "disaggregated"],
                       role, "engine_first_scheduled_s", "engine_first_token_s",
                       shift_s) if split else []
    bursts: list[list[tuple[float, int, int]]] = []
    for ev in events:
        if bursts and ev[0] - bursts[-1][-1][0] <= GAP_S:
            bursts[-1].append(ev)
        else:
            bursts.append([ev])
    out = []
    for prev, cur in zip(bursts, bursts[1:], strict=False):
        before = {(i, k) for _, i, k in prev}
        if not any((i, k - 1) in before for _, i, k in cur):
            continue  # nothing ran through from the previous burst: idle in between
        start, end = prev[0][0], cur[0][0]
        decoding = [(i, k) for _, i, k in cur if split or k > 0]
        ctx = sum(rows[i]["input_len"] + k for i, k in decoding)
        num_prompt = _overlapping(prompts, start, end)
        out.append(Step(end, end - start, len(decoding), ctx, num_prompt > 0,
                        _overlapping(imports, start, end) > 0, url, num_prompt,
                        _overlapping(local, start, end)))
    return out


def decode_ratios(steps: list[Step], model: Any) -> np.ndarray:
    """Real / profiled duration of every pure decode step (no prompt tokens, no KV
    import beside it)."""
    pure = [s for s in steps if s.num_decode and not s.has_prompt and not s.has_import]
    return np.array([s.duration_s / model.step_s(0, 0.0, 0, s.num_decode, s.decode_ctx_tokens)
                     for s in pure], dtype=float)


def join_costs(steps: list[Step], model: Any, decode_factor: float) -> np.ndarray:
    """Per step of a split's decode worker in which requests joined with transferred KV
    (and no import ran beside it, nor a prompt of its own): seconds beyond the decode step
    the model prices for its batch (profile x `decode_factor`), per joining request. A
    prompt the router prefilled on the decode worker (the probe's saturated phases
    overflow some) is a prompt step: counted as a join it priced one at 131 ms (ml11)."""
    joins = [s for s in steps
             if s.num_prompt and not s.num_local_prompt and not s.has_import and s.num_decode]
    return np.array([(s.duration_s - decode_factor * model.step_s(
        0, 0.0, 0, s.num_decode, s.decode_ctx_tokens)) / s.num_prompt for s in joins])


def summary(steps: list[Step], model: Any) -> dict[str, Any]:
    """Counts and duration statistics per kind of step, and the decode ratio."""
    ratios = decode_ratios(steps, model)
    kinds = {"decode": [s for s in steps if not s.has_prompt and not s.has_import],
             "with_prompt": [s for s in steps if s.has_prompt],
             "with_import": [s for s in steps if s.has_import and not s.has_prompt]}
    out: dict[str, Any] = {"num_steps": len(steps)}
    for name, group in kinds.items():
        d = np.array([s.duration_s for s in group])
        out[name] = {"num": len(group),
                     "median_ms": round(float(np.median(d)) * 1e3, 2) if len(d) else None,
                     "p90_ms": round(float(np.percentile(d, 90)) * 1e3, 2) if len(d) else None,
                     "mean_batch": round(float(np.mean([s.num_decode for s in group])), 2)
                     if group else None}
    if len(ratios):
        out["decode_ratio"] = {"median": round(float(np.median(ratios)), 3),
                               "p10": round(float(np.percentile(ratios, 10)), 3),
                               "p90": round(float(np.percentile(ratios, 90)), 3)}
    return out


def steps_markdown(rows: list[dict[str, Any]]) -> str:
    """Per judged run: foreign CPU seconds, and its rebuilt steps: pure decode (median /
    p90 ms, mean batch, median and p90 of real / profiled), steps with prompt tokens (a
    split's decode worker: requests joining with transferred KV)."""
    lines = ["| topology | rate req/s | foreign CPU s | decode steps: n, median / p90 ms, batch | "
             "decode real / profile: median (p90) | with prompt or join: n, median / p90 ms |",
             "|---|---|---:|---|---|---|"]
    for row in rows:
        s = row.get("real_steps") or {}
        d, p, r = s.get("decode") or {}, s.get("with_prompt") or {}, s.get("decode_ratio")
        if not d.get("num"):
            continue
        ratio = f"{r['median']:.2f} ({r['p90']:.2f})" if r else "n/a"
        foreign = row.get("foreign_cpu_s")
        lines.append(
            f"| {row['topology']} | {row['rate_rps']:g} #{(row.get('repeat') or 0) + 1} | "
            f"{'n/a' if foreign is None else f'{foreign:.1f}'}"
            f"{' (left out)' if row.get('contaminated') else ''} | "
            f"{d['num']}, {d['median_ms']} / {d['p90_ms']}, {d['mean_batch']} | {ratio} | "
            f"{p.get('num', 0)}, {p.get('median_ms')} / {p.get('p90_ms')} |")
    return "\n".join(lines)
