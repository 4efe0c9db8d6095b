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
from splitserve.demo.spec import DEFAULT_TRAIN_SECONDS, DEMO_DIR_NAME


def _log(message: str) -> None:
    print(f"[demo-model] {message}", file=sys.stderr, flush=True)


def default_model_dir() -> Path:
    """The default demo checkpoint folder, built on first use (a few minutes, once)."""
    from splitserve.demo.build import build_demo_model, default_demo_dir, is_complete

    target = default_demo_dir()
    if not is_complete(target):
        _log(f"no demo model cached at {target}; building it (about 3 minutes, once)")
    return build_demo_model(log=_log)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"--train-seconds must be positive, got {text}")
    return value


def run(args: argparse.Namespace) -> int:
    from splitserve.demo.build import build_demo_model, default_demo_dir, is_complete

    target = Path(args.out) if args.out else default_demo_dir()
    if args.force or not is_complete(target):
        _log(f"building the demo model in {target} (training {args.train_seconds:g} s)")
    path = build_demo_model(
        target, train_seconds=args.train_seconds, seed=args.seed, force=args.force, log=_log
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
        type=_positive_seconds,
        default=DEFAULT_TRAIN_SECONDS,
        metavar="S",
        help="wall-time limit of the training loop (default: %(default)g)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--force", action="store_true", help="rebuild even if a complete build exists"
    )
    parser.set_defaults(func=run)
