"""Measured step-latency profiles: the JSON schema `splitserve profile` writes, and a
latency model that interpolates it. The schema is documented in docs/planner.md.

Two tables, each a full grid of seconds per engine step (median of repeats):

- prefill: `latency_s[i][j]` = one step computing `num_tokens[i]` new prompt tokens that
  follow `context_len[j]` tokens already in the KV cache (one sequence);
- decode: `latency_s[i][j]` = one step generating one token for each of `batch_size[i]`
  sequences whose KV holds `context_tokens[j]` tokens in total (split evenly, >= 1 each).

Between grid points the model interpolates linearly on both axes; beyond the grid it
extrapolates from the last two points (so a fleet larger than the profile is still priced).
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SCHEMA = "splitserve.profile/v1"

_TABLES = {
    "prefill": ("num_tokens", "context_len"),
    "decode": ("batch_size", "context_tokens"),
}
_REQUIRED_INTS = ("tensor_parallel", "kv_capacity_tokens", "kv_bytes_per_token", "num_layers")


def _check_axis(table: str, name: str, values: Any, minimum: int) -> list[int]:
    if not isinstance(values, list) or len(values) < 2:
        raise ValueError(f"profile {table}.{name} must be a list of at least 2 numbers")
    if any(not isinstance(v, int) or isinstance(v, bool) for v in values):
        raise ValueError(f"profile {table}.{name} must hold integers")
    if any(b <= a for a, b in zip(values, values[1:], strict=False)) or values[0] < minimum:
        raise ValueError(f"profile {table}.{name} must be strictly increasing from >= {minimum}")
    return values


def validate_profile(data: Any) -> dict[str, Any]:
    """Check a parsed profile against the v1 schema; ValueError naming the first problem."""
    if not isinstance(data, dict):
        raise ValueError("profile must be a JSON object")
    if data.get("schema") != SCHEMA:
        raise ValueError(f"profile schema must be {SCHEMA!r}, got {data.get('schema')!r}")
    for key in ("model", "hardware"):
        if not isinstance(data.get(key), dict) or not isinstance(data[key].get("name"), str):
            raise ValueError(f"profile {key} must be an object with a string 'name'")
    for key in _REQUIRED_INTS:
        value = data.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"profile {key} must be a positive integer, got {value!r}")
    for table, (row_axis, col_axis) in _TABLES.items():
        body = data.get(table)
        if not isinstance(body, dict):
            raise ValueError(f"profile is missing the {table!r} table")
        rows = _check_axis(table, row_axis, body.get(row_axis), 1)
        cols = _check_axis(table, col_axis, body.get(col_axis), 0)
        grid = body.get("latency_s")
        if not isinstance(grid, list) or len(grid) != len(rows):
            raise ValueError(f"profile {table}.latency_s must have {len(rows)} rows")
        for i, row in enumerate(grid):
            if not isinstance(row, list) or len(row) != len(cols):
                raise ValueError(f"profile {table}.latency_s[{i}] must have {len(cols)} values")
            if any(not isinstance(v, int | float) or isinstance(v, bool) or v <= 0 for v in row):
                raise ValueError(f"profile {table}.latency_s[{i}] must hold positive seconds")
    return data


def make_profile(
    *,
    model_name: str,
    hardware_name: str,
    tensor_parallel: int,
    kv_capacity_tokens: int,
    kv_bytes_per_token: int,
    num_layers: int,
    prefill: tuple[Sequence[int], Sequence[int], Sequence[Sequence[float]]],
    decode: tuple[Sequence[int], Sequence[int], Sequence[Sequence[float]]],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble (and validate) a profile dict; `prefill`/`decode` are (rows, cols, grid)."""
    data: dict[str, Any] = {
        "schema": SCHEMA,
        "model": {"name": model_name},
        "hardware": {"name": hardware_name},
        "tensor_parallel": tensor_parallel,
        "kv_capacity_tokens": kv_capacity_tokens,
        "kv_bytes_per_token": kv_bytes_per_token,
        "num_layers": num_layers,
    }
    for table, (rows, cols, grid) in (("prefill", prefill), ("decode", decode)):
        row_axis, col_axis = _TABLES[table]
        data[table] = {
            row_axis: [int(r) for r in rows],
            col_axis: [int(c) for c in cols],
            "latency_s": [[float(v) for v in row] for row in grid],
        }
    if extra:
        data.update({k: v for k, v in extra.items() if k not in data})
    return validate_profile(data)


def _doubling(start: int, stop: int) -> list[int]:
    values = [start]
    while values[-1] * 2 < stop:
        values.append(values[-1] * 2)
    values.append(stop)
    return sorted(set(values))


def suggested_axes(
    max_model_len: int,
    max_num_seqs: int,
    kv_capacity_tokens: int,
    max_batched_tokens: int | None = None,
) -> dict[str, list[int]]:
    """Grid axes for `splitserve profile` to measure: powers of two up to the limits
    (the profiler's default grid is built from these, so both sides agree).

    Returns prefill `num_tokens` (16 .. max_model_len, or .. max_batched_tokens when given:
    a chunking engine never runs more new tokens in one step), `context_len` (0, then
    256 .. max_model_len / 2), decode `batch_size` (1 .. max_num_seqs) and
    `context_tokens` (64 .. min(kv_capacity_tokens, max_model_len): a batch of one holds
    at most max_model_len tokens, so a larger total cannot be measured at every batch
    size; beyond it the model extrapolates linearly, as attention reads grow). Each axis
    has at least two points.
    """
    for name, value in (
        ("max_model_len", max_model_len),
        ("max_num_seqs", max_num_seqs),
        ("kv_capacity_tokens", kv_capacity_tokens),
        ("max_batched_tokens", max_model_len if max_batched_tokens is None else max_batched_tokens),
    ):
        if value < 2:
            raise ValueError(f"{name} must be >= 2, got {value}")
    half_len = max(max_model_len // 2, 2)
    max_tokens = min(max_model_len, max_batched_tokens or max_model_len)
    max_context = min(kv_capacity_tokens, max_model_len)
    return {
        "num_tokens": _doubling(min(16, max_tokens - 1), max_tokens),
        "context_len": [0, *_doubling(min(256, half_len - 1), half_len)],
        "batch_size": _doubling(1, max_num_seqs),
        "context_tokens": _doubling(min(64, max_context - 1), max_context),
    }


def save_profile(data: dict[str, Any], path: str | Path) -> None:
    validate_profile(data)
    Path(path).write_text(json.dumps(data, indent=1) + "\n")


def load_profile(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read profile {path}: {exc}") from exc
    return validate_profile(data)


class _Grid:
    """Bilinear interpolation with linear extrapolation outside the grid."""

    def __init__(self, rows: list[int], cols: list[int], values: list[list[float]]) -> None:
        self.rows = [float(r) for r in rows]
        self.cols = [float(c) for c in cols]
        self.values = [[float(v) for v in row] for row in values]

    @staticmethod
    def _segment(axis: list[float], x: float) -> tuple[int, float]:
        i = min(max(bisect_right(axis, x) - 1, 0), len(axis) - 2)
        return i, (x - axis[i]) / (axis[i + 1] - axis[i])

    def __call__(self, row: float, col: float) -> float:
        i, u = self._segment(self.rows, row)
        j, w = self._segment(self.cols, col)
        v = self.values
        top = v[i][j] + (v[i][j + 1] - v[i][j]) * w
        bottom = v[i + 1][j] + (v[i + 1][j + 1] - v[i + 1][j]) * w
        return top + (bottom - top) * u


class ProfileLatencyModel:
    """`LatencyModel` read from a measured profile (see module docstring).

    A mixed step (prefill chunks + decode tokens) costs the prefill of all its tokens plus
    the attention part of the decode, i.e. decode(n, ctx) - decode(n, 0): the decode tokens
    share the weight reads with the prefill, but still read their own KV.
    """

    def __init__(self, profile: dict[str, Any]) -> None:
        validate_profile(profile)
        self.profile = profile
        self.tensor_parallel = int(profile["tensor_parallel"])
        self.kv_capacity_tokens = int(profile["kv_capacity_tokens"])
        self.kv_bytes_per_token = int(profile["kv_bytes_per_token"])
        self.num_layers = int(profile["num_layers"])
        p, d = profile["prefill"], profile["decode"]
        self._prefill = _Grid(p["num_tokens"], p["context_len"], p["latency_s"])
        self._decode = _Grid(d["batch_size"], d["context_tokens"], d["latency_s"])
        self._floor_s = min(min(row) for row in p["latency_s"] + d["latency_s"]) * 0.5

    def prefill_s(self, num_tokens: int, num_cached_tokens: int = 0) -> float:
        return max(self._prefill(num_tokens, num_cached_tokens), self._floor_s)

    def decode_s(self, num_seqs: int, total_ctx_tokens: int) -> float:
        return max(self._decode(num_seqs, total_ctx_tokens), self._floor_s)

    def step_s(
        self,
        num_prefill_tokens: int,
        prefill_attn_pairs: float,
        prefill_kv_tokens: int,
        num_decode_seqs: int,
        decode_ctx_tokens: int,
    ) -> float:
        if num_prefill_tokens == 0:
            return self.decode_s(num_decode_seqs, decode_ctx_tokens) if num_decode_seqs else 0.0
        cached = max(prefill_kv_tokens - num_prefill_tokens, 0)
        total = self.prefill_s(num_prefill_tokens + num_decode_seqs, cached)
        if num_decode_seqs:
            extra = self._decode(num_decode_seqs, decode_ctx_tokens)
            extra -= self._decode(num_decode_seqs, 0)
            total += max(extra, 0.0)
        return total
