"""Simulated requests: from length distributions with Poisson arrivals, or from a trace.

Presets follow the datasets DistServe evaluates on (ShareGPT chat ~755 in / 200 out,
HumanEval code ~171 / 98, LongBench summarisation ~1738 / 91) plus two long-prompt mixes.
Lengths are log-normal around the stated means (sigma 0 gives fixed lengths).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np

MOONCAKE_BLOCK_TOKENS = 512  # tokens per hash_id in the Mooncake trace

# Short names for the production traces in ../shared/traces/ (never vendored).
TRACE_FILES = {
    "azure-conv": "azure_llm_2023_conv.csv",
    "azure-code": "azure_llm_2023_code.csv",
    "mooncake": "mooncake_fast25_conversation.jsonl",
}


def shared_traces_dir() -> Path | None:
    """`shared/traces` next to the repository (or next to a folder above it, for worktrees)."""
    repo = Path(__file__).resolve().parents[2]
    for parent in repo.parents:
        candidate = parent / "shared" / "traces"
        if candidate.is_dir():
            return candidate
    return None


def resolve_trace(name: str) -> Path:
    """A short name from TRACE_FILES, or a path as given."""
    if name in TRACE_FILES:
        folder = shared_traces_dir()
        if folder is None:
            raise ValueError(f"trace {name!r}: no shared/traces folder next to the repository")
        return folder / TRACE_FILES[name]
    return Path(name)


@dataclass(frozen=True)
class LengthDist:
    mean_len: float
    sigma: float = 0.6  # log-normal shape; 0 = every request has mean_len
    max_len: int = 32768

    def __post_init__(self) -> None:
        if self.mean_len < 1:
            raise ValueError(f"mean_len must be >= 1, got {self.mean_len}")
        if self.sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {self.sigma}")

    def sample(self, rng: np.random.Generator, num: int) -> np.ndarray:
        if self.sigma == 0:
            return np.full(num, int(round(self.mean_len)), dtype=np.int64)
        mu = np.log(self.mean_len) - self.sigma**2 / 2  # so that E[X] = mean_len
        draws = rng.lognormal(mu, self.sigma, num)
        return np.clip(np.rint(draws), 1, self.max_len).astype(np.int64)


@dataclass(frozen=True)
class WorkloadSpec:
    """A named mix of one or more (weight, input dist, output dist) components."""

    name: str
    components: tuple[tuple[float, LengthDist, LengthDist], ...]

    def __post_init__(self) -> None:
        if not self.components or any(w <= 0 for w, _, _ in self.components):
            raise ValueError(f"workload {self.name!r} needs components with weights > 0")

    @property
    def mean_input_len(self) -> float:
        total = sum(w for w, _, _ in self.components)
        return sum(w * i.mean_len for w, i, _ in self.components) / total


def _single(name: str, mean_in: float, mean_out: float, sigma: float = 0.6) -> WorkloadSpec:
    return WorkloadSpec(name, ((1.0, LengthDist(mean_in, sigma), LengthDist(mean_out, sigma)),))


PRESETS: dict[str, WorkloadSpec] = {
    "chat": _single("chat", 755, 200),
    "code": _single("code", 171, 98),
    "summarize": _single("summarize", 1738, 91),
    # Search / RAG: retrieved passages make the prompt long, answers are short.
    "search": _single("search", 4096, 192),
    "mixed-long": WorkloadSpec(
        "mixed-long",
        (
            (0.7, LengthDist(755, 0.6), LengthDist(200, 0.6)),
            (0.3, LengthDist(8192, 0.4), LengthDist(256, 0.6)),
        ),
    ),
}


def get_workload(name: str) -> WorkloadSpec:
    if name not in PRESETS:
        raise ValueError(f"unknown workload {name!r}; known: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


def fixed_workload(input_len: int, output_len: int) -> WorkloadSpec:
    """Every request has exactly these lengths (DistServe's 512 / 64 example)."""
    return _single(f"fixed-{input_len}-{output_len}", input_len, output_len, sigma=0.0)


@dataclass(frozen=True)
class Requests:
    """Column arrays, one row per request, sorted by arrival."""

    arrival_s: np.ndarray  # float64
    input_len: np.ndarray  # int64
    output_len: np.ndarray  # int64 (>= 1: the prefill emits the first token)
    hash_ids: tuple[tuple[int, ...], ...] | None = None  # prefix blocks (Mooncake)
    block_tokens: int = MOONCAKE_BLOCK_TOKENS
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.arrival_s)
        if len(self.input_len) != n or len(self.output_len) != n:
            raise ValueError("arrival_s, input_len and output_len must have equal lengths")
        if n and (self.input_len.min() < 1 or self.output_len.min() < 1):
            raise ValueError("every request needs input_len >= 1 and output_len >= 1")
        if self.hash_ids is not None and len(self.hash_ids) != n:
            raise ValueError("hash_ids must have one entry per request")

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def rate(self) -> float:
        span = float(self.arrival_s[-1] - self.arrival_s[0]) if len(self) > 1 else 0.0
        return (len(self) - 1) / span if span > 0 else float("inf")

    def with_rate(self, rate: float) -> Requests:
        """Same requests, arrival times stretched so the mean rate is `rate` req/s."""
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        start = self.arrival_s[0] if len(self) else 0.0
        return replace(self, arrival_s=(self.arrival_s - start) * (self.rate / rate))

    def head(self, num: int) -> Requests:
        ids = None if self.hash_ids is None else self.hash_ids[:num]
        return replace(
            self,
            arrival_s=self.arrival_s[:num],
            input_len=self.input_len[:num],
            output_len=self.output_len[:num],
            hash_ids=ids,
        )


def generate(spec: WorkloadSpec, rate: float, num_requests: int, seed: int = 0) -> Requests:
    """Poisson arrivals at `rate` req/s with lengths drawn from `spec`."""
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    if num_requests < 1:
        raise ValueError(f"num_requests must be >= 1, got {num_requests}")
    rng = np.random.default_rng(seed)
    arrival_s = np.cumsum(rng.exponential(1.0 / rate, num_requests))
    weights = np.array([w for w, _, _ in spec.components], dtype=float)
    which = rng.choice(len(weights), size=num_requests, p=weights / weights.sum())
    input_len = np.empty(num_requests, dtype=np.int64)
    output_len = np.empty(num_requests, dtype=np.int64)
    for k, (_, in_dist, out_dist) in enumerate(spec.components):
        mask = which == k
        input_len[mask] = in_dist.sample(rng, int(mask.sum()))
        output_len[mask] = out_dist.sample(rng, int(mask.sum()))
    return Requests(arrival_s, input_len, output_len, source=f"{spec.name}@{rate}req/s")


def load_trace(path: str | Path, limit: int | None = None) -> Requests:
    """Azure LLM 2023 CSV (`TIMESTAMP,ContextTokens,GeneratedTokens`) or Mooncake JSONL."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"trace not found: {path}")
    if path.suffix == ".jsonl":
        return _load_mooncake(path, limit)
    if path.suffix == ".csv":
        return _load_azure(path, limit)
    raise ValueError(f"unknown trace format {path.suffix!r} (want .csv or .jsonl)")


def _load_azure(path: Path, limit: int | None) -> Requests:
    times, ins, outs = [], [], []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        for row in reader:
            # Timestamps carry 7 fractional digits; datetime takes at most 6.
            stamp = row["TIMESTAMP"][:26]
            times.append(datetime.fromisoformat(stamp).timestamp())
            ins.append(max(int(row["ContextTokens"]), 1))
            outs.append(max(int(row["GeneratedTokens"]), 1))
            if limit is not None and len(times) >= limit:
                break
    arrival = np.asarray(times, dtype=np.float64)
    order = np.argsort(arrival, kind="stable")
    arrival = arrival[order] - arrival[order][0]
    return Requests(
        arrival,
        np.asarray(ins, dtype=np.int64)[order],
        np.asarray(outs, dtype=np.int64)[order],
        source=str(path.name),
    )


def _load_mooncake(path: Path, limit: int | None) -> Requests:
    times, ins, outs, hashes = [], [], [], []
    with path.open() as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                times.append(float(row["timestamp"]) / 1000.0)
                ins.append(max(int(row["input_length"]), 1))
                outs.append(max(int(row["output_length"]), 1))
                hashes.append(tuple(int(h) for h in row.get("hash_ids", ())))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{line_no}: bad trace row ({exc})") from exc
            if limit is not None and len(times) >= limit:
                break
    arrival = np.asarray(times, dtype=np.float64)
    return Requests(
        arrival - arrival[0],
        np.asarray(ins, dtype=np.int64),
        np.asarray(outs, dtype=np.int64),
        hash_ids=tuple(hashes),
        source=str(path.name),
    )
