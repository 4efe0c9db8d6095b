"""Batched next-token sampling with per-row parameters.

For each row of `logits [N, vocab]` the sampler
  1. masks EOS / stop token ids while the row is below its `min_tokens` (only rows that need it);
  2. greedy rows (temperature 0) take `argmax` of those logits: exactly what HF greedy does;
  3. other rows: divide by temperature, then mask by top-k, then top-p, then min-p (each mask
     works on the distribution left by the previous one), softmax, and draw one token by an
     exponential race: `argmax(probs / E)` with `E ~ Exp(1)` i.i.d. per token, which picks
     token t with probability probs[t].
The race noise of a seeded row comes from a CPU `torch.Generator` seeded from a hash of
(seed, output index) alone, so a seeded request draws the same token whatever the batch it
sits in, its row, and whichever worker samples it (prefill samples index 0, decode the rest).
Unseeded rows share the engine's generator. Logprobs are `log_softmax` of the raw logits.

An all-greedy batch without logprobs or min_tokens costs one `argmax` and one `.tolist()`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import torch

from splitserve.engine.outputs import TokenLogprobs
from splitserve.engine.sampling_params import SamplingParams

_MASK64 = (1 << 64) - 1


@dataclass
class SamplerOutput:
    """One sampled token per row, and its logprobs where the row asked for them."""

    token_ids: list[int]
    logprobs: list[TokenLogprobs | None]


def seed_for(seed: int, output_index: int) -> int:
    """64-bit generator seed for output index `output_index` of a request seeded `seed`.

    splitmix64 finalizer over (seed, index): nearby seeds and indices give unrelated streams.
    """
    x = ((seed & _MASK64) * 0x9E3779B97F4A7C15 + output_index + 1) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def top_k_mask(logits: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    """Keep-mask `[N, V]` of the `top_k[r]` largest logits of each row.

    `top_k [N]` int; values <= 0 or >= V keep everything. Tokens tied with the k-th largest
    value are all kept (as HF's TopKLogitsWarper does).
    """
    num_vocab = logits.shape[-1]
    k = torch.where((top_k <= 0) | (top_k > num_vocab), num_vocab, top_k).to(torch.long)
    max_k = int(k.max().item())
    top_values = torch.topk(logits, max_k, dim=-1).values  # [N, max_k], descending
    kth_value = top_values.gather(-1, (k - 1).unsqueeze(-1))  # [N, 1]
    return logits >= kth_value


def top_p_mask(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Keep-mask `[N, V]` of the nucleus: the smallest set of most likely tokens whose
    probabilities (softmax of `logits`) sum to >= `top_p[r]`. The top token is always kept;
    rows with top_p >= 1 keep everything (no float cumsum rounding can drop their tail).
    """
    probs = torch.softmax(logits, dim=-1)
    sorted_probs, sorted_idx = torch.sort(probs, dim=-1, descending=True)
    # Probability mass strictly before each sorted position: keep while it is still < p.
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
    keep_sorted = (mass_before < top_p.unsqueeze(-1)) | (top_p.unsqueeze(-1) >= 1.0)
    keep_sorted[:, 0] = True
    return torch.zeros_like(keep_sorted).scatter(-1, sorted_idx, keep_sorted)


def min_p_mask(logits: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Keep-mask `[N, V]` of tokens with prob >= `min_p[r]` * the row's max prob.

    Computed in log space (logit - max >= log min_p), which equals the probability test and
    keeps the top token whatever min_p is.
    """
    max_logit = logits.max(dim=-1, keepdim=True).values
    log_min_p = torch.log(min_p.clamp_min(1e-30)).unsqueeze(-1)
    return (logits - max_logit >= log_min_p) | (min_p.unsqueeze(-1) <= 0.0)


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
    masked[torch.tensor(rows), torch.tensor(cols)] = float("-inf")
    return masked


def _race_noise(
    rows: list[int],
    params_list: Sequence[SamplingParams],
    output_indices: Sequence[int],
    num_vocab: int,
    device: torch.device,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Exp(1) noise `[len(rows), V]`: per-(seed, index) CPU streams for seeded rows."""
    noise = torch.empty((len(rows), num_vocab), dtype=torch.float32, device=device)
    seeded = [i for i, r in enumerate(rows) if params_list[r].seed is not None]
    unseeded = [i for i, r in enumerate(rows) if params_list[r].seed is None]
    if unseeded:
        gen_device = generator.device if generator is not None else device
        u = torch.rand((len(unseeded), num_vocab), generator=generator, device=gen_device)
        noise[torch.tensor(unseeded, device=device)] = u.to(device)
    if seeded:
        cpu_rows = []
        for i in seeded:
            row = rows[i]
            seed = params_list[row].seed
            assert seed is not None
            g = torch.Generator(device="cpu")
            g.manual_seed(seed_for(seed, output_indices[row]))
            cpu_rows.append(torch.rand(num_vocab, generator=g))
        noise[torch.tensor(seeded, device=device)] = torch.stack(cpu_rows).to(device)
    # torch.rand gives multiples of 2^-24 in [0, 1); clamping 0 keeps E finite and > 0.
    return -torch.log(noise.clamp_(min=2.0**-24))


def _sample_rows(
    logits: torch.Tensor,
    rows: list[int],
    params_list: Sequence[SamplingParams],
    output_indices: Sequence[int],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Random draws for the non-greedy `rows`; returns their token ids `[len(rows)]`."""
    device = logits.device
    chosen = [params_list[r] for r in rows]
    x = logits[torch.tensor(rows, device=device)].float()
    temps = torch.tensor([p.temperature for p in chosen], dtype=torch.float32, device=device)
    x = x / temps.unsqueeze(-1)
    neg_inf = float("-inf")
    if any(p.top_k > 0 for p in chosen):
        top_k = torch.tensor([p.top_k for p in chosen], dtype=torch.long, device=device)
        x = x.masked_fill(~top_k_mask(x, top_k), neg_inf)
    if any(p.top_p < 1.0 for p in chosen):
        top_p = torch.tensor([p.top_p for p in chosen], dtype=torch.float32, device=device)
        x = x.masked_fill(~top_p_mask(x, top_p), neg_inf)
    if any(p.min_p > 0.0 for p in chosen):
        min_p = torch.tensor([p.min_p for p in chosen], dtype=torch.float32, device=device)
        x = x.masked_fill(~min_p_mask(x, min_p), neg_inf)
    probs = torch.softmax(x, dim=-1)
    noise = _race_noise(rows, params_list, output_indices, x.shape[-1], device, generator)
    return torch.argmax(probs / noise, dim=-1)


def _logprobs(
    logits: torch.Tensor, token_ids: torch.Tensor, params_list: Sequence[SamplingParams]
) -> list[TokenLogprobs | None]:
    rows = [r for r, p in enumerate(params_list) if p.logprobs is not None]
    out: list[TokenLogprobs | None] = [None] * len(params_list)
    if not rows:
        return out
    row_index = torch.tensor(rows, device=logits.device)
    lp = torch.log_softmax(logits[row_index].float(), dim=-1)  # [R, V]
    sampled = token_ids[row_index].unsqueeze(-1)
    sampled_lp = lp.gather(-1, sampled)  # [R, 1]
    ranks = (lp > sampled_lp).sum(dim=-1) + 1
    max_n = max(params_list[r].logprobs or 0 for r in rows)
    top = torch.topk(lp, max_n, dim=-1) if max_n > 0 else None
    sampled_list = sampled.squeeze(-1).tolist()
    sampled_lp_list = sampled_lp.squeeze(-1).tolist()
    ranks_list = ranks.tolist()
    top_ids = top.indices.tolist() if top is not None else None
    top_lps = top.values.tolist() if top is not None else None
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


def sample(
    logits: torch.Tensor,
    params_list: Sequence[SamplingParams],
    output_indices: Sequence[int],
    generator: torch.Generator | None = None,
    eos_token_ids: Collection[int] = (),
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
    token_ids = torch.argmax(masked, dim=-1)
    random_rows = [r for r, p in enumerate(params_list) if not p.greedy]
    if random_rows:
        drawn = _sample_rows(masked, random_rows, params_list, output_indices, generator)
        token_ids[torch.tensor(random_rows, device=logits.device)] = drawn
    logprobs: list[TokenLogprobs | None]
    if any(p.logprobs is not None for p in params_list):
        logprobs = _logprobs(logits, token_ids, params_list)
    else:
        logprobs = [None] * num_rows
    return SamplerOutput(token_ids=token_ids.tolist(), logprobs=logprobs)
