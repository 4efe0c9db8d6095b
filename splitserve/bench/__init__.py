"""splitserve.bench: load generator, workloads, trace replay, statistics, goodput, plots.

Modules: `workloads` (length distributions, presets, exact-length prompts), `arrivals`
(Poisson / constant / burst, trace replay with scaling), `client` (async streaming
client), `records` (per-request record), `stats` (pure statistics, goodput search),
`runner` (one run, sweeps), `report` (JSONL / JSON / table), `plots` (PNG), `cli`.

The public names below load lazily so that `splitserve.bench.cli` (imported by
`splitserve --help`) pulls in nothing but argparse. Nothing here imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BenchConfig": "runner",
    "BenchResult": "runner",
    "run_bench": "runner",
    "run_sweep": "runner",
    "search_goodput": "runner",
    "sweep_goodput": "runner",
    "BenchError": "client",
    "RequestRecord": "records",
    "SLO": "stats",
    "summarize": "stats",
    "goodput_search": "stats",
    "PRESETS": "workloads",
    "Workload": "workloads",
    "LengthDist": "workloads",
    "TraceScaling": "arrivals",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'splitserve.bench' has no attribute {name!r}")
    module = importlib.import_module(f"splitserve.bench.{_EXPORTS[name]}")
    return getattr(module, name)
