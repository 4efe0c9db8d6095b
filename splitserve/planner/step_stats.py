"""What a simulation's instances did step by step: counts, seconds and sizes by step kind.

The same quantities a real worker exports (`splitserve_worker_steps_total`,
`..._step_duration_seconds`, `..._decode_batch_size`, `..._prefill_tokens_per_step`; see
docs/metrics.md), so a simulated run can be compared with a measured one: whether a TPOT
error comes from how many steps ran and how full they were (batching, scheduling) or from
how long each took (the cost profile). Kinds: `prefill` (prompt tokens only), `decode`
(decodes only), `mixed` (both).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

STEP_KINDS = ("prefill", "decode", "mixed")


@dataclass(frozen=True)
class StepSummary:
    """Steps of one instance or a group of them (e.g. one role's pool)."""

    num_steps: Mapping[str, int]  # by kind
    step_s: Mapping[str, float]  # summed step seconds by kind
    num_decode_seqs: int  # summed over steps with decodes: their batch sizes
    num_prefill_tokens: int  # prompt tokens summed over steps

    def __post_init__(self) -> None:
        for kind in STEP_KINDS:
            if self.num_steps.get(kind, 0) < 0 or self.step_s.get(kind, 0.0) < 0:
                raise ValueError(f"negative step count or seconds for {kind!r}")
        if set(self.num_steps) - set(STEP_KINDS) or set(self.step_s) - set(STEP_KINDS):
            raise ValueError(f"step kinds must be among {STEP_KINDS}: "
                             f"{sorted({*self.num_steps, *self.step_s})}")

    def mean_step_s(self, kind: str) -> float | None:
        n = self.num_steps.get(kind, 0)
        return self.step_s.get(kind, 0.0) / n if n else None

    @property
    def mean_decode_batch(self) -> float | None:
        """Mean decoding sequences per step with decodes (decode and mixed steps)."""
        n = self.num_steps.get("decode", 0) + self.num_steps.get("mixed", 0)
        return self.num_decode_seqs / n if n else None

    def to_dict(self) -> dict[str, Any]:
        def rnd(v: float | None, digits: int) -> float | None:
            return None if v is None else round(v, digits)

        return {"num_steps": {k: self.num_steps.get(k, 0) for k in STEP_KINDS},
                "mean_step_s": {k: rnd(self.mean_step_s(k), 6) for k in STEP_KINDS},
                "mean_decode_batch": rnd(self.mean_decode_batch, 3),
                "num_prefill_tokens": self.num_prefill_tokens}

    @staticmethod
    def total(parts: Iterable[StepSummary]) -> StepSummary:
        parts = list(parts)
        return StepSummary({k: sum(p.num_steps.get(k, 0) for p in parts) for k in STEP_KINDS},
                           {k: sum(p.step_s.get(k, 0.0) for p in parts) for k in STEP_KINDS},
                           sum(p.num_decode_seqs for p in parts),
                           sum(p.num_prefill_tokens for p in parts))


class StepTally:
    """Per simulated instance: steps and step seconds by kind, decode batch sizes and
    prompt tokens summed. `add` runs once per simulated step, so it stays O(1)."""

    __slots__ = ("roles", "_num_steps", "_step_s", "_decode_seqs", "_prefill_tokens")

    def __init__(self, roles: list[str]) -> None:
        self.roles = roles
        self._num_steps = [[0, 0, 0] for _ in roles]
        self._step_s = [[0.0, 0.0, 0.0] for _ in roles]
        self._decode_seqs = [0] * len(roles)
        self._prefill_tokens = [0] * len(roles)

    def add(self, idx: int, num_prefill_tokens: int, num_decode_seqs: int,
            step_s: float) -> None:
        # kind index into STEP_KINDS
        kind = (2 if num_decode_seqs else 0) if num_prefill_tokens else 1
        self._num_steps[idx][kind] += 1
        self._step_s[idx][kind] += step_s
        self._decode_seqs[idx] += num_decode_seqs
        self._prefill_tokens[idx] += num_prefill_tokens

    def instance(self, idx: int) -> StepSummary:
        return StepSummary(dict(zip(STEP_KINDS, self._num_steps[idx], strict=True)),
                           dict(zip(STEP_KINDS, self._step_s[idx], strict=True)),
                           self._decode_seqs[idx], self._prefill_tokens[idx])

    def by_role(self) -> dict[str, StepSummary]:
        """One summary per role, its instances added up (as a pool's workers' scrapes
        are)."""
        return {role: StepSummary.total(self.instance(i) for i, r in enumerate(self.roles)
                                        if r == role)
                for role in dict.fromkeys(self.roles)}
