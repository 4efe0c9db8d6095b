"""Measure the engine's step latency over a grid of shapes: what `splitserve profile` writes.

Each cell is one real engine step: `ModelRunner.forward` over fabricated
`ScheduledSequence`s with real block tables into the paged KV cache, followed by the
sampler on the returned logits (greedy), exactly the two calls `LLMEngine.step` makes
around the scheduler. The cache holds zeros instead of a real prompt's K/V, which costs
the same. Not measured: the scheduler, detokenizer and worker/HTTP overhead per step
(the calibration benchmark reports how much that leaves out).

Cells run round-robin (every cell once, then every cell again, ...) so a burst of load
from another process lands on one repeat of many cells instead of every repeat of one;
each cell's latency is the median of its repeats after warm-up rounds. Each timed call
follows `num_settle` untimed calls of the same cell: a serving engine runs many steps of
about the same shape in a row, while on this machine's CPU a small step timed right after
a much larger one of another shape ran slower (caches and allocator state of the other
shape): for the 25M float32 bench model, a 1-sequence decode step took 14% and an 8-token
prefill 24% longer with no settle call than with three (`settle_effect` in
benchmarks/results/planner_calibration_quick.json); the 110M bfloat16 model showed no
difference (planner_calibration.json).

After the grid, the decode batch and prefill token axes are refined by bisection where
the step cost leaves the straight line between two grid points (a kernel switch, padding
to a captured batch size): the policy is `splitserve.engine.profile_refine`'s, and each
round's cells are measured the same way as the grid's (`_measure_cells`); a midpoint off
the line is measured once more and keeps the smaller median before it is believed.

The grids live in `splitserve.engine.profile_grid` (re-exported here). The result is the
planner's measured-profile JSON (`splitserve.profile/v1`, built and validated by
`splitserve.planner.profile_format.make_profile`).
"""

from __future__ import annotations

import itertools
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from splitserve.engine.profile_grid import (
    FULL_GRID,
    QUICK_GRID,
    Cell,
    ProfileGrid,
    default_grid,
    default_grid_for,
)
from splitserve.engine.profile_refine import AxisRefiner, min_merged

__all__ = ["FULL_GRID", "QUICK_GRID", "ProfileGrid", "default_grid", "default_grid_for",
           "hardware_description", "profile_engine"]


def _cell_sequences(cell: Cell, block_size: int, vocab_size: int) -> list[Any]:
    """Fabricated scheduled work for one cell, each sequence with its own blocks."""
    from splitserve.engine.sched_output import ScheduledSequence

    table, rows, cols = cell
    if table == "prefill":
        shapes = [(rows, cols)]  # (new tokens, cached tokens)
    else:
        per_seq = max(1, cols // rows)  # context after the step, cached + the new token
        shapes = [(1, per_seq - 1)] * rows
    seqs = []
    next_block = 0
    for i, (num_new, num_cached) in enumerate(shapes):
        num_blocks = -(-(num_new + num_cached) // block_size)
        blocks = tuple(range(next_block, next_block + num_blocks))
        next_block += num_blocks
        # vary ids so no sequence is a copy of another (no kernel takes a shortcut on it)
        token_ids = tuple((7 + 31 * (i + k)) % vocab_size for k in range(num_new))
        seqs.append(ScheduledSequence(request_id=f"p{i}", token_ids=token_ids,
                                      num_computed_tokens=num_cached, block_ids=blocks,
                                      sample=True))
    return seqs


def _blocks_needed(grid: ProfileGrid, block_size: int) -> int:
    """KV blocks for the largest cell, refined ones included: refinement adds only prompt
    sizes below the largest, but a batch between two grid points can need more blocks
    than either (each sequence rounds up to whole blocks), so every batch size counts."""
    longest = grid.prefill_tokens[-1] + grid.prefill_context[-1]
    prefill = -(-longest // block_size)
    batches: Sequence[int] = grid.decode_batch
    if grid.refine_tol > 0 and grid.max_refine_points > 0:
        batches = range(grid.decode_batch[0], grid.decode_batch[-1] + 1)
    decode = max(b * -(-max(1, t // b) // block_size)
                 for b in batches for t in grid.decode_context)
    return max(prefill, decode)


def _measure_cells(runner: Any, cells: list[Cell], grid: ProfileGrid, block_size: int,
                   report: Callable[[str], None]) -> dict[Cell, float]:
    """Median seconds of one engine step per cell: `num_warmup` untimed rounds, then
    `num_repeats` timed ones, each round running every cell once (round-robin), each
    timed call right after `num_settle` untimed calls of the same cell."""
    import torch

    from splitserve.engine.sampler import sample
    from splitserve.engine.sampling_params import SamplingParams

    greedy = SamplingParams(temperature=0.0, max_tokens=1)
    inputs = {cell: _cell_sequences(cell, block_size, runner.vocab_size) for cell in cells}
    timings: dict[Cell, list[float]] = {cell: [] for cell in cells}
    num_rounds = grid.num_warmup + grid.num_repeats
    for round_index in range(num_rounds):
        timed = round_index >= grid.num_warmup
        for cell in cells:
            seqs = inputs[cell]
            for _ in range(grid.num_settle if timed else 0):
                sample(runner.forward(seqs, seqs), [greedy] * len(seqs), [0] * len(seqs),
                       None, ())
            t0 = time.perf_counter()
            logits = runner.forward(seqs, seqs)
            sample(logits, [greedy] * len(seqs), [0] * len(seqs), None, ())
            if runner.device.type == "cuda":
                torch.cuda.synchronize(runner.device)
            elapsed_s = time.perf_counter() - t0
            if timed:
                timings[cell].append(elapsed_s)
        report(f"{'repeat' if timed else 'warm-up'} round {round_index + 1}/{num_rounds} "
               f"of {len(cells)} cells done")
    return {cell: statistics.median(values) for cell, values in timings.items()}


def _refine(grid: ProfileGrid, median: dict[Cell, float],
            measure: Callable[[list[Cell], str], dict[Cell, float]],
            ) -> tuple[list[int], list[int], dict[str, dict[str, list[int]]]]:
    """Bisect the prefill token and decode batch axes where the measured step cost leaves
    the straight line (`profile_refine`), measuring each round's points at every column
    into `median` (a re-measured cell keeps the smaller median: `min_merged`). Returns
    both refined axes and the profile's `refined` and `remeasured` fields."""
    columns = {"prefill": grid.prefill_context, "decode": grid.decode_context}
    refiners = {table: AxisRefiner(axis, tol=grid.refine_tol, max_points=grid.max_refine_points)
                for table, axis in (("prefill", grid.prefill_tokens),
                                    ("decode", grid.decode_batch))}

    def rows(table: str) -> dict[int, list[float]]:
        values = sorted({row for name, row, _ in median if name == table})
        return {row: [median[(table, row, c)] for c in columns[table]] for row in values}

    for round_index in itertools.count(1):
        points = {table: r.next_points(rows(table)) for table, r in refiners.items()}
        if not points["prefill"] and not points["decode"]:
            break
        again = {table: r.remeasuring for table, r in refiners.items()}
        note = (f"; measured again, off the chord: prefill tokens {again['prefill']}, "
                f"decode batch {again['decode']}" if any(again.values()) else "")
        label = (f"refinement round {round_index} (prefill tokens {points['prefill']}, "
                 f"decode batch {points['decode']}{note})")
        cells = measure(grid.refine_cells(points["prefill"], points["decode"]), label)
        median.update(min_merged(median, cells))
    p, d = refiners["prefill"], refiners["decode"]
    fields = {"refined": {"prefill_tokens": sorted(p.added), "decode_batch": sorted(d.added)},
              "remeasured": {"prefill_tokens": sorted(p.remeasured),
                             "decode_batch": sorted(d.remeasured)}}
    return p.axis, d.axis, fields


def hardware_description(device: str, num_threads: int) -> dict[str, Any]:
    """Name and facts of the measuring machine, for the profile's `hardware` object."""
    import torch

    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
        return {"name": name, "device": device, "num_threads": num_threads}
    cpu_model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"name": f"cpu-{num_threads}thread", "device": device, "cpu_model": cpu_model,
            "num_threads": num_threads, "num_visible_cores": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity") else os.cpu_count()}


def profile_engine(
    model_dir: str | Path,
    *,
    grid: ProfileGrid | None = None,
    dtype: str = "auto",
    device: str = "cpu",
    num_threads: int | None = None,
    block_size: int = 16,
    kv_cache_bytes: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure every cell of `grid` on the engine's runner, then refine its decode batch
    and prefill token axes (`grid.refine_tol`); return a validated profile whose axes
    include the refined points (listed in its `refined` field, the points measured twice
    before they were believed in `remeasured`).

    grid: None = `default_grid` for the engine's default limits and this KV pool; a given
    grid must fit as is.
    kv_cache_bytes: the serving engine's KV pool size, recorded as `kv_capacity_tokens`
    (default: `EngineConfig`'s); the profiler itself allocates only what the grid needs.
    """
    import torch

    from splitserve.engine.engine_config import EngineConfig
    from splitserve.engine.model_runner import ModelRunner
    from splitserve.model import ModelConfig, num_blocks_for_memory
    from splitserve.planner.profile_format import make_profile

    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise ValueError(f"device must be cpu or cuda[:N], got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but torch sees no CUDA device")
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise ValueError(f"model folder {str(path)!r} has no config.json (not an HF model dir)")
    model_config = ModelConfig.from_dir(path)
    max_model_len = model_config.max_position_embeddings
    serve_defaults = EngineConfig(model=str(path))
    kv_bytes = serve_defaults.kv_cache_bytes if kv_cache_bytes is None else kv_cache_bytes
    if grid is None:
        grid = default_grid_for(path, kv_bytes, block_size)
    grid.check_fits(max_model_len)
    config = EngineConfig(
        model=str(path), dtype=dtype, device=device, block_size=block_size,
        num_blocks=max(_blocks_needed(grid, block_size), -(-max_model_len // block_size)),
        max_model_len=max_model_len, num_threads=num_threads, enable_prefix_caching=False)
    runner = ModelRunner(config)
    threads = torch.get_num_threads() if device == "cpu" else (num_threads or 0)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    started = time.perf_counter()
    cpu_started = time.process_time()

    def measure(cells: list[Cell], label: str) -> dict[Cell, float]:
        def report(line: str) -> None:
            if progress is not None:
                progress(f"{label}: {line} after {time.perf_counter() - started:.1f} s")
        return _measure_cells(runner, cells, grid, block_size, report)

    median = measure(grid.cells(), "grid")
    prefill_axis, decode_axis, refine_fields = _refine(grid, median, measure)
    wall_s = time.perf_counter() - started
    # CPU seconds per wall second of this process while measuring: about num_threads on an
    # idle machine, less when other processes took the cores (the timings include that)
    cpu_share = (time.process_time() - cpu_started) / wall_s
    prefill_grid = [[median[("prefill", n, c)] for c in grid.prefill_context]
                    for n in prefill_axis]
    decode_grid = [[median[("decode", b, t)] for t in grid.decode_context]
                   for b in decode_axis]
    mc = runner.model_config
    capacity_blocks = num_blocks_for_memory(mc, block_size, mc.dtype, kv_bytes)
    if capacity_blocks <= 0:
        raise ValueError(f"kv_cache_bytes {kv_bytes} holds no KV block of this model")
    profile = make_profile(
        model_name=path.name,
        hardware_name=hardware_description(device, threads)["name"],
        tensor_parallel=1,
        kv_capacity_tokens=capacity_blocks * block_size,
        kv_bytes_per_token=runner.cost.kv_bytes_per_token,
        num_layers=mc.num_layers,
        prefill=(prefill_axis, grid.prefill_context, prefill_grid),
        decode=(decode_axis, grid.decode_context, decode_grid),
        extra={
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "repeats": grid.num_repeats,
            "warmup_rounds": grid.num_warmup,
            "settle_calls": grid.num_settle,
            "refine_tol": grid.refine_tol,
            "max_refine_points": grid.max_refine_points,
            **refine_fields,  # "refined" and "remeasured": {axis name: points}
            "statistic": "median",
            "measured": "ModelRunner.forward + greedy sample per step",
            "wall_s": round(wall_s, 3),
            "cpu_share": round(cpu_share, 3),
            "load_avg_before": list(load_before) if load_before else None,
            "load_avg_after": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "torch_version": torch.__version__,
            "python_version": sys.version.split()[0],
            "block_size": block_size,
        },
    )
    profile["model"].update({
        "path": str(path.resolve()), "config_hash": runner.model_identity().model_hash,
        "dtype": mc.dtype, "num_params": runner.cost.num_params,
        "max_model_len": max_model_len})
    profile["hardware"].update(hardware_description(device, threads))
    return profile
