"""Reference definitions of the top-k, top-p and min-p truncations, one keep-mask per row.

The sampler applies the same rules on a row's top candidates only (see `sampler`); these
full-vocabulary masks are the plain statements of each rule that its tests compare against.
"""

from __future__ import annotations

import torch


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
