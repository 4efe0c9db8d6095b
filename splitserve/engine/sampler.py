"""Batched next-token sampling with per-row parameters.

For each row of `logits [N, vocab]` the sampler
  1. masks EOS / stop token ids while the row is below its `min_tokens` (only rows that need it);
  2. greedy rows (temperature 0) take `argmax` of those logits: exactly what HF greedy does;
  3. other rows: divide by temperature, then mask by top-k, then top-p, then min-p (each mask
     works on the distribution left by the previous one; `sampling_masks` holds the
     reference definitions the tests check this against), and draw one token by inverse CDF with a
     single uniform u per row: the first token whose cumulative probability exceeds u, in
     id order for untruncated rows and in probability order for truncated ones (whose kept
     set is then a prefix, found among the top NUM_CANDIDATES tokens without a full sort).
The uniform of a seeded row is a 64-bit hash of (seed, output index) alone, computed in pure
Python, so a seeded request draws the same token whatever the batch it sits in, its row, the
device, and whichever worker samples it (prefill samples index 0, decode the rest). Unseeded
rows draw u from the engine's generator. One uniform per row (not one per vocabulary entry,
as Gumbel / exponential-race sampling needs) keeps the random draw off the hot path.
Logprobs are `log_softmax` of the raw logits. "Same token" holds up to floating point: a
draw lying within rounding error of a probability boundary (or exactly tied tokens) may
resolve differently on another device or with reductions split differently.

An all-greedy batch without logprobs or min_tokens costs one `argmax` and one `.tolist()`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import torch

from splitserve.engine.outputs import TokenLogprobs
from splitserve.engine.sampling_params import SamplingParams
from splitserve.engine.seeded_random import uniforms
from splitserve.model import native

# How many of a row's most likely tokens top-k / top-p / min-p are first applied to. Fixed
# (not sized to the batch) so that which path a row takes depends on that row alone.
NUM_CANDIDATES = 1024


@dataclass
class SamplerOutput:
    """One sampled token per row, and its logprobs where the row asked for them."""

    token_ids: list[int]
    logprobs: list[TokenLogprobs | None]


def _mask_min_tokens(
    logits: torch.Tensor,
    params_list: Sequence[SamplingParams],
    output_indices: Sequence[int],
    eos_token_ids: Collection[int],
) -> torch.Tensor:
    """Copy of `logits` with EOS and stop ids at -inf on rows still below min_tokens."""
    rows: list[int] = []
    cols: list[int] = []
    for row, (params, index) in enumerate(zip(params_list, output_indices, strict=True)):
        if index < params.min_tokens:
            banned = set(params.stop_token_ids)
            if not params.ignore_eos:
                banned.update(eos_token_ids)
            banned = {t for t in banned if 0 <= t < logits.shape[-1]}
            rows += [row] * len(banned)
            cols += sorted(banned)
    if not rows:
        return logits
    masked = logits.clone()
    device = logits.device
    masked[torch.tensor(rows, device=device), torch.tensor(cols, device=device)] = float("-inf")
    return masked


def _draw(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw `[R]`: first position whose cumulative weight exceeds u * total.

    `weights [R, K]` float64 keeps each interval's width exact down to tiny probabilities;
    a zero-weight (masked) position has an empty interval and is never drawn.
    """
    cdf = torch.cumsum(weights, dim=-1)
    target = (u * cdf[:, -1]).unsqueeze(-1)
    return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp_max(cdf.shape[-1] - 1)


def _take(t: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """`t[rows]`, without a copy when `rows` is every row in order (the common batch)."""
    if len(rows) == t.shape[0] and rows == list(range(len(rows))):
        return t
    return t[torch.tensor(rows, device=t.device)]


def _sample_truncated(
    logits: torch.Tensor,
    temps: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    min_p: torch.Tensor,
    u: torch.Tensor,
    num_candidates: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw from the tokens kept by top-k, top-p, min-p among the `num_candidates` most likely.

    logits `[R, V]` raw; temps, top_k (0 = off), top_p, min_p, u: `[R]`. The kept set is a
    prefix of the tokens sorted by probability; when that prefix ends inside the candidates
    (`covered`), the draw equals the one over the whole sorted vocabulary.
    Returns (token ids `[R]`, covered `[R]` bool).
    """
    num_vocab = logits.shape[-1]
    num_cand = min(num_vocab, num_candidates)
    # Temperature does not change the order, so select on raw logits and scale K, not V.
    vals, ids = torch.topk(logits, num_cand, dim=-1)  # [R, K], most likely first
    vals = vals.float() / temps.unsqueeze(-1)
    k_inside = (top_k > 0) & (top_k <= num_cand)
    k_eff = torch.where(k_inside, top_k, num_cand)
    keep = vals >= vals.gather(-1, (k_eff - 1).unsqueeze(-1))  # top-k, ties kept
    # Normaliser of what top-k left: the kept candidates, or the whole vocabulary.
    lse = torch.logsumexp(vals.masked_fill(~keep, float("-inf")), dim=-1)
    if not bool(k_inside.all()):
        need = (~k_inside).nonzero().squeeze(-1).tolist()
        scaled = _take(logits, need).float() / temps[need].unsqueeze(-1)
        lse[need] = torch.logsumexp(scaled, dim=-1)
    probs = torch.exp(vals - lse.unsqueeze(-1)).masked_fill(~keep, 0.0)
    mass_before = torch.cumsum(probs, dim=-1) - probs
    keep &= (mass_before < top_p.unsqueeze(-1)) | (top_p.unsqueeze(-1) >= 1.0)
    keep &= vals - vals[:, :1] >= torch.log(min_p).unsqueeze(-1)
    keep[:, 0] = True
    covered = (~keep[:, -1] & (top_k <= num_cand)) | (num_cand == num_vocab)
    pos = _draw(probs.double().masked_fill(~keep, 0.0), u)
    return ids.gather(-1, pos.unsqueeze(-1)).squeeze(-1), covered


def _sample_rows(
    logits: torch.Tensor,
    rows: list[int],
    params_list: Sequence[SamplingParams],
    output_indices: Sequence[int],
    generator: torch.Generator | None,
    num_candidates: int,
) -> torch.Tensor:
    """Random draws for the non-greedy `rows`; returns their token ids `[len(rows)]`.

    Rows without top-k / top-p / min-p draw over the vocabulary in id order. Rows with any
    of them draw over their kept tokens in probability order, first among the top
    `num_candidates` (a partial top-k instead of a full sort), and only the rare rows whose
    kept set reaches past those are redone over the fully sorted vocabulary; both give the
    same token for the same u, so a row's draw does not depend on its batch.
    """
    device = logits.device
    num_vocab = logits.shape[-1]
    u = uniforms(rows, params_list, output_indices, device, generator)
    full: list[int] = []
    truncated: list[int] = []
    for i, r in enumerate(rows):
        p = params_list[r]
        is_truncated = 0 < p.top_k < num_vocab or p.top_p < 1 or p.min_p > 0
        (truncated if is_truncated else full).append(i)
    out = torch.empty(len(rows), dtype=torch.long, device=device)
    if full:
        temps = torch.tensor([params_list[rows[i]].temperature for i in full], device=device)
        x = _take(logits, [rows[i] for i in full]).float() / temps.unsqueeze(-1)
        full_idx = torch.tensor(full, device=device)
        out[full_idx] = _draw(torch.softmax(x, dim=-1).double(), u[full_idx])
    if truncated:
        chosen = [params_list[rows[i]] for i in truncated]
        temps = torch.tensor([p.temperature for p in chosen], device=device)
        top_k = torch.tensor(
            [p.top_k if 0 < p.top_k < num_vocab else 0 for p in chosen], device=device
        )
        top_p = torch.tensor([p.top_p for p in chosen], device=device)
        min_p = torch.tensor([p.min_p for p in chosen], device=device)
        trunc_idx = torch.tensor(truncated, device=device)
        xt, ut = _take(logits, [rows[i] for i in truncated]), u[trunc_idx]
        tokens, covered = _sample_truncated(xt, temps, top_k, top_p, min_p, ut, num_candidates)
        if not bool(covered.all()):
            redo = (~covered).nonzero().squeeze(-1)
            tokens[redo], _ = _sample_truncated(
                xt[redo], temps[redo], top_k[redo], top_p[redo], min_p[redo], ut[redo], num_vocab
            )
        out[trunc_idx] = tokens
    return out


def _logprobs(
    logits: torch.Tensor, token_ids: torch.Tensor, params_list: Sequence[SamplingParams]
) -> list[TokenLogprobs | None]:
    rows = [r for r, p in enumerate(params_list) if p.logprobs is not None]
    out: list[TokenLogprobs | None] = [None] * len(params_list)
    if not rows:
        return out
    # logprob = logit - logsumexp(logits): three passes over [R, V] (logsumexp, rank count,
    # top-n) and no [R, V] log_softmax tensor written.
    x = _take(logits, rows).float()
    sampled = _take(token_ids, rows).unsqueeze(-1)
    lse = torch.logsumexp(x, dim=-1, keepdim=True)  # [R, 1]
    sampled_logit = x.gather(-1, sampled)  # [R, 1]
    ranks = (x > sampled_logit).sum(dim=-1) + 1
    max_n = max(params_list[r].logprobs or 0 for r in rows)
    top = torch.topk(x, max_n, dim=-1) if max_n > 0 else None
    sampled_list = sampled.squeeze(-1).tolist()
    sampled_lp_list = (sampled_logit - lse).squeeze(-1).tolist()
    ranks_list = ranks.tolist()
    top_ids = top.indices.tolist() if top is not None else None
    top_lps = (top.values - lse).tolist() if top is not None else None
    for i, r in enumerate(rows):
        n = params_list[r].logprobs or 0
        out[r] = TokenLogprobs(
            token_id=sampled_list[i],
            logprob=sampled_lp_list[i],
            rank=ranks_list[i],
            top_token_ids=tuple(top_ids[i][:n]) if top_ids is not None else (),
            top_logprobs=tuple(top_lps[i][:n]) if top_lps is not None else (),
        )
    return out


def _argmax(logits: torch.Tensor) -> torch.Tensor:
    """First index of each row's maximum (a NaN counts as the maximum, as in torch)."""
    if logits.dtype == torch.float32 and logits.device.type == "cpu" and native.available() \
            and logits.stride(-1) == 1 and logits.shape[-1] > 0:
        return native.argmax_rows(logits)  # one vectorised pass: ~2x torch's reduction
    # max(dim).indices is argmax (first index of the maximum) ~3x faster on CPU
    return logits.max(dim=-1).indices


def sample(
    logits: torch.Tensor,
    params_list: Sequence[SamplingParams],
    output_indices: Sequence[int],
    generator: torch.Generator | None = None,
    eos_token_ids: Collection[int] = (),
    num_candidates: int = NUM_CANDIDATES,
) -> SamplerOutput:
    """Sample one token per row.

    logits: `[N, vocab]` next-token logits (float32 preferred; any float dtype is upcast),
        on any device; results are computed on that device.
    params_list[r]: the row's request parameters. output_indices[r]: how many tokens the
        request has generated before this one (0 for the first token), which keys the
        seeded noise and the min_tokens check.
    generator: the engine's generator for unseeded rows (any device; noise is moved to the
        logits' device); None uses torch's global RNG.
    eos_token_ids: masked (with stop_token_ids) on rows below their min_tokens.
    num_candidates: a speed knob only (draws do not depend on it up to exact ties); keep
        the default everywhere a seeded request may be sampled.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be [N, vocab], got shape {tuple(logits.shape)}")
    num_rows = logits.shape[0]
    if len(params_list) != num_rows or len(output_indices) != num_rows:
        raise ValueError(
            f"got {num_rows} logits rows, {len(params_list)} params, "
            f"{len(output_indices)} output indices; they must match"
        )
    if num_rows == 0:
        return SamplerOutput([], [])
    masked = logits
    if any(p.min_tokens > 0 for p in params_list):
        masked = _mask_min_tokens(logits, params_list, output_indices, eos_token_ids)
    random_rows = [r for r, p in enumerate(params_list) if not p.greedy]
    if len(random_rows) == num_rows:
        token_ids = _sample_rows(
            masked, random_rows, params_list, output_indices, generator, num_candidates
        )
    else:
        token_ids = _argmax(masked)
        if random_rows:
            drawn = _sample_rows(
                masked, random_rows, params_list, output_indices, generator, num_candidates
            )
            token_ids[torch.tensor(random_rows, device=logits.device)] = drawn
    logprobs: list[TokenLogprobs | None]
    if any(p.logprobs is not None for p in params_list):
        logprobs = _logprobs(logits, token_ids, params_list)
    else:
        logprobs = [None] * num_rows
    return SamplerOutput(token_ids=token_ids.tolist(), logprobs=logprobs)
