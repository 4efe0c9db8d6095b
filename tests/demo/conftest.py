"""A tiny demo build shared by the tests that need a checkpoint (one build per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from splitserve.demo.spec import DemoSpec

# Small enough to build in seconds on two cores; same recipe as the default otherwise.
TINY_SPEC = DemoSpec(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    train_seq_len=32,
    batch_size=8,
    warmup_steps=2,
    corpus_max_chars=60_000,
)
TINY_STEPS = 25


def build_tiny(out_dir: Path, **overrides: object) -> Path:
    from splitserve.demo.build import build_demo_model

    # One thread: tiny matrices gain nothing from more, and a fixed count keeps the
    # reproducibility check meaningful on any machine.
    kwargs: dict[str, object] = {
        "train_seconds": None,
        "max_steps": TINY_STEPS,
        "seed": 0,
        "num_threads": 1,
    }
    kwargs.update(overrides)
    return build_demo_model(out_dir, spec=TINY_SPEC, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def tiny_demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("demo") / "demo-tiny")
