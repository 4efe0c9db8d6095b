"""Workloads: request length distributions, the named presets, and exact-length prompts.

A workload draws (input_len, output_len) pairs from seeded distributions. Prompts are built
from the model's own tokenizer so the server sees exactly `input_len` tokens: by default
the prompt is sent as token ids (`"prompt": [ids...]`, accepted by the OpenAI completions
API and vLLM); text mode decodes the ids and re-encodes until the text has the same length.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Protocol

DIST_KINDS = ("fixed", "uniform", "lognormal")


class TokenizerLike(Protocol):
    """The subset of `tokenizers.Tokenizer` we use (lets tests pass a trained tiny one)."""

    def get_vocab_size(self) -> int: ...

    def get_added_tokens_decoder(self) -> dict[int, Any]: ...

    def decode(self, ids: list[int]) -> str: ...

    def encode(
        self, sequence: Any, pair: Any = ..., is_pretokenized: bool = ...,
        add_special_tokens: bool = ...,
    ) -> Any: ...


@dataclass(frozen=True)
class LengthDist:
    """A token-length distribution.

    fixed: always `mean`; uniform: integers in [min_len, max_len]; lognormal: mean `mean`
    with log-space std `sigma`, clipped to [min_len, max_len] (clipping moves the mean a
    little: presets quote the clipped mean).
    """

    kind: str
    mean: float
    min_len: int = 1
    max_len: int = 1 << 20
    sigma: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in DIST_KINDS:
            raise ValueError(f"length distribution kind {self.kind!r} not in {DIST_KINDS}")
        if self.min_len < 1 or self.max_len < self.min_len:
            raise ValueError(f"bad length bounds min_len={self.min_len} max_len={self.max_len}")
        if not self.min_len <= self.mean <= self.max_len and self.kind != "uniform":
            raise ValueError(f"mean {self.mean} outside [{self.min_len}, {self.max_len}]")
        if self.sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")

    def sample(self, rng: random.Random) -> int:
        if self.kind == "fixed":
            return int(round(self.mean))
        if self.kind == "uniform":
            return rng.randint(self.min_len, self.max_len)
        # mu chosen so that E[exp(N(mu, sigma^2))] == mean before clipping.
        mu = math.log(self.mean) - self.sigma**2 / 2
        value = int(round(rng.lognormvariate(mu, self.sigma)))
        return min(max(value, self.min_len), self.max_len)


@dataclass(frozen=True)
class Workload:
    """Input/output length distributions, plus an optional share of long prompts."""

    name: str
    input_dist: LengthDist
    output_dist: LengthDist
    long_fraction: float = 0.0
    long_input_dist: LengthDist | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.long_fraction <= 1.0:
            raise ValueError(f"long_fraction must be in [0, 1], got {self.long_fraction}")
        if self.long_fraction > 0 and self.long_input_dist is None:
            raise ValueError("long_fraction > 0 needs long_input_dist")


def _lognormal(mean: float, sigma: float, max_len: int) -> LengthDist:
    return LengthDist("lognormal", mean, 1, max_len, sigma)


# Means follow DistServe's dataset statistics (ShareGPT chat ~755/200, HumanEval code
# ~171/98, LongBench summarization ~1738/91). Sigmas are our choice of a plausible spread.
PRESETS: dict[str, Workload] = {
    "chat": Workload(
        "chat", _lognormal(755, 0.9, 8192), _lognormal(200, 0.8, 2048),
        description="ShareGPT-like chat: ~755 input / ~200 output tokens (lognormal)",
    ),
    "code": Workload(
        "code", _lognormal(171, 0.6, 2048), _lognormal(98, 0.6, 1024),
        description="HumanEval-like code completion: ~171 input / ~98 output tokens",
    ),
    "summarize": Workload(
        "summarize", _lognormal(1738, 0.4, 8192), _lognormal(91, 0.5, 1024),
        description="LongBench-like summarization: ~1738 input / ~91 output tokens",
    ),
    "mixed-long": Workload(
        "mixed-long", _lognormal(755, 0.9, 8192), _lognormal(200, 0.8, 2048),
        long_fraction=0.05,
        long_input_dist=LengthDist("uniform", 12000, 8000, 16000),
        description="chat, plus 5% very long prompts (8k-16k tokens, uniform)",
    ),
}


@dataclass(frozen=True)
class LengthPair:
    input_len: int
    output_len: int
    is_long: bool = False


@dataclass(frozen=True)
class LengthPolicy:
    """How sampled lengths are fitted to the machine and the model.

    `scale` divides every length (a 2-core CPU cannot serve ShareGPT at full size);
    `max_model_len` clips input + output to the model's context.
    """

    scale: float = 1.0
    max_model_len: int | None = None
    min_output_len: int = 1

    def __post_init__(self) -> None:
        if self.scale < 1.0:
            raise ValueError(f"length scale is a divisor >= 1, got {self.scale}")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ValueError(f"max_model_len must be >= 2, got {self.max_model_len}")
        if self.min_output_len < 1:
            raise ValueError(f"min_output_len must be >= 1, got {self.min_output_len}")

    def apply(self, input_len: int, output_len: int) -> tuple[int, int]:
        input_len = max(1, math.ceil(input_len / self.scale))
        output_len = max(self.min_output_len, math.ceil(output_len / self.scale))
        if self.max_model_len is not None:
            output_len = min(output_len, self.max_model_len - 1)
            input_len = min(input_len, self.max_model_len - output_len)
        return input_len, output_len


def sample_lengths(
    workload: Workload, num_requests: int, seed: int, policy: LengthPolicy
) -> list[LengthPair]:
    """Draws `num_requests` length pairs; the same seed gives the same list."""
    if num_requests < 0:
        raise ValueError(f"num_requests must be >= 0, got {num_requests}")
    rng = random.Random(seed)
    pairs = []
    for _ in range(num_requests):
        is_long = workload.long_fraction > 0 and rng.random() < workload.long_fraction
        dist = workload.long_input_dist if is_long else workload.input_dist
        assert dist is not None  # guaranteed by Workload.__post_init__
        input_len, output_len = policy.apply(dist.sample(rng), workload.output_dist.sample(rng))
        pairs.append(LengthPair(input_len, output_len, is_long))
    return pairs


@dataclass
class PromptBuilder:
    """Random prompts of exact token length from a tokenizer's ordinary (non-added) tokens."""

    tokenizer: TokenizerLike
    seed: int = 0
    _ids: list[int] = field(init=False, repr=False)
    _rng: random.Random = field(init=False, repr=False)
    _words: list[str] | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        added = set(self.tokenizer.get_added_tokens_decoder())
        self._ids = [i for i in range(self.tokenizer.get_vocab_size()) if i not in added]
        if not self._ids:
            raise ValueError("tokenizer has no ordinary tokens to build prompts from")
        self._rng = random.Random(self.seed)

    def token_ids(self, input_len: int) -> list[int]:
        return [self._rng.choice(self._ids) for _ in range(input_len)]

    def _word_pieces(self) -> list[str]:
        """Decoded tokens that are a whole space-led word and encode back to themselves.

        Pre-tokenizers (byte-level, metaspace, whitespace) split text at spaces, so a
        string of such words encodes to exactly one token per word."""
        if self._words is None:
            words = []
            for token_id in self._ids:
                piece = self.tokenizer.decode([token_id])
                if len(piece) > 1 and piece[0] == " " and piece[1:].isalpha():
                    encoded = self.tokenizer.encode(piece, add_special_tokens=False).ids
                    if list(encoded) == [token_id]:
                        words.append(piece)
            self._words = words
        return self._words

    def _length(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def text(self, input_len: int, max_tries: int = 8) -> tuple[str, int]:
        """A text prompt and its token length when re-encoded (the caller records the real
        length: it equals input_len unless the tokenizer has no whole-word tokens and
        merges across the cut on every try)."""
        words = self._word_pieces()
        if words:
            text = "".join(self._rng.choice(words) for _ in range(input_len))
            real_len = self._length(text)
            if real_len == input_len:
                return text, real_len
        ids = self.token_ids(input_len)
        text = self.tokenizer.decode(ids)
        for _ in range(max_tries):
            encoded = list(self.tokenizer.encode(text, add_special_tokens=False).ids)
            if len(encoded) == input_len:
                break
            if len(encoded) > input_len:
                encoded = encoded[:input_len]
            else:
                encoded = encoded + self.token_ids(input_len - len(encoded))
            text = self.tokenizer.decode(encoded)
        return text, self._length(text)


def load_tokenizer(tokenizer_dir: str) -> TokenizerLike:
    """`tokenizers.Tokenizer` from DIR/tokenizer.json (or a tokenizer.json path itself)."""
    import os

    from tokenizers import Tokenizer

    path = tokenizer_dir
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(path):
        raise ValueError(f"no tokenizer.json at {tokenizer_dir!r}")
    tokenizer: TokenizerLike = Tokenizer.from_file(path)
    return tokenizer


def get_workload(name: str) -> Workload:
    if name not in PRESETS:
        raise ValueError(f"unknown workload {name!r}; presets: {sorted(PRESETS)}")
    return PRESETS[name]


def parse_dist(text: str) -> LengthDist:
    """`fixed:N`, `uniform:LO:HI` or `lognormal:MEAN[:SIGMA[:MAX]]` (custom workloads)."""
    kind, _, rest = text.partition(":")
    parts = [float(p) for p in rest.split(":")] if rest else []
    if kind == "fixed" and len(parts) == 1:
        return LengthDist("fixed", parts[0], 1, max(1, int(parts[0])))
    if kind == "uniform" and len(parts) == 2:
        return LengthDist("uniform", (parts[0] + parts[1]) / 2, int(parts[0]), int(parts[1]))
    if kind == "lognormal" and 1 <= len(parts) <= 3:
        sigma = parts[1] if len(parts) > 1 else 1.0
        max_len = int(parts[2]) if len(parts) > 2 else 1 << 20
        return LengthDist("lognormal", parts[0], 1, max_len, sigma)
    raise ValueError(
        f"bad length distribution {text!r}: use fixed:N, uniform:LO:HI or "
        "lognormal:MEAN[:SIGMA[:MAX]]"
    )
