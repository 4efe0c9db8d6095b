"""`splitserve demo-model`: build (or find) the bundled demo checkpoint and print its path.

Only argparse at import time: `splitserve --help` must not pay for torch. The other verbs
call `default_model_dir()` when the user names no MODEL.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

# spec holds only dataclasses and constants: cheap to import, unlike build's torch.
from splitserve.demo.spec import DEFAULT_MAX_STEPS, DEFAULT_TRAIN_SECONDS, DEMO_DIR_NAME


def _log(message: str) -> None:
    print(f"[demo-model] {message}", file=sys.stderr, flush=True)


def default_model_dir() -> Path:
    """The default demo checkpoint folder, built on first use (a few minutes, once)."""
    from splitserve.demo.build import build_demo_model, default_demo_dir, is_complete

    target = default_demo_dir()
    if not is_complete(target):
        _log(f"no demo model cached at {target}; building it (about 3 minutes, once)")
    return build_demo_model(log=_log)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be >= 0 (0: no limit), got {text}")
    return value


def run(args: argparse.Namespace) -> int:
    from splitserve.demo.build import build_demo_model, default_demo_dir, is_complete

    target = Path(args.out) if args.out else default_demo_dir()
    train_seconds = args.train_seconds or None  # 0 means no time limit
    if args.force or not is_complete(target):
        limits = [f"{train_seconds:g} s"] if train_seconds is not None else []
        limits += [f"{args.max_steps} steps"] if args.max_steps is not None else []
        _log(f"building the demo model in {target} (training at most {', '.join(limits)})")
    path = build_demo_model(
        target,
        train_seconds=train_seconds,
        max_steps=args.max_steps,
        seed=args.seed,
        force=args.force,
        num_threads=args.threads,
        log=_log,
    )
    print(path)
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo-model",
        help="build (or find) the small demo model used when no MODEL is given",
        description=(
            "Build the bundled demo checkpoint: a byte-level BPE tokenizer and a small "
            "Llama trained for a few minutes on Python's own documentation (offline, no "
            "download). The result is cached; the path is printed on stdout."
        ),
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="folder to build into (default: $SPLITSERVE_CACHE or ~/.cache/splitserve, "
        f"subfolder {DEMO_DIR_NAME})",
    )
    parser.add_argument(
        "--train-seconds",
        type=_seconds,
        default=DEFAULT_TRAIN_SECONDS,
        metavar="S",
        help="wall-time limit of the training loop; 0: none (default: %(default)g)",
    )
    parser.add_argument(
        "--max-steps",
        type=_positive_int,
        default=DEFAULT_MAX_STEPS,
        metavar="N",
        help="train N steps unless --train-seconds runs out first; with --train-seconds 0 "
        "the build is reproducible (same seed, Python, torch, thread count) "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        metavar="N",
        help="torch threads (default: all cores this process may use)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--force", action="store_true", help="rebuild even if a complete build exists"
    )
    parser.set_defaults(func=run)
