"""Prompt-step prices read off lone prompts: a factor and a fixed part per step
(`fit_prompt_affine`), and the price of a long prompt's later chunks
(`fit_continuation_scale`).

A lone one-chunk prompt's step took ~1.4x its profiled price here, while a long prompt's
later chunks took about the profile's price (docs/planner.md, "The goodput benchmark's
other scenarios"). The
`lone_chunked` probe phase sends prompts of 3-4 chunks one at a time; each one's stage
(engine's first scheduled -> first token, router timeline) is then its first chunk at the
lone price plus the rest at `continuation_prompt_scale` times it
(`SchedulerConfig.continuation_prompt_scale`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.calibration.fit import lone_prompt_stages
from benchmarks.calibration.replay import latency_model, prompt_stage_s
from benchmarks.calibration.setup import Setup


def chunk_prices(model: Any, input_len: int, budget: int) -> list[float]:
    """The profiled price of each chunk the engine cuts a lone prompt into."""
    prices, done = [], 0
    while done < input_len:
        take = min(budget, input_len - done)
        prices.append(model.step_s(take, take * done + take * (take + 1) / 2, done + take,
                                   0, 0))
        done += take
    return prices


def fit_continuation_scale(setup: Setup, chunked: list[dict[str, Any]],
                           profile: dict[str, Any], lone_scale: float,
                           ) -> dict[str, Any] | None:
    """Least squares over the lone multi-chunk prompts of stage = lone_scale * (first
    chunk's price + w * the later chunks' prices); None without such prompts (raw files
    from before the `lone_chunked` probe phase)."""
    model = latency_model(setup, profile)
    num = den = 0.0
    points = []
    for r in chunked:
        stage = prompt_stage_s(r)
        if not r["success"] or stage is None:
            continue
        prices = chunk_prices(model, r["input_len"], setup.token_budget)
        if len(prices) < 2:
            continue
        later = lone_scale * sum(prices[1:])
        rest = stage - lone_scale * prices[0]
        num, den = num + rest * later, den + later * later
        points.append({"input_len": r["input_len"], "stage_s": stage,
                       "first_price_s": prices[0], "later_price_s": sum(prices[1:])})
    if den <= 0:
        return None
    return {"continuation_prompt_scale": min(max(num / den, 0.2), 2.0),
            "lone_scale": lone_scale, "points": points}


def fit_prompt_affine(setup: Setup, lone: list[dict[str, Any]],
                      profile: dict[str, Any]) -> dict[str, Any] | None:
    """Prompt steps priced `scale * profile + step_s` (`prefill_scale`, `prefill_step_s`),
    fitted on lone requests (each alone on its worker, one chunk): the engine's first
    scheduled -> first token against the profile's price of that prompt step, least
    squares, both >= 0. None unless the prompts span steps priced at least 2:1 apart
    (the `lone_long` probe phase): over the short lone prompts alone a factor and a
    fixed part cannot be told apart.

    Why: chat's prompt steps (~190 tokens) took 1.3-1.5x their price, the azure-code
    trace's (~460) 1.2x (docs/planner.md, "A production trace")."""
    stages = lone_prompt_stages(setup, lone, latency_model(setup, profile))
    xs, ys = [p for p, _ in stages], [s for _, s in stages]
    if len(xs) < 4 or max(xs) < 2 * min(xs):
        return None
    x = np.array([[v, 1.0] for v in xs])
    beta = nonneg_lstsq(x, np.array(ys), np.ones(len(xs)))
    if beta[0] <= 0:  # never a free prompt: a pure factor
        beta = np.array([float(np.array(ys) @ x[:, 0]) / float(x[:, 0] @ x[:, 0]), 0.0])
    return {"scale": float(beta[0]), "step_s": float(beta[1]), "num_requests": len(xs),
            "price_range_s": (min(xs), max(xs))}


def nonneg_lstsq(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted least squares y ~ x @ beta with beta >= 0 (two columns at most: the
    columns left out one at a time when the unconstrained fit goes negative)."""
    sw = np.sqrt(w)[:, None]
    beta = np.linalg.lstsq(x * sw, y * sw[:, 0], rcond=None)[0]
    if (beta >= 0).all():
        return beta
    best: np.ndarray = np.zeros(x.shape[1])
    best_err = float(w @ y**2)
    for j in range(x.shape[1]):
        col = x[:, j]
        denom = float(w @ col**2)
        b = max(float(w @ (col * y)) / denom, 0.0) if denom > 0 else 0.0
        err = float(w @ (y - b * col) ** 2)
        if err < best_err:
            best, best_err = np.eye(x.shape[1])[j] * b, err
    return best
