"""Step latency of one engine instance: a roofline over (model, hardware, tensor parallel).

A step runs some prefill tokens (chunks of prompts, each after some cached context) and one
token for each of some decoding sequences. Its time is

    max(FLOPs / (peak * compute_efficiency), bytes / (bandwidth * memory_efficiency))
      + tensor-parallel all-reduces + a fixed per-step overhead

FLOPs = 2 * matmul params * tokens + 4 * layers * heads * head_dim * (attention pairs);
the matmul term counts T + compute_half_tokens tokens (default 0), which makes a step of T
tokens reach T / (T + half) of the efficiency: matmuls with few rows run below peak.
bytes = weights + the KV cache the step reads. Everything is per GPU (divided by TP).
The simulator calls `step_s` once per simulated step, so it is plain float arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from splitserve.planner.hardware import HardwareProfile
from splitserve.planner.model_spec import ModelSpec


class LatencyModel(Protocol):
    """What the simulator needs from a cost model (roofline or a measured profile)."""

    tensor_parallel: int
    kv_capacity_tokens: int
    kv_bytes_per_token: int  # whole instance (all TP shards)
    num_layers: int

    def step_s(
        self,
        num_prefill_tokens: int,
        prefill_attn_pairs: float,
        prefill_kv_tokens: int,
        num_decode_seqs: int,
        decode_ctx_tokens: int,
    ) -> float:
        """Seconds for one step.

        prefill_attn_pairs: sum over chunks of c * p + c * (c + 1) / 2 (query-key pairs of a
        chunk of c tokens after p cached ones); prefill_kv_tokens: sum of p + c;
        decode_ctx_tokens: total KV tokens of the decoding sequences.
        """
        ...


@dataclass(frozen=True)
class Efficiency:
    """Fractions of the peaks a real engine reaches, and what the roofline leaves out."""

    compute_efficiency: float = 0.6
    memory_efficiency: float = 0.8
    step_overhead_s: float = 0.002
    gpu_memory_utilization: float = 0.9
    # Small-GEMM penalty: a step of T tokens reaches T / (T + this) of compute_efficiency
    # (matmuls with few rows underuse the tensor cores). 0 = the plain roofline.
    compute_half_tokens: float = 0.0

    def __post_init__(self) -> None:
        for name in ("compute_efficiency", "memory_efficiency", "gpu_memory_utilization"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if self.step_overhead_s < 0:
            raise ValueError(f"step_overhead_s must be >= 0, got {self.step_overhead_s}")
        if self.compute_half_tokens < 0:
            raise ValueError(f"compute_half_tokens must be >= 0, got {self.compute_half_tokens}")


def prefill_attn_pairs(num_new_tokens: int, num_cached_tokens: int) -> float:
    """Causal query-key pairs of a chunk of new tokens placed after cached ones."""
    c = num_new_tokens
    return c * num_cached_tokens + c * (c + 1) / 2


class RooflineLatencyModel:
    """Analytic step latency; raises ValueError if the weights do not fit at this TP."""

    def __init__(
        self,
        model: ModelSpec,
        hardware: HardwareProfile,
        tensor_parallel: int = 1,
        efficiency: Efficiency | None = None,
    ) -> None:
        if tensor_parallel < 1:
            raise ValueError(f"tensor_parallel must be >= 1, got {tensor_parallel}")
        if model.num_kv_heads % tensor_parallel and tensor_parallel % model.num_kv_heads:
            raise ValueError(
                f"tensor_parallel {tensor_parallel} does not divide the {model.num_kv_heads} "
                "KV heads (nor the reverse)"
            )
        eff = efficiency or Efficiency()
        self.model = model
        self.hardware = hardware
        self.efficiency = eff
        self.tensor_parallel = tensor_parallel
        self.num_layers = model.num_layers
        self.kv_bytes_per_token = model.kv_bytes_per_token
        usable = hardware.memory_bytes * tensor_parallel * eff.gpu_memory_utilization
        free_bytes = usable - model.weight_bytes
        self.kv_capacity_tokens = int(free_bytes // model.kv_bytes_per_token)
        if self.kv_capacity_tokens <= 0:
            raise ValueError(
                f"{model.name} ({model.weight_bytes / 1e9:.1f} GB of weights) does not fit on "
                f"{tensor_parallel} x {hardware.name} ({hardware.memory_bytes / 1e9:.0f} GB each)"
            )
        tp = tensor_parallel
        flops = hardware.flops_for(model.dtype) * eff.compute_efficiency
        bw = hardware.memory_bw_bytes_s * eff.memory_efficiency
        # Precomputed per-unit costs in seconds, per GPU.
        self._s_per_token_flops = 2.0 * model.num_matmul_params / tp / flops
        self._s_per_attn_pair = (
            4.0 * model.num_layers * model.num_heads * model.head_dim / tp / flops
        )
        self._s_weights = model.weight_bytes / tp / bw
        self._s_per_kv_token = model.kv_bytes_per_token / tp / bw
        self._overhead_s = eff.step_overhead_s
        self._half_tokens = eff.compute_half_tokens
        if tp > 1:
            # Two ring all-reduces per layer over the step's activations.
            num_allreduce = 2 * model.num_layers
            ring_factor = 2.0 * (tp - 1) / tp
            bytes_per_token = model.hidden_size * model.dtype_bytes
            self._s_comm_per_token = (
                num_allreduce * ring_factor * bytes_per_token / hardware.interconnect_bw_bytes_s
            )
            self._s_comm_fixed = num_allreduce * hardware.interconnect_latency_s
        else:
            self._s_comm_per_token = 0.0
            self._s_comm_fixed = 0.0

    def step_s(
        self,
        num_prefill_tokens: int,
        prefill_attn_pairs: float,
        prefill_kv_tokens: int,
        num_decode_seqs: int,
        decode_ctx_tokens: int,
    ) -> float:
        num_tokens = num_prefill_tokens + num_decode_seqs
        if num_tokens == 0:
            return 0.0
        compute = (num_tokens + self._half_tokens) * self._s_per_token_flops + (
            prefill_attn_pairs + decode_ctx_tokens
        ) * self._s_per_attn_pair
        memory = self._s_weights + (prefill_kv_tokens + decode_ctx_tokens) * self._s_per_kv_token
        comm = self._s_comm_fixed + num_tokens * self._s_comm_per_token
        return (compute if compute > memory else memory) + comm + self._overhead_s

    def prefill_s(self, num_tokens: int, num_cached_tokens: int = 0) -> float:
        """One prompt alone: the prefill(batch tokens, context) view of the table."""
        return self.step_s(
            num_tokens,
            prefill_attn_pairs(num_tokens, num_cached_tokens),
            num_tokens + num_cached_tokens,
            0,
            0,
        )

    def decode_s(self, num_seqs: int, total_ctx_tokens: int) -> float:
        """One decode step of `num_seqs` sequences holding `total_ctx_tokens` of KV."""
        return self.step_s(0, 0.0, 0, num_seqs, total_ctx_tokens)
