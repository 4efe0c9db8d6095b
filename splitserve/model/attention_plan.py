"""One step's attention plan: masks, block tables and gather indices built once from the
batch and shared by every layer (the algorithm is described in `attention.py`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

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
