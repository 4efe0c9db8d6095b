"""The one uniform per row that each sampled token is drawn with (see `sampler.py`).

A seeded request's uniform is a 64-bit hash of (seed, output index) alone, in pure Python,
so the same request draws the same token whatever its batch, row, device or worker.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from splitserve.engine.sampling_params import SamplingParams

_MASK64 = (1 << 64) - 1


def seed_for(seed: int, output_index: int) -> int:
    """64-bit hash of (seed, output index) that keys a seeded request's draw at that index.

    splitmix64 finalizer: nearby seeds and indices give unrelated values.
    """
    x = ((seed & _MASK64) * 0x9E3779B97F4A7C15 + output_index + 1) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def seeded_uniform(seed: int, output_index: int) -> float:
    """The uniform in [0, 1) that picks output token `output_index` of a request seeded `seed`.

    Pure Python integer arithmetic: identical on every device, torch version and worker.
    """
    return (seed_for(seed, output_index) >> 11) * 2.0**-53


def uniforms(
    rows: list[int],
    params_list: Sequence[SamplingParams],
    output_indices: Sequence[int],
    device: torch.device,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """One float64 uniform in [0, 1) per row `[len(rows)]`; unseeded rows use `generator`."""
    seeds = [params_list[r].seed for r in rows]
    values = [
        seeded_uniform(seed, output_indices[r]) if seed is not None else 0.0
        for r, seed in zip(rows, seeds, strict=True)
    ]
    u = torch.tensor(values, dtype=torch.float64, device=device)
    unseeded = [i for i, seed in enumerate(seeds) if seed is None]
    if unseeded:
        gen_device = generator.device if generator is not None else device
        drawn = torch.rand(
            len(unseeded), dtype=torch.float64, generator=generator, device=gen_device
        )
        u[torch.tensor(unseeded, device=device)] = drawn.to(device)
    return u
