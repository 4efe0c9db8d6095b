"""`splitserve router`: argparse only at top level; the app is imported when the verb runs."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "router", help="OpenAI-compatible router in front of prefill/decode/mixed workers"
    )
    p.add_argument("--model", required=True, help="checkpoint folder (tokenizer + config.json)")
    p.add_argument("--prefill", nargs="*", default=[], metavar="URL", help="prefill workers")
    p.add_argument("--decode", nargs="*", default=[], metavar="URL", help="decode workers")
    p.add_argument("--mixed", nargs="*", default=[], metavar="URL", help="colocated workers")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--secret", default="", help="cluster secret sent to workers")
    p.add_argument("--api-key", default=None,
                   help="require this bearer key from clients (default: $SPLITSERVE_API_KEY)")
    p.add_argument("--served-model-name", default=None, help="model id (default: folder name)")
    p.add_argument("--max-model-len", type=int, default=None,
                   help="default: config.json max_position_embeddings")
    p.add_argument("--policy", choices=["least_loaded", "round_robin"], default="least_loaded")
    p.add_argument("--short-prompt-len", type=int, default=64,
                   help="prompts up to this many tokens are prefilled on the decode worker")
    p.add_argument("--saturated-num-waiting", type=int, default=8,
                   help="prefill pool saturated when every worker has this many waiting")
    p.add_argument("--poll-interval-s", type=float, default=0.5)
    p.add_argument("--log-level", default="warning")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from splitserve.router.app import build_app
    from splitserve.router.config import RouterConfig

    config = RouterConfig(
        model_dir=args.model,
        prefill_urls=tuple(args.prefill),
        decode_urls=tuple(args.decode),
        mixed_urls=tuple(args.mixed),
        served_model_name=args.served_model_name,
        max_model_len=args.max_model_len,
        host=args.host,
        port=args.port,
        secret=args.secret or os.environ.get("SPLITSERVE_SECRET", ""),
        api_key=args.api_key or os.environ.get("SPLITSERVE_API_KEY") or None,
        policy=args.policy,
        short_prompt_len=args.short_prompt_len,
        saturated_num_waiting=args.saturated_num_waiting,
        poll_interval_s=args.poll_interval_s,
    )
    uvicorn.run(build_app(config), host=config.host, port=config.port, log_level=args.log_level)
    return 0
