"""`splitserve profile MODEL`: measure engine step latency, write the planner's profile JSON."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from splitserve.engine.profiler import ProfileGrid


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "profile", help="measure prefill/decode step latency for the planner",
        description="Run the engine's real prefill and decode steps over a grid of shapes "
                    "and write a splitserve.profile/v1 JSON that `splitserve plan` and the "
                    "planner's ProfileLatencyModel read.")
    p.add_argument("model", help="HF model folder (config.json + safetensors)")
    p.add_argument("--out", default="profile.json", help="output JSON (default: profile.json)")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--num-threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice)")
    p.add_argument("--block-size", type=int, default=16, help="tokens per KV block")
    p.add_argument("--kv-cache-bytes", type=int, default=None,
                   help="the serving engine's KV pool, recorded as kv_capacity_tokens "
                        "(default: the engine's default)")
    p.add_argument("--quick", action="store_true",
                   help="small grid and 3 repeats (seconds; for tests and smoke runs)")
    p.add_argument("--prefill-tokens", type=_int_list, default=None,
                   help="new prompt tokens per prefill step, e.g. 8,64,512")
    p.add_argument("--prefill-context", type=_int_list, default=None,
                   help="cached tokens before the prefill, e.g. 0,512,2048")
    p.add_argument("--decode-batch", type=_int_list, default=None,
                   help="sequences per decode step, e.g. 1,4,16,64")
    p.add_argument("--decode-context", type=_int_list, default=None,
                   help="KV tokens summed over the decode batch, e.g. 0,1024,4096")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per cell (median)")
    p.add_argument("--warmup", type=int, default=None, help="untimed rounds first")
    p.add_argument("--settle", type=int, default=None,
                   help="untimed calls of a cell right before each timed one (steady state; "
                        "default 3, 0 with --quick)")
    p.add_argument("--refine-tol", type=float, default=None,
                   help="after the grid, bisect the decode batch and prefill token axes "
                        "until each midpoint lies within this relative distance of the "
                        "straight line between its neighbours (kernel switches and padding "
                        "to captured sizes make step cost jump between powers of two, which "
                        "linear interpolation would misprice); 0 = off (default 0.05, 0 "
                        "with --quick)")
    p.add_argument("--max-refine-points", type=int, default=None,
                   help="at most this many refined points per axis (default 32)")
    p.set_defaults(func=run)


def _grid(args: argparse.Namespace) -> ProfileGrid:
    """The default grid (the planner's suggested axes for the engine's limits and this KV
    pool, or the quick one; trimmed to the model's length) with the user's axes, which
    must fit as given."""
    import dataclasses

    from splitserve.engine.profiler import QUICK_GRID, default_grid_for
    from splitserve.model import ModelConfig

    axes = {name: value for name, value in (
        ("prefill_tokens", args.prefill_tokens), ("prefill_context", args.prefill_context),
        ("decode_batch", args.decode_batch), ("decode_context", args.decode_context))
        if value is not None}
    counts = {name: value for name, value in (
        ("num_repeats", args.repeats), ("num_warmup", args.warmup),
        ("num_settle", args.settle), ("refine_tol", args.refine_tol),
        ("max_refine_points", args.max_refine_points)) if value is not None}
    config_path = Path(args.model) / "config.json"
    if not config_path.is_file():
        raise ValueError(f"model folder {args.model!r} has no config.json (not an HF model dir)")
    if args.quick:
        base = QUICK_GRID
        if not axes:
            base = base.trimmed(ModelConfig.from_dir(args.model).max_position_embeddings)
    else:
        base = default_grid_for(args.model, args.kv_cache_bytes, args.block_size)
    return dataclasses.replace(base, **axes, **counts)


def run(args: argparse.Namespace) -> int:
    from splitserve.engine.profiler import profile_engine
    from splitserve.planner.profile_format import save_profile

    try:
        if args.num_threads is not None and args.num_threads < 1:
            raise ValueError(f"--num-threads must be >= 1, got {args.num_threads}")
        grid = _grid(args)
        profile = profile_engine(
            args.model, grid=grid, dtype=args.dtype, device=args.device,
            num_threads=args.num_threads, block_size=args.block_size,
            kv_cache_bytes=args.kv_cache_bytes,
            progress=lambda line: print(f"profile: {line}", file=sys.stderr))
        save_profile(profile, args.out)
    except (ValueError, OSError) as exc:
        print(f"splitserve profile: error: {exc}", file=sys.stderr)
        return 2
    p, d = profile["prefill"], profile["decode"]
    print(f"wrote {args.out}: {profile['model']['name']} on {profile['hardware']['name']}, "
          f"{len(p['num_tokens'])}x{len(p['context_len'])} prefill and "
          f"{len(d['batch_size'])}x{len(d['context_tokens'])} decode cells, "
          f"{profile['wall_s']:.1f} s")
    refined = profile["refined"]
    if refined["prefill_tokens"] or refined["decode_batch"]:
        print(f"refined (tol {profile['refine_tol']}): prefill tokens "
              f"{refined['prefill_tokens']}, decode batch {refined['decode_batch']}")
    again = profile.get("remeasured") or {}
    if again.get("prefill_tokens") or again.get("decode_batch"):
        print(f"measured again off the chord (the smaller kept): prefill tokens "
              f"{again.get('prefill_tokens', [])}, decode batch {again.get('decode_batch', [])}")
    print(f"prefill {p['num_tokens'][0]} tokens: {p['latency_s'][0][0] * 1e3:.1f} ms, "
          f"{p['num_tokens'][-1]} tokens: {p['latency_s'][-1][0] * 1e3:.1f} ms; "
          f"decode batch {d['batch_size'][0]}: {d['latency_s'][0][0] * 1e3:.1f} ms, "
          f"batch {d['batch_size'][-1]}: {d['latency_s'][-1][0] * 1e3:.1f} ms")
    return 0
