"""Per-phase work accounting: FLOPs and bytes per step, and the utilization they imply.

A blended utilization hides the point of disaggregation, so every step is split into its
prefill part (compute-bound: report MFU) and decode part (bandwidth-bound: report MBU).
The formulas are the usual dense-transformer estimates: 2 FLOPs per parameter per token
plus attention's 4 * layers * q_heads * head_dim FLOPs per (query, key) pair; a decode
step reads every weight once plus the KV of every context token.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from splitserve.metrics.step_stats import StepStats

# (tokens, FLOPs, bytes read) of one phase's part of a step
PhaseWork = tuple[int, float, float]


@dataclass(frozen=True)
class ModelCost:
    num_params: int
    num_layers: int
    num_q_heads: int
    head_dim: int
    weight_bytes: int
    kv_bytes_per_token: int

    def prefill_flops(self, num_new_tokens: int, context_len: int) -> float:
        """FLOPs to compute `num_new_tokens` whose context ends at `context_len`."""
        start = context_len - num_new_tokens
        # sum over new tokens of the keys each attends to (causal)
        num_pairs = num_new_tokens * start + num_new_tokens * (num_new_tokens + 1) / 2
        attn = 4.0 * self.num_layers * self.num_q_heads * self.head_dim * num_pairs
        return 2.0 * self.num_params * num_new_tokens + attn

    def decode_bytes(self, context_lens: list[int]) -> float:
        """Bytes a decode step over these sequences reads (weights once + all KV)."""
        return float(self.weight_bytes + self.kv_bytes_per_token * sum(context_lens))

    def split_step(self, scheduled: Iterable[Any]) -> tuple[PhaseWork, PhaseWork]:
        """A step's (tokens, FLOPs, bytes read) of its prefill part and its decode part.
        `scheduled`: the step's items (`num_new_tokens`, `num_computed_tokens`,
        `context_len`); an item computing one token after others is a decode."""
        p_tokens = d_tokens = 0
        p_flops = d_flops = 0.0
        d_ctx = []
        for item in scheduled:
            flops = self.prefill_flops(item.num_new_tokens, item.context_len)
            if item.num_new_tokens == 1 and item.num_computed_tokens > 0:
                d_tokens += 1
                d_flops += flops
                d_ctx.append(item.context_len)
            else:
                p_tokens += item.num_new_tokens
                p_flops += flops
        d_bytes = self.decode_bytes(d_ctx) if d_ctx else 0.0
        p_bytes = float(self.weight_bytes) if p_tokens else 0.0
        return (p_tokens, p_flops, p_bytes), (d_tokens, d_flops, d_bytes)


@dataclass
class PhaseCounters:
    """Cumulative per-phase work of one worker, and its step statistics (`steps`: counts,
    durations and sizes by step kind); what /metrics exports."""

    busy_s: dict[str, float] = field(default_factory=lambda: {"prefill": 0.0, "decode": 0.0})
    tokens: dict[str, int] = field(default_factory=lambda: {"prefill": 0, "decode": 0})
    flops: dict[str, float] = field(default_factory=lambda: {"prefill": 0.0, "decode": 0.0})
    bytes_read: dict[str, float] = field(
        default_factory=lambda: {"prefill": 0.0, "decode": 0.0}
    )
    steps: StepStats = field(default_factory=StepStats)

    def record_step(
        self,
        step_s: float,
        prefill: PhaseWork,
        decode: PhaseWork,
    ) -> None:
        """Add one step: (tokens, flops, bytes) per phase; time split by FLOP share.

        A mixed step's time is shared between the phases in proportion to their FLOPs:
        the decode part of a mixed batch costs little compute, which is exactly why
        colocated decode stalls behind prefill. Decode tokens are the step's decoding
        sequences (one token each), which is also its decode batch size; an empty step or
        negative counts raise ValueError before anything is recorded.
        """
        self.steps.record(step_s, prefill[0], decode[0])
        total_flops = prefill[1] + decode[1]
        share = prefill[1] / total_flops if total_flops > 0 else 0.0
        for phase, (num_tokens, flops, num_bytes), frac in (
            ("prefill", prefill, share),
            ("decode", decode, 1.0 - share),
        ):
            if num_tokens == 0:
                continue
            self.busy_s[phase] += step_s * frac
            self.tokens[phase] += num_tokens
            self.flops[phase] += flops
            self.bytes_read[phase] += num_bytes

    def utilization(self, peak_flops: float, peak_bytes_s: float) -> dict[str, float]:
        """MFU of prefill and MBU of decode over their own busy time."""
        out: dict[str, float] = {}
        if self.busy_s["prefill"] > 0 and peak_flops > 0:
            out["prefill_mfu"] = self.flops["prefill"] / self.busy_s["prefill"] / peak_flops
        if self.busy_s["decode"] > 0 and peak_bytes_s > 0:
            out["decode_mbu"] = self.bytes_read["decode"] / self.busy_s["decode"] / peak_bytes_s
        return out
