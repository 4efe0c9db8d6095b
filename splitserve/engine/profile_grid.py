"""The shapes `splitserve profile` measures: `ProfileGrid` and the built-in grids.

A grid names the prompt-step cells (new tokens x cached context of one sequence) and the
decode-step cells (batch size x total context), and how many warm-up, settle and timed
calls each cell gets (see `splitserve.engine.profiler` for why settle calls exist), and
how finely the decode batch axis and the prefill token axis are refined between their
points where the step cost is not linear (`splitserve.engine.profile_refine`). The
default grid follows the planner's `suggested_axes`, so profile and planner agree on
where the interpolation points lie. Importing this module does not import torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

Cell = tuple[str, int, int]  # (table, row value, column value)


def _check_axis(name: str, values: Sequence[int], minimum: int) -> tuple[int, ...]:
    out = tuple(values)
    if len(out) < 2:
        raise ValueError(f"{name} needs at least 2 values, got {list(out)}")
    if any(not isinstance(v, int) or isinstance(v, bool) for v in out):
        raise ValueError(f"{name} must hold integers, got {list(out)}")
    if out[0] < minimum or any(b <= a for a, b in zip(out, out[1:], strict=False)):
        raise ValueError(f"{name} must be strictly increasing from >= {minimum}, got {list(out)}")
    return out


@dataclass(frozen=True)
class ProfileGrid:
    """Shapes to measure and how often.

    prefill_tokens x prefill_context: one sequence computing `n` new prompt tokens after
    `c` cached ones. decode_batch x decode_context: `b` sequences decoding one token each,
    whose KV holds `t` tokens in total, split evenly (at least 1 each).

    refine_tol: after the grid, bisect decode_batch and prefill_tokens between adjacent
    points until a midpoint lies within this relative distance of the straight line
    between its neighbours, at every column (0 = measure the grid only).
    max_refine_points: at most this many points added to each of the two axes.
    """

    prefill_tokens: tuple[int, ...]
    prefill_context: tuple[int, ...]
    decode_batch: tuple[int, ...]
    decode_context: tuple[int, ...]
    num_repeats: int = 5
    num_warmup: int = 1
    num_settle: int = 3  # untimed calls of a cell right before each timed one
    refine_tol: float = 0.05
    max_refine_points: int = 32

    def __post_init__(self) -> None:
        _check_axis("prefill_tokens", self.prefill_tokens, 1)
        _check_axis("prefill_context", self.prefill_context, 0)
        _check_axis("decode_batch", self.decode_batch, 1)
        _check_axis("decode_context", self.decode_context, 0)
        if self.num_repeats < 1:
            raise ValueError(f"num_repeats must be >= 1, got {self.num_repeats}")
        if self.num_warmup < 0:
            raise ValueError(f"num_warmup must be >= 0, got {self.num_warmup}")
        if self.num_settle < 0:
            raise ValueError(f"num_settle must be >= 0, got {self.num_settle}")
        tol = self.refine_tol
        if isinstance(tol, bool) or not isinstance(tol, int | float) or not 0 <= tol < 1:
            raise ValueError(f"refine_tol must be a number in [0, 1) (0 = no refinement), "
                             f"got {tol!r}")
        if (isinstance(self.max_refine_points, bool)
                or not isinstance(self.max_refine_points, int) or self.max_refine_points < 0):
            raise ValueError(f"max_refine_points must be an integer >= 0, "
                             f"got {self.max_refine_points!r}")

    def check_fits(self, max_model_len: int) -> None:
        """ValueError if a cell needs a sequence longer than the model allows."""
        longest_prefill = self.prefill_tokens[-1] + self.prefill_context[-1]
        if longest_prefill > max_model_len:
            raise ValueError(
                f"prefill grid reaches {longest_prefill} tokens (max prefill tokens + max "
                f"context) but the model's max length is {max_model_len}: shrink the grid")
        longest_decode = max(1, self.decode_context[-1] // self.decode_batch[0])
        if longest_decode > max_model_len:
            raise ValueError(
                f"decode grid puts {longest_decode} tokens in one sequence (max context / "
                f"min batch) but the model's max length is {max_model_len}: shrink the grid")

    def trimmed(self, max_model_len: int) -> ProfileGrid:
        """This grid without the points a model of `max_model_len` cannot run (for the
        built-in grids; a grid the user gave is checked with `check_fits` instead).
        Drops the largest cached contexts first, then the largest prompt sizes."""
        tokens = [n for n in self.prefill_tokens if n <= max_model_len]
        contexts = list(self.prefill_context)
        while len(contexts) > 2 and tokens and tokens[-1] + contexts[-1] > max_model_len:
            contexts.pop()
        tokens = [n for n in tokens if n + contexts[-1] <= max_model_len]
        batch = self.decode_batch
        totals = [t for t in self.decode_context if max(1, t // batch[0]) <= max_model_len]
        trimmed = dataclasses.replace(self, prefill_tokens=tuple(tokens),
                                      prefill_context=tuple(contexts),
                                      decode_context=tuple(totals))
        trimmed.check_fits(max_model_len)
        return trimmed

    def cells(self) -> list[Cell]:
        """Every cell of the grid (refinement adds cells later, see `refine_cells`)."""
        return self.refine_cells(self.prefill_tokens, self.decode_batch)

    def refine_cells(self, prefill_tokens: Sequence[int],
                     decode_batch: Sequence[int]) -> list[Cell]:
        """The cells of these prefill sizes and decode batches at every column."""
        prefill = [("prefill", n, c) for n in prefill_tokens for c in self.prefill_context]
        decode = [("decode", b, t) for b in decode_batch for t in self.decode_context]
        return prefill + decode


def default_grid(max_model_len: int, max_num_seqs: int, kv_capacity_tokens: int,
                 max_batched_tokens: int) -> ProfileGrid:
    """The grid `splitserve profile` measures unless told otherwise: the planner's
    `suggested_axes` for the serving engine's limits (trimmed to fit the model), 3 repeats
    per cell. A ~110M model takes a few minutes on one core here, and refinement (on by
    default) adds the points it bisects (the calibration's grid: 30 s -> ~2 min); the
    planner extrapolates linearly beyond the last grid point."""
    from splitserve.planner.profile_format import suggested_axes

    axes = suggested_axes(max_model_len, max_num_seqs, kv_capacity_tokens, max_batched_tokens)
    grid = ProfileGrid(prefill_tokens=tuple(axes["num_tokens"]),
                       prefill_context=tuple(axes["context_len"]),
                       decode_batch=tuple(axes["batch_size"]),
                       decode_context=tuple(axes["context_tokens"]), num_repeats=3)
    return grid.trimmed(max_model_len)


def default_grid_for(model_dir: str | Path, kv_cache_bytes: int | None = None,
                     block_size: int = 16) -> ProfileGrid:
    """`default_grid` for a model folder served with the engine's default limits and a KV
    pool of `kv_cache_bytes` (default: the engine's)."""
    from splitserve.engine.engine_config import EngineConfig
    from splitserve.model import ModelConfig, num_blocks_for_memory

    config = ModelConfig.from_dir(model_dir)
    serve = EngineConfig(model=str(model_dir))
    kv_bytes = serve.kv_cache_bytes if kv_cache_bytes is None else kv_cache_bytes
    capacity_blocks = num_blocks_for_memory(config, block_size, config.dtype, kv_bytes)
    if capacity_blocks <= 0:
        raise ValueError(f"kv_cache_bytes {kv_bytes} holds no KV block of this model")
    return default_grid(config.max_position_embeddings, serve.max_num_seqs,
                        capacity_blocks * block_size, serve.max_num_batched_tokens)


# The grid this module used before it followed `suggested_axes`; kept as a named choice.
FULL_GRID = ProfileGrid(
    prefill_tokens=(8, 32, 64, 128, 256, 512, 1024),
    prefill_context=(0, 512, 2048),
    decode_batch=(1, 2, 4, 8, 16, 32, 64),
    decode_context=(0, 1024, 4096),
    num_repeats=5,
    num_warmup=1,
)
QUICK_GRID = ProfileGrid(
    prefill_tokens=(8, 64, 512),
    prefill_context=(0, 256),
    decode_batch=(1, 4, 16),
    decode_context=(0, 256),
    num_repeats=3,
    num_warmup=1,
    num_settle=0,  # seconds matter more than steady state for a smoke profile
    refine_tol=0.0,  # likewise: a smoke profile measures its grid only
)
