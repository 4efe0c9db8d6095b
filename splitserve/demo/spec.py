"""What the demo checkpoint is made of: model shape, tokenizer size and training budget."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

# Bump when the recipe changes in a way that changes the weights: the cache folder is named
# with it, so an old cached build is never mistaken for the new one.
DEMO_VERSION = "v1"
DEMO_DIR_NAME = f"demo-llama-{DEMO_VERSION}"

BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
PAD_TOKEN = "<pad>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, *ROLE_TOKENS)
DEFAULT_TRAIN_SECONDS = 180.0
# What an idle two-core machine trains in DEFAULT_TRAIN_SECONDS (0.3 s a step measured
# here). A faster machine stops at the same step, so it builds the same model as any
# other machine that finishes the schedule (up to float reduction order).
DEFAULT_MAX_STEPS = 600


@dataclass(frozen=True)
class DemoSpec:
    """Recipe of the demo checkpoint. Defaults give the cached default model (~5M
    parameters, 600 steps: about three minutes of training on two idle CPU cores); tests
    shrink it."""

    vocab_size: int = 4096
    hidden_size: int = 256
    intermediate_size: int = 768
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 2048
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    train_seq_len: int = 128
    batch_size: int = 16
    learning_rate: float = 3e-3
    warmup_steps: int = 30
    weight_decay: float = 0.1
    # Training stops at whichever limit comes first. A run that reaches max_steps has
    # weights that are a function of (seed, recipe, Python's docs, thread count); one cut
    # short by train_seconds depends on the machine's speed.
    train_seconds: float | None = DEFAULT_TRAIN_SECONDS
    max_steps: int | None = DEFAULT_MAX_STEPS
    corpus_max_chars: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        positive_ints = (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "max_position_embeddings",
            "train_seq_len",
            "batch_size",
        )
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.vocab_size < 256 + len(SPECIAL_TOKENS):
            raise ValueError(
                f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)} (256 bytes plus "
                f"special tokens), got {self.vocab_size}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads {self.num_attention_heads} is not divisible by "
                f"num_key_value_heads {self.num_key_value_heads}"
            )
        if self.train_seq_len > self.max_position_embeddings:
            raise ValueError(
                f"train_seq_len {self.train_seq_len} exceeds max_position_embeddings "
                f"{self.max_position_embeddings}"
            )
        if self.train_seconds is None and self.max_steps is None:
            raise ValueError("set train_seconds or max_steps (or both): training needs a bound")
        if self.train_seconds is not None and not (
            math.isfinite(self.train_seconds) and self.train_seconds > 0
        ):
            raise ValueError(f"train_seconds must be a positive number, got {self.train_seconds}")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ValueError(f"max_steps must be positive, got {self.max_steps}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.rope_theta <= 0:
            raise ValueError(
                "warmup_steps and weight_decay must be >= 0 and rope_theta > 0, got "
                f"{self.warmup_steps}, {self.weight_decay}, {self.rope_theta}"
            )
        if self.corpus_max_chars is not None and self.corpus_max_chars <= 0:
            raise ValueError(f"corpus_max_chars must be positive, got {self.corpus_max_chars}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def replace(self, **overrides: Any) -> DemoSpec:
        """A copy with fields replaced; unknown field names are a ValueError."""
        known = {field.name for field in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown DemoSpec field(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
