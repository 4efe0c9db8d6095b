"""`splitserve generate`: offline generation from the command line."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from splitserve.engine.cli_args import add_engine_args

    p = sub.add_parser("generate", help="generate text offline (no server)")
    p.add_argument("model", nargs="?", default=None,
                   help="HF model folder (default: the bundled demo model)")
    p.add_argument("--prompt", action="append", required=True,
                   help="a prompt; repeat for a batch")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument("--sampling-seed", dest="sample_seed", type=int, default=None,
                   help="per-request sampling seed (reproducible output)")
    p.add_argument("--stop", action="append", default=[])
    add_engine_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import time

    from splitserve.engine.engine_config import EngineConfig
    from splitserve.engine.llm import LLM
    from splitserve.engine.sampling_params import SamplingParams

    try:
        params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature,
                                top_p=args.top_p, top_k=args.top_k, min_p=args.min_p,
                                seed=args.sample_seed, stop=list(args.stop))
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    engine_args = {f.name: getattr(args, f.name) for f in dataclasses.fields(EngineConfig)
                   if f.name != "model"}
    llm = LLM(args.model, **engine_args)
    if args.model is None:
        print("(demo model: a toy Llama trained for a few minutes on Python's docs; "
              "expect loosely English text)")
    started = time.perf_counter()
    outputs = llm.generate(args.prompt, params)
    elapsed = time.perf_counter() - started
    num_tokens = 0
    for out in outputs:
        completion = out.outputs[0]
        num_tokens += len(completion.token_ids)
        print(f"--- {out.prompt!r} ({completion.finish_reason})")
        print(f"{out.prompt}{completion.text}")
    print(f"--- {len(outputs)} prompts, {num_tokens} tokens in {elapsed:.2f} s "
          f"({num_tokens / max(elapsed, 1e-9):.1f} tokens/s)")
    return 0
