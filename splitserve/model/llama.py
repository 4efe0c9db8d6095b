"""Llama decoder (also Mistral, and the base Qwen2 / Qwen3 reuse) over a paged KV cache.

Module and parameter names mirror Hugging Face (`model.layers.N.self_attn.q_proj.weight`,
...) so a checkpoint's state dict loads one to one.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from splitserve.model import native
from splitserve.model.attention import AttentionPlan, paged_attention, plan_attention
from splitserve.model.config import ModelConfig
from splitserve.model.forward_batch import ForwardBatch
from splitserve.model.layers import (
    GatedMLP,
    RMSNorm,
    RotaryEmbedding,
    apply_rotary,
    fuse_linears,
    pack_linears,
)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        hidden, q_dim = config.hidden_size, config.num_heads * config.head_dim
        kv_dim = config.num_kv_heads * config.head_dim
        self.q_proj = nn.Linear(hidden, q_dim, bias=config.qkv_bias)
        self.k_proj = nn.Linear(hidden, kv_dim, bias=config.qkv_bias)
        self.v_proj = nn.Linear(hidden, kv_dim, bias=config.qkv_bias)
        self.o_proj = nn.Linear(q_dim, hidden, bias=config.o_proj_bias)
        self.q_dim, self.kv_dim = q_dim, kv_dim
        # Set by `fuse()` after loading: one GEMM for q, k and v instead of three.
        self.qkv_proj: nn.Linear | None = None
        # Qwen3 normalises each head's q and k before rotary.
        self.q_norm: RMSNorm | None = None
        self.k_norm: RMSNorm | None = None
        if config.qk_norm:
            self.q_norm = RMSNorm(config.head_dim, config.rms_norm_eps)
            self.k_norm = RMSNorm(config.head_dim, config.rms_norm_eps)

    def forward(
        self,
        hidden: torch.Tensor,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        kv_cache: torch.Tensor,
        slot_mapping: torch.Tensor,
        plan: AttentionPlan,
        fused: bool = False,
    ) -> torch.Tensor:
        num_tokens = hidden.shape[0]
        cos, sin = cos_sin
        heads, kv_heads, head_dim = self.num_heads, self.num_kv_heads, self.head_dim
        if fused and self.qkv_proj is not None and self.q_norm is None:
            # rotate q and k in place inside the fused output; all three stay strided views
            qkv = self.qkv_proj(hidden)
            native.rotary_(qkv, heads + kv_heads, head_dim, cos, sin)
            q = qkv[:, : self.q_dim].view(num_tokens, heads, head_dim)
            k = qkv[:, self.q_dim : self.q_dim + self.kv_dim].view(num_tokens, kv_heads, head_dim)
            v = qkv[:, self.q_dim + self.kv_dim :].view(num_tokens, kv_heads, head_dim)
        elif self.qkv_proj is not None and self.q_norm is None:
            # q and k sit side by side in the fused output: rotate both in one pass
            qkv = self.qkv_proj(hidden)
            qk = qkv[:, : self.q_dim + self.kv_dim].view(num_tokens, heads + kv_heads, head_dim)
            q, k = apply_rotary(qk, cos, sin).split([heads, kv_heads], 1)
            v = qkv[:, self.q_dim + self.kv_dim :].view(num_tokens, kv_heads, head_dim)
        else:
            if self.qkv_proj is not None:
                q, k, v = self.qkv_proj(hidden).split([self.q_dim, self.kv_dim, self.kv_dim], -1)
            else:
                q, k, v = self.q_proj(hidden), self.k_proj(hidden), self.v_proj(hidden)
            q = q.view(num_tokens, heads, head_dim)
            k = k.view(num_tokens, kv_heads, head_dim)
            v = v.view(num_tokens, kv_heads, head_dim)
            if self.q_norm is not None and self.k_norm is not None:
                q, k = self.q_norm(q), self.k_norm(k)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out = paged_attention(q, k, v, kv_cache, slot_mapping, plan)  # [T, H, D]
        return self.o_proj(out.reshape(num_tokens, self.num_heads * self.head_dim))

    def fuse(self) -> None:
        """Replace q/k/v_proj by one `qkv_proj` (rows concatenated: q, then k, then v)."""
        if self.qkv_proj is not None:
            return
        self.qkv_proj = fuse_linears([self.q_proj, self.k_proj, self.v_proj])
        del self.q_proj, self.k_proj, self.v_proj


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.self_attn = Attention(config)
        self.mlp = GatedMLP(config.hidden_size, config.intermediate_size, config.mlp_bias)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self,
        hidden: torch.Tensor,
        residual: torch.Tensor | None,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        kv_cache: torch.Tensor,
        slot_mapping: torch.Tensor,
        plan: AttentionPlan,
        fused: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(MLP output, residual stream before it): the residual add is deferred into the
        next norm (`add_and_norm`), so a fused backend does add + norm in one pass.
        residual None (first layer): `hidden` is the embedding output, the residual."""
        if residual is None:  # the embedding output (ours: later layers add into it)
            normed, residual = self.input_layernorm.add_and_norm(None, hidden, fused)
        else:
            normed, residual = self.input_layernorm.add_and_norm(hidden, residual, fused)
        attn = self.self_attn(normed, cos_sin, kv_cache, slot_mapping, plan, fused)
        normed, residual = self.post_attention_layernorm.add_and_norm(attn, residual, fused)
        return self.mlp(normed, fused), residual


class DecoderModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class LlamaForCausalLM(nn.Module):
    """`forward(batch, kv_caches) -> logits [N, vocab]` float32, one row per logits index."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.model = DecoderModel(config)
        self.rotary_emb = RotaryEmbedding(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        # Set by the loader: hash of config + checkpoint tensor names/shapes.
        self.identity = ""
        # decode attention and fused element-wise ops in C++ where they apply (native.py;
        # tests switch it off to compare with the pure-torch path)
        self.use_native = True
        self._workspace: torch.Tensor | None = None

    def fuse_projections(self) -> None:
        """Fuse q/k/v and gate/up projections for speed (after loading: the checkpoint keeps
        the Hugging Face names). Idempotent; outputs match the unfused model up to GEMM
        rounding order."""
        for module in self.modules():
            if isinstance(module, (Attention, GatedMLP)):
                module.fuse()

    def pack_for_cpu(self, max_num_tokens: int = 1024) -> int:
        """bf16 on CPU: pre-pack every Linear for oneDNN (after `fuse_projections`) for
        steps of up to `max_num_tokens` rows; returns how many were packed (0 for float32,
        CUDA or a CPU without bf16 GEMMs)."""
        return pack_linears(self, max_num_tokens)

    def _gather_workspace(self, num_elements: int, dtype: torch.dtype,
                          device: torch.device) -> torch.Tensor:
        """A grow-only buffer reused by every layer and step for the decode KV gather.

        A fresh tensor of tens of MB per layer is mmap'ed and page-faulted each time on CPU;
        reusing one costs the faults once."""
        ws = self._workspace
        if ws is None or ws.numel() < num_elements or ws.dtype != dtype or ws.device != device:
            ws = torch.empty(max(num_elements, 1 << 16), dtype=dtype, device=device)
            self._workspace = ws
        return ws[:num_elements]

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    @torch.inference_mode()
    def forward(self, batch: ForwardBatch, kv_caches: list[torch.Tensor]) -> torch.Tensor:
        """Run one step. Side effect: writes the batch's new K/V into `kv_caches`."""
        if len(kv_caches) != self.config.num_layers:
            raise ValueError(
                f"expected {self.config.num_layers} KV cache tensors, got {len(kv_caches)}"
            )
        _, num_blocks, block_size, _, _ = kv_caches[0].shape
        hidden = self.model.embed_tokens(batch.input_ids)  # [T, hidden]
        fused = self.use_native and native.supports(kv_caches[0].dtype, hidden.device)
        plan = plan_attention(batch, block_size, self.config.sliding_window, num_blocks,
                              fused)
        if plan.decodes and not fused:
            # one reused buffer, split between the decode groups (each layer overwrites it)
            cache = kv_caches[0]
            per_block = cache[0, 0].numel()
            sizes = [2 * d.block_tables.numel() * per_block for d in plan.decodes]
            ws = self._gather_workspace(sum(sizes), cache.dtype, cache.device)
            groups, offset = [], 0
            for d, size in zip(plan.decodes, sizes, strict=True):
                out = ws[offset : offset + size].view(2, -1, per_block)
                groups.append(replace(d, gather_out=out))
                offset += size
            plan = replace(plan, decodes=tuple(groups))
        cos_sin = self.rotary_emb(batch.positions, hidden.dtype)
        residual: torch.Tensor | None = None
        for layer, kv_cache in zip(self.model.layers, kv_caches, strict=True):
            hidden, residual = layer(hidden, residual, cos_sin, kv_cache, batch.slot_mapping,
                                     plan, fused)
        assert residual is not None
        # Last add, norm and head only for the rows whose logits are wanted (all per row).
        rows = batch.logits_indices
        hidden, _ = self.model.norm.add_and_norm(hidden[rows], residual[rows], fused)
        return self.lm_head(hidden).float()


class MistralForCausalLM(LlamaForCausalLM):
    """Llama layout; the sliding window (if any) lives in the config and the attention masks."""
