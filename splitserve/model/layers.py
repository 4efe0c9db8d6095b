"""Shared transformer layers: RMSNorm, rotary embedding (default / linear / llama3), gated MLP.

Numerics follow Hugging Face `transformers` on purpose (norm in float32, cos/sin computed in
float32 then cast to the activation dtype) so greedy decoding matches it token for token.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from splitserve.model import native, native_gemv
from splitserve.model.config import ModelConfig


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x * rsqrt(mean(x^2) + eps) in float32 (one fused kernel), then cast, then weight
        normed = nn.functional.rms_norm(x.to(torch.float32), (x.shape[-1],), eps=self.eps)
        return self.weight * normed.to(x.dtype)

    def add_and_norm(self, x: torch.Tensor | None, residual: torch.Tensor,
                     fused: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(norm(x + residual), x + residual); x None: (norm(residual), residual).

        fused: one native pass that updates `residual` in place (the caller owns it)."""
        if fused:
            return native.add_rms_norm(x, residual, self.weight, self.eps), residual
        if x is not None:
            residual = x + residual
        return self(residual), residual


def rope_inv_freq(config: ModelConfig) -> torch.Tensor:
    """Inverse frequencies [head_dim // 2] in float32 on CPU, scaled per `config.rope_type`."""
    dim = config.head_dim
    exponents = torch.arange(0, dim, 2, dtype=torch.int64, device="cpu").to(torch.float32) / dim
    inv_freq = 1.0 / (config.rope_theta**exponents)
    if config.rope_type == "linear":
        return inv_freq / config.rope_factor
    if config.rope_type != "llama3":
        return inv_freq
    factor = config.rope_factor
    low, high = config.rope_low_freq_factor, config.rope_high_freq_factor
    old_context_len = config.rope_original_max_position
    low_freq_wavelen = old_context_len / low
    high_freq_wavelen = old_context_len / high
    wavelen = 2 * math.pi / inv_freq
    # Long wavelengths are slowed by `factor`, short ones kept, the band between blended.
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


class RotaryEmbedding(nn.Module):
    """Computes (cos, sin) [T, head_dim] for the batch's positions once per forward."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.register_buffer("inv_freq", rope_inv_freq(config), persistent=False)
        self.inv_freq: torch.Tensor

    def forward(
        self, positions: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = self.inv_freq.to(positions.device)
        freqs = positions.to(torch.float32)[:, None] * inv_freq[None, :]  # [T, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)  # [T, D]
        return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [T, heads, D]; cos/sin: [T, D]. Rotates half-split pairs (the HF/NeoX layout)."""
    cos = cos[:, None, :]
    sin = sin[:, None, :]
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class GatedMLP(nn.Module):
    """down(silu(gate(x)) * up(x)), HF parameter names."""

    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=bias)

        self.intermediate_size = intermediate_size
        # Set by `fuse()` after loading: gate and up as one GEMM.
        self.gate_up_proj: nn.Linear | None = None

    def forward(self, x: torch.Tensor, fused: bool = False) -> torch.Tensor:
        if self.gate_up_proj is not None:
            if fused and isinstance(self.gate_up_proj, PackedLinear):
                act = self.gate_up_proj.silu_mul(x)  # None: too many rows for the GEMV
                if act is not None:
                    return self.down_proj(act)
            gate_up = self.gate_up_proj(x)
            if fused:
                return self.down_proj(native.silu_mul(gate_up))
            gate, up = gate_up.split(self.intermediate_size, -1)
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(nn.functional.silu(gate) * up)

    def fuse(self) -> None:
        if self.gate_up_proj is not None:
            return
        self.gate_up_proj = fuse_linears([self.gate_proj, self.up_proj])
        del self.gate_proj, self.up_proj


def fuse_linears(linears: list[nn.Linear]) -> nn.Linear:
    """One Linear whose output is the given Linears' outputs concatenated (same input)."""
    first = linears[0].weight
    has_bias = linears[0].bias is not None
    out_features = sum(lin.out_features for lin in linears)
    fused = nn.Linear(linears[0].in_features, out_features, bias=has_bias,
                      device=first.device, dtype=first.dtype)
    with torch.no_grad():
        fused.weight = nn.Parameter(torch.cat([lin.weight for lin in linears]),
                                    requires_grad=False)
        if has_bias:
            fused.bias = nn.Parameter(torch.cat([lin.bias for lin in linears]),
                                      requires_grad=False)
    return fused


class PackedLinear(nn.Module):
    """A bfloat16 CPU Linear with its weight pre-reordered into oneDNN's blocked layout.

    `F.linear` re-lays the weight out on every call; packing once at load makes the
    memory-bound small-batch GEMMs of decode ~1.4x faster on AVX-512 BF16 CPUs, with the
    same results up to GEMM rounding order. `batch_size_hint` is the row count oneDNN
    picks the layout for: the step's token budget. Packed for 1 row, a 1024-row prefill
    GEMM ran 1.2-1.5x slower than packed for 1024, while 1-64-row decode GEMMs ran the
    same either way (llama-110m shapes, one core, bf16 AMX).

    Batches of at most `native_gemv.max_rows()` rows (decode) run the native GEMV on the
    plain weight instead: it streams the weight closer to memory bandwidth than oneDNN
    (benchmarks/engine_mbu.py). That keeps the plain weight too, so where the GEMV is used
    the Linear's weight memory doubles (a tied lm_head shares the embedding's, no copy).
    """

    def __init__(self, linear: nn.Linear, batch_size_hint: int = 1) -> None:
        super().__init__()
        if batch_size_hint <= 0:
            raise ValueError(f"batch_size_hint must be > 0, got {batch_size_hint}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, batch_size_hint)
        self.register_buffer("packed_weight", packed, persistent=False)
        self.packed_weight: torch.Tensor
        self.bias = linear.bias
        self.gemv_max_rows = native_gemv.max_rows()
        self.register_buffer("plain_weight", None, persistent=False)
        self.plain_weight: torch.Tensor | None
        self._gemv: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._gemv_silu_mul: Callable[[torch.Tensor], torch.Tensor] | None = None
        if self.gemv_max_rows > 0:
            self.set_plain_weight(weight.contiguous())

    def set_plain_weight(self, weight: torch.Tensor) -> None:
        """The [out, in] weight the GEMV reads (pack_linears moves it to huge pages)."""
        if tuple(weight.shape) != (self.out_features, self.in_features):
            raise ValueError(f"weight must be [{self.out_features}, {self.in_features}], got "
                             f"{tuple(weight.shape)}")
        self.plain_weight = weight
        bias = None if self.bias is None else self.bias.detach().contiguous()
        self._gemv = native_gemv.bind(weight, bias)
        self._gemv_silu_mul = None
        if self.out_features % 2 == 0:
            self._gemv_silu_mul = native_gemv.bind(weight, bias, silu_mul=True)

    def silu_mul(self, x: torch.Tensor) -> torch.Tensor | None:
        """For a fused gate/up projection (gate rows first): `silu(gate) * up` of x in one
        native pass (transformers' bf16 roundings), or None where the GEMV does not run
        (too many rows, or no native GEMV): then call the Linear and activate after."""
        if self._gemv_silu_mul is None or x.dim() != 2 or x.shape[0] > self.gemv_max_rows:
            return None
        return self._gemv_silu_mul(x.contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._gemv is not None and x.dim() == 2 and x.shape[0] <= self.gemv_max_rows:
            return self._gemv(x.contiguous())
        return torch.ops.mkldnn._linear_pointwise(  # type: ignore[no-any-return]
            x.contiguous(), self.packed_weight, self.bias, "none", [], ""
        )


def can_pack(linear: nn.Module) -> bool:
    """bf16 weights on a CPU whose oneDNN has bf16 GEMMs (AVX-512 BF16 / AMX)."""
    if not isinstance(linear, nn.Linear) or linear.weight.device.type != "cpu":
        return False
    if linear.weight.dtype != torch.bfloat16 or not torch.backends.mkldnn.is_available():
        return False
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def pack_linears(root: nn.Module, batch_size_hint: int = 1) -> int:
    """Replace every packable Linear under `root` by a PackedLinear; returns how many."""
    swaps = [
        (parent, name, child)
        for parent in root.modules()
        for name, child in parent.named_children()
        if can_pack(child)
    ]
    packs = []
    for parent, name, child in swaps:
        assert isinstance(child, nn.Linear)
        packs.append(PackedLinear(child, batch_size_hint))
        setattr(parent, name, packs[-1])
    # the GEMV's weights in one huge-page buffer (the originals are freed unless shared)
    plain = [p for p in packs if p.plain_weight is not None]
    copies = native_gemv.hugepage_copies([p.plain_weight for p in plain
                                          if p.plain_weight is not None])
    for p, copy in zip(plain, copies, strict=True):
        p.set_plain_weight(copy)
    return len(swaps)
