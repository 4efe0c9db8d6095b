"""ForwardBatch: one engine step's flat input to `model.forward`.

Sequences are laid out one after another in the flat token dimension T. Each sequence
contributes `query_lens[i]` new tokens (a prefill chunk, possibly continuing a cached prefix,
or a single decode token); its K/V history lives in the paged cache at `block_tables[i]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

# (token ids to compute this step, position of the first of them, block table)
SeqInput = tuple[Sequence[int], int, Sequence[int]]


@dataclass(frozen=True)
class ForwardBatch:
    """Shapes: input_ids/positions/slot_mapping [T] int64, logits_indices [N] int64.

    `context_lens[i]` = cached + new tokens of sequence i after this step, so its new tokens
    sit at positions context_lens[i] - query_lens[i] .. context_lens[i] - 1.
    `slot_mapping[t]` = block_id * block_size + offset where token t's K/V is written.
    """

    input_ids: torch.Tensor
    positions: torch.Tensor
    slot_mapping: torch.Tensor
    query_lens: list[int]
    context_lens: list[int]
    block_tables: list[list[int]]
    logits_indices: torch.Tensor

    def __post_init__(self) -> None:
        num_tokens = int(self.input_ids.shape[0])
        if self.input_ids.dim() != 1:
            raise ValueError(f"input_ids must be 1-D [T], got shape {tuple(self.input_ids.shape)}")
        for name in ("positions", "slot_mapping"):
            shape = tuple(getattr(self, name).shape)
            if shape != (num_tokens,):
                raise ValueError(f"{name} must have shape ({num_tokens},), got {shape}")
        num_seqs = len(self.query_lens)
        if len(self.context_lens) != num_seqs or len(self.block_tables) != num_seqs:
            raise ValueError(
                f"query_lens ({num_seqs}), context_lens ({len(self.context_lens)}) and "
                f"block_tables ({len(self.block_tables)}) must have one entry per sequence"
            )
        if sum(self.query_lens) != num_tokens:
            raise ValueError(f"sum(query_lens)={sum(self.query_lens)} != num tokens {num_tokens}")
        for i, (q_len, ctx_len) in enumerate(zip(self.query_lens, self.context_lens, strict=True)):
            if q_len <= 0 or ctx_len < q_len:
                raise ValueError(
                    f"sequence {i}: need 0 < query_len <= context_len, got {q_len}, {ctx_len}"
                )
        if self.logits_indices.dim() != 1:
            raise ValueError("logits_indices must be 1-D [N]")

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])

    @classmethod
    def build(
        cls,
        seqs: Sequence[SeqInput],
        block_size: int,
        logits_for: Sequence[int] | None = None,
        device: torch.device | str = "cpu",
        *,
        every_token: bool = False,
    ) -> ForwardBatch:
        """Lay out `seqs` = [(token_ids, start_position, block_table), ...] as one batch.

        `logits_for`: indices into `seqs` whose next-token logits are wanted, in the order the
        logits rows come back (default: every sequence). By default only the row of each such
        sequence's last token is selected; `every_token=True` selects all its rows (prompt
        logprobs, parity tests).
        """
        if block_size <= 0:
            raise ValueError(f"block_size must be > 0, got {block_size}")
        if not seqs:
            raise ValueError("a ForwardBatch needs at least one sequence")
        input_ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        query_lens: list[int] = []
        context_lens: list[int] = []
        tables: list[list[int]] = []
        row_starts: list[int] = []
        for i, (token_ids, start, table) in enumerate(seqs):
            q_len = len(token_ids)
            ctx_len = start + q_len
            if q_len == 0:
                raise ValueError(f"sequence {i} has no tokens to compute")
            if start < 0:
                raise ValueError(f"sequence {i}: start_position must be >= 0, got {start}")
            if len(table) * block_size < ctx_len:
                raise ValueError(
                    f"sequence {i}: block table of {len(table)} blocks x {block_size} holds "
                    f"fewer than its {ctx_len} context tokens"
                )
            row_starts.append(len(input_ids))
            input_ids.extend(token_ids)
            pos = range(start, ctx_len)
            positions.extend(pos)
            slots.extend(table[p // block_size] * block_size + p % block_size for p in pos)
            query_lens.append(q_len)
            context_lens.append(ctx_len)
            tables.append(list(table))
        chosen = range(len(seqs)) if logits_for is None else logits_for
        rows: list[int] = []
        for i in chosen:
            if not 0 <= i < len(seqs):
                raise ValueError(f"logits_for names sequence {i}, batch has {len(seqs)}")
            end = row_starts[i] + query_lens[i]
            rows.extend(range(row_starts[i], end) if every_token else [end - 1])

        def as_tensor(values: list[int]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.int64, device=device)

        return cls(
            input_ids=as_tensor(input_ids),
            positions=as_tensor(positions),
            slot_mapping=as_tensor(slots),
            query_lens=query_lens,
            context_lens=context_lens,
            block_tables=tables,
            logits_indices=as_tensor(rows),
        )
