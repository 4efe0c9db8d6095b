"""Paged attention in plain torch (the reference backend; same code on CPU and CUDA).

The algorithm. The KV cache of a layer is a pool of fixed-size blocks,
`kv_cache[0 = K | 1 = V, block_id, offset_in_block, kv_head, head_dim]`; a sequence owns a
list of blocks (its block table), so token position p lives in block
`block_table[p // block_size]` at offset `p % block_size`. Every step first scatters the new
tokens' K/V into their slots (`slot_mapping`), so the cache always holds each sequence's whole
context. Then each sequence attends from its new queries to its context:

* prefill chunks of a bf16 model on a CPU with AVX512-BF16 (head_dim 64 or 128) all go to
  one call of the C++ flash-attention kernel in `native.py` (AMX tiles where the CPU has
  them): fresh or continuing a cached prefix alike, it reads every key in place from the
  cache through the block table, with the shifted causal mask below. Elsewhere:
* a prefill chunk with no cached prefix attends to its own fresh K/V with a plain causal mask
  (nothing needs to be read back from the cache);
* a prefill chunk that continues a cached prefix gathers its context blocks from the cache
  (in block-table order, trimmed to `context_len`) and uses a causal mask shifted by the
  prefix length: query i (absolute position start + i) sees keys 0 .. start + i;
* decode sequences (one query each) on CPU go to the C++ kernel in `native.py`: it reads
  each sequence's blocks in place through its block table (no gather copy) with an online
  softmax, one pass for all of them. Elsewhere (CUDA, or no compiler) they are batched in
  a few groups of similar context length (less padding; see `_decode_groups`): their block
  tables are padded to the longest one, the blocks gathered into a
  [B, max_blocks * block_size] key axis, and a per-row mask hides the padding beyond each
  `context_len`; one SDPA call per group.

A sliding window (Mistral) additionally hides keys more than `sliding_window - 1` positions
behind the query. Grouped-query attention uses SDPA's `enable_gqa` (query head h reads KV head
h // (num_heads / num_kv_heads), as in `transformers`). The masks and gather indices depend
only on the batch, so they are built once per step (`plan_attention`, in `attention_plan.py`)
and shared by layers.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from splitserve.model import native
from splitserve.model.attention_plan import AttentionPlan, plan_attention

__all__ = ["AttentionPlan", "paged_attention", "plan_attention", "write_kv"]


def write_kv(
    kv_cache: torch.Tensor, slot_mapping: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> None:
    """Scatter new K/V [T, kv_heads, D] into the cache at the flat slots [T]."""
    _, num_blocks, block_size, num_kv_heads, head_dim = kv_cache.shape
    flat = kv_cache.view(2, num_blocks * block_size, num_kv_heads, head_dim)
    flat[0].index_copy_(0, slot_mapping, k)
    flat[1].index_copy_(0, slot_mapping, v)


def _gather_blocks(
    kv_cache: torch.Tensor, block_ids: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """[2, len(block_ids), block_size * KVH * D]: whole blocks copied in `block_ids` order.

    index_select over flat rows is a plain row copy, several times faster on CPU than
    advanced indexing of the 5-D cache; `out` (a reused buffer) saves the page faults of a
    fresh allocation.
    """
    flat = kv_cache.view(2, kv_cache.shape[1], -1)
    if out is None:
        return flat.index_select(1, block_ids)
    return torch.index_select(flat, 1, block_ids, out=out)


def paged_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    plan: AttentionPlan,
) -> torch.Tensor:
    """q [T, H, D], k/v [T, KVH, D] (rotary applied) -> attention output [T, H, D].

    Side effect: writes k/v into `kv_cache` at `slot_mapping` first.
    """
    if plan.native_decode:  # the model chose the native kernels for this dtype / device
        native.write_kv(kv_cache, slot_mapping, k, v)
    else:
        write_kv(kv_cache, slot_mapping, k, v)
    if plan.native_decode and plan.decodes:
        d = plan.decodes[0]
        assert d.ctx_lens is not None
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        native.paged_decode(q, out, kv_cache, d.rows, d.ctx_lens, d.block_tables,
                            plan.sliding_window, q.shape[-1] ** -0.5)
        if d.all_rows:
            return out
        plan = replace(plan, decodes=())
    else:
        out = torch.empty_like(q)
    _, _, block_size, num_kv_heads, head_dim = kv_cache.shape
    prefills = plan.prefills
    pre = plan.native_prefill
    if pre is not None and native.supports_prefill(kv_cache.dtype, q.device, head_dim):
        native.paged_prefill(q, out, kv_cache, pre.rows, pre.query_lens, pre.ctx_lens,
                             pre.block_tables, plan.sliding_window, head_dim**-0.5)
        prefills = []
    for p in prefills:
        rows = slice(p.row_start, p.row_start + p.query_len)
        q_seq = q[rows].transpose(0, 1)  # [H, Q, D]
        if p.block_ids is None:
            k_seq, v_seq = k[rows].transpose(0, 1), v[rows].transpose(0, 1)  # [KVH, Q, D]
        else:
            ctx = _gather_blocks(kv_cache, p.block_ids).view(2, -1, num_kv_heads, head_dim)
            k_seq = ctx[0, : p.context_len].transpose(0, 1)  # [KVH, C, D]
            v_seq = ctx[1, : p.context_len].transpose(0, 1)
        # 4-D (batch of one): 3-D inputs take SDPA's slow math path on CPU (~8x in bf16)
        out[rows] = F.scaled_dot_product_attention(
            q_seq[None],
            k_seq[None],
            v_seq[None],
            attn_mask=p.mask,
            is_causal=p.mask is None,
            enable_gqa=True,
        )[0].transpose(0, 1)
    for d in plan.decodes:
        q_dec = q if d.all_rows else q[d.rows]  # [B, H, D]
        num_seqs = q_dec.shape[0]
        ctx = _gather_blocks(kv_cache, d.block_tables.flatten(), d.gather_out)
        ctx = ctx.view(2, num_seqs, -1, num_kv_heads, head_dim)
        attn = F.scaled_dot_product_attention(
            q_dec[:, :, None, :],  # [B, H, 1, D]
            ctx[0].transpose(1, 2),  # [B, KVH, L, D]
            ctx[1].transpose(1, 2),
            attn_mask=d.mask,
            enable_gqa=True,
        )[:, :, 0, :]
        if d.all_rows:
            out = attn
        else:
            out[d.rows] = attn
    return out
