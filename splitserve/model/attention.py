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
only on the batch, so they are built once per step (`plan_attention`) and shared by layers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from splitserve.model import native
from splitserve.model.forward_batch import ForwardBatch


@dataclass(frozen=True)
class PrefillPlan:
    row_start: int
    query_len: int
    context_len: int
    # None when the chunk has no cached prefix: attend to the fresh K/V, no gather.
    block_ids: torch.Tensor | None
    # None means plain causal (SDPA is_causal); else bool [query_len, context_len].
    mask: torch.Tensor | None


@dataclass(frozen=True)
class DecodePlan:
    rows: torch.Tensor  # [B] rows of the flat batch holding decode tokens
    block_tables: torch.Tensor  # [B, max_blocks], padded with block 0 (masked out)
    mask: torch.Tensor  # [B, 1, 1, max_blocks * block_size] bool, True = attend
    all_rows: bool  # the batch is decodes only, in order: skip the row gather/scatter
    # [2, B * max_blocks, block elements] buffer the gather writes into (None: allocate)
    gather_out: torch.Tensor | None = None
    ctx_lens: torch.Tensor | None = None  # [B] int64, for the native kernel


@dataclass(frozen=True)
class NativePrefillPlan:
    """Every prefill chunk of the step, for the native kernel (int64 CPU tensors)."""

    rows: torch.Tensor  # [P] first flat row of each chunk
    query_lens: torch.Tensor  # [P]
    ctx_lens: torch.Tensor  # [P]
    block_tables: torch.Tensor  # [P, max_blocks], padded with block 0 (never read)


@dataclass(frozen=True)
class AttentionPlan:
    prefills: list[PrefillPlan]
    # decode sequences in groups of similar context length (less padding per SDPA call)
    decodes: tuple[DecodePlan, ...]
    # decodes run in the native kernel (one group, nothing gathered)
    native_decode: bool = False
    sliding_window: int | None = None
    # set with native_decode: prefills go to the native kernel where it supports the
    # layer's dtype / head_dim (checked per call), else to `prefills`' SDPA loop
    native_prefill: NativePrefillPlan | None = None


def _window_mask(
    query_pos: torch.Tensor, key_pos: torch.Tensor, sliding_window: int | None
) -> torch.Tensor:
    """bool [..., Q, K]: key at or before the query and (if windowed) within the window."""
    mask = key_pos <= query_pos
    if sliding_window is not None:
        mask = mask & (key_pos > query_pos - sliding_window)
    return mask


def _check_block_ids(batch: ForwardBatch, block_size: int, num_blocks: int) -> None:
    """Out-of-range ids would fail deep inside a kernel (CUDA: device assert); fail here."""
    for i, (table, ctx_len) in enumerate(zip(batch.block_tables, batch.context_lens, strict=True)):
        used = table[: -(-ctx_len // block_size)]
        if len(used) * block_size < ctx_len:
            raise ValueError(f"sequence {i}: block table too short for {ctx_len} tokens")
        if used and not (0 <= min(used) and max(used) < num_blocks):
            raise ValueError(
                f"sequence {i}: block table {used} has ids outside the cache's "
                f"[0, {num_blocks}) blocks"
            )


def plan_attention(
    batch: ForwardBatch, block_size: int, sliding_window: int | None, num_blocks: int,
    native_decode: bool = False,
) -> AttentionPlan:
    """Masks and gather indices for one step, shared by every layer. `native_decode`: the
    caller checked `native.supports` for this model's dtype and device."""
    _check_block_ids(batch, block_size, num_blocks)
    device = batch.input_ids.device
    prefills: list[PrefillPlan] = []
    decode_seqs: list[int] = []
    row_start = 0
    row_starts: list[int] = []
    for i, (q_len, ctx_len) in enumerate(zip(batch.query_lens, batch.context_lens, strict=True)):
        row_starts.append(row_start)
        if q_len == 1:
            decode_seqs.append(i)
        else:
            start = ctx_len - q_len
            block_ids = mask = None
            if start > 0:
                num_ctx_blocks = -(-ctx_len // block_size)
                block_ids = torch.tensor(
                    batch.block_tables[i][:num_ctx_blocks], dtype=torch.int64, device=device
                )
            if start > 0 or sliding_window is not None:
                query_pos = torch.arange(start, ctx_len, device=device)[:, None]
                key_pos = torch.arange(ctx_len, device=device)[None, :]
                mask = _window_mask(query_pos, key_pos, sliding_window)
            prefills.append(PrefillPlan(row_start, q_len, ctx_len, block_ids, mask))
        row_start += q_len
    groups = ([decode_seqs] if native_decode and decode_seqs
              else _decode_groups(decode_seqs, batch.context_lens))
    decodes = tuple(
        _decode_plan(batch, group, row_starts, block_size, sliding_window, device, native_decode)
        for group in groups
    )
    if len(decodes) == 1 and len(decode_seqs) == len(batch.query_lens):
        # decodes only, in batch order: the output is the attention result itself
        decodes = (replace(decodes[0], all_rows=True),)
    native_prefill = None
    if native_decode and prefills and device.type == "cpu":
        native_prefill = _native_prefill_plan(batch, prefills, block_size)
    return AttentionPlan(prefills, decodes, native_decode, sliding_window, native_prefill)


def _native_prefill_plan(batch: ForwardBatch, prefills: list[PrefillPlan],
                         block_size: int) -> NativePrefillPlan:
    seqs = [i for i, q_len in enumerate(batch.query_lens) if q_len != 1]
    ctx_lens = [batch.context_lens[i] for i in seqs]
    max_blocks = -(-max(ctx_lens) // block_size)
    tables = []
    for i, ctx_len in zip(seqs, ctx_lens, strict=True):
        used = batch.block_tables[i][: -(-ctx_len // block_size)]
        tables.append(used + [0] * (max_blocks - len(used)))
    return NativePrefillPlan(
        rows=torch.tensor([p.row_start for p in prefills], dtype=torch.int64),
        query_lens=torch.tensor([p.query_len for p in prefills], dtype=torch.int64),
        ctx_lens=torch.tensor(ctx_lens, dtype=torch.int64),
        block_tables=torch.tensor(tables, dtype=torch.int64),
    )


def _decode_groups(decode_seqs: list[int], context_lens: list[int]) -> list[list[int]]:
    """Split decode sequences, sorted by context length, into a few equal-count groups.

    One padded SDPA call over all of them gathers and attends over B x longest context;
    with contexts spread evenly, four groups cut that work by about a third, for three
    more small calls per layer.
    """
    if not decode_seqs:
        return []
    num_groups = 4 if len(decode_seqs) >= 16 else 2 if len(decode_seqs) >= 8 else 1
    if num_groups == 1:
        return [decode_seqs]
    ordered = sorted(decode_seqs, key=lambda i: context_lens[i])
    size = -(-len(ordered) // num_groups)
    groups = [ordered[g : g + size] for g in range(0, len(ordered), size)]
    padded_one = len(ordered) * context_lens[ordered[-1]]
    padded_groups = sum(len(g) * context_lens[g[-1]] for g in groups)
    # similar lengths (e.g. a uniform batch): extra calls would cost more than they save
    return groups if padded_groups < 0.8 * padded_one else [decode_seqs]


def _decode_plan(
    batch: ForwardBatch,
    seqs: list[int],
    row_starts: list[int],
    block_size: int,
    sliding_window: int | None,
    device: torch.device,
    native_decode: bool = False,
) -> DecodePlan:
    ctx_lens = [batch.context_lens[i] for i in seqs]
    max_blocks = -(-max(ctx_lens) // block_size)
    tables = []
    for i, ctx_len in zip(seqs, ctx_lens, strict=True):
        # Only the blocks this sequence uses; the padding (block 0) is masked out below.
        num_ctx_blocks = -(-ctx_len // block_size)
        tables.append(batch.block_tables[i][:num_ctx_blocks] + [0] * (max_blocks - num_ctx_blocks))
    ctx = torch.tensor(ctx_lens, dtype=torch.int64, device=device)
    rows = torch.tensor([row_starts[i] for i in seqs], dtype=torch.int64, device=device)
    block_tables = torch.tensor(tables, dtype=torch.int64, device=device)
    if native_decode:  # the kernel reads only each sequence's own blocks: no mask
        return DecodePlan(rows, block_tables, torch.empty(0, dtype=torch.bool), False, None, ctx)
    key_pos = torch.arange(max_blocks * block_size, device=device)[None, :]
    # The single query sits at position ctx_len - 1: keys past it are padding.
    mask = _window_mask(ctx[:, None] - 1, key_pos, sliding_window)
    return DecodePlan(rows=rows, block_tables=block_tables, mask=mask[:, None, None, :],
                      all_rows=False)


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
