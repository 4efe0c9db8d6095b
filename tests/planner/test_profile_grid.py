"""The profiler's default grid and the planner's suggested axes are one definition."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from splitserve.engine.profiler import default_grid
from splitserve.planner.profile_format import suggested_axes
from tests.planner.conftest import TINY_CONFIG


def test_default_grid_measures_the_suggested_axes() -> None:
    axes = suggested_axes(4096, 64, 50_000, max_batched_tokens=512)
    grid = default_grid(4096, 64, 50_000, 512)
    assert list(grid.prefill_tokens) == axes["num_tokens"] == [16, 32, 64, 128, 256, 512]
    assert list(grid.prefill_context) == axes["context_len"] == [0, 256, 512, 1024, 2048]
    assert list(grid.decode_batch) == axes["batch_size"] == [1, 2, 4, 8, 16, 32, 64]
    assert list(grid.decode_context) == axes["context_tokens"]
    assert axes["context_tokens"] == [64, 128, 256, 512, 1024, 2048, 4096]
    grid.check_fits(4096)  # every cell is a shape the engine can run


def test_a_chunking_engine_caps_prefill_tokens_at_its_budget() -> None:
    assert suggested_axes(4096, 8, 10_000, max_batched_tokens=300)["num_tokens"][-1] == 300
    assert suggested_axes(4096, 8, 10_000)["num_tokens"][-1] == 4096  # no budget given


def test_small_kv_pool_caps_the_decode_context() -> None:
    assert suggested_axes(4096, 8, 1000)["context_tokens"][-1] == 1000


def test_grid_of_an_unchunked_engine_is_trimmed_to_fit_the_model() -> None:
    # without a budget, a 1024-token prefill after 512 cached tokens would not fit
    grid = default_grid(1024, 4, 10_000, 1024)
    grid.check_fits(1024)
    assert grid.prefill_tokens[-1] + grid.prefill_context[-1] <= 1024


def test_bad_budget_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="max_batched_tokens must be >= 2"):
        suggested_axes(4096, 8, 1000, max_batched_tokens=1)


def test_profile_cli_default_grid_is_the_suggested_one(tmp_path: Path) -> None:
    import argparse

    from splitserve.engine import profile_cli
    from splitserve.engine.engine_config import EngineConfig
    from splitserve.model import ModelConfig, num_blocks_for_memory

    parser = argparse.ArgumentParser()
    profile_cli.register(parser.add_subparsers())
    hf = {**TINY_CONFIG, "architectures": ["LlamaForCausalLM"], "max_position_embeddings": 2048,
          "rope_theta": 10000.0, "rms_norm_eps": 1e-5}
    (tmp_path / "config.json").write_text(json.dumps(hf))
    args = parser.parse_args(["profile", str(tmp_path)])
    grid = profile_cli._grid(args)
    config = ModelConfig.from_dir(tmp_path)
    serve = EngineConfig(model="x")
    capacity = num_blocks_for_memory(config, 16, config.dtype, serve.kv_cache_bytes) * 16
    axes = suggested_axes(config.max_position_embeddings, serve.max_num_seqs, capacity,
                          serve.max_num_batched_tokens)
    assert list(grid.prefill_tokens) == axes["num_tokens"]
    assert list(grid.decode_batch) == axes["batch_size"]
    assert list(grid.decode_context) == axes["context_tokens"]
    assert grid.num_settle == 3 and grid.num_repeats == 3
