"""CLI flags mirroring `EngineConfig` (one source of truth: defaults come from it)."""

from __future__ import annotations

import argparse
import dataclasses

from splitserve.engine.engine_config import EngineConfig

_HELP = {
    "dtype": "weights and KV dtype: auto|float32|bfloat16|float16",
    "device": "cpu or cuda[:N]",
    "block_size": "tokens per KV block",
    "num_blocks": "KV blocks in the pool (default: from --kv-cache-bytes)",
    "kv_cache_bytes": "memory for the KV pool when --num-blocks is not given",
    "max_num_batched_tokens": "token budget per engine step (chunked prefill)",
    "max_num_seqs": "most sequences in one step",
    "max_model_len": "longest prompt + output (default: the model's)",
    "enable_prefix_caching": "reuse KV of shared prompt prefixes",
    "num_threads": "torch CPU threads (default: cores of this process)",
    "handoff_lease_s": "seconds a prefilled request's KV waits to be pulled",
    "seed": "seed of the engine's generator for unseeded sampling",
}


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(EngineConfig):
        if f.name == "model":
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                                help=_HELP.get(f.name, ""))
            continue
        kind = {"int": int, "float": float, "str": str}
        type_name = str(f.type).split("|")[0].strip()
        parser.add_argument(flag, type=kind.get(type_name, str), default=default,
                            help=f"{_HELP.get(f.name, '')} (default: {default})")


def engine_config_from_args(args: argparse.Namespace, model: str) -> EngineConfig:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(EngineConfig)
              if f.name != "model"}
    return EngineConfig(model=model, **values)
