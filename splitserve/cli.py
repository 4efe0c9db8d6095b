"""`splitserve <verb>`: one entry point; each verb lives with the package it drives.

Every package that owns a verb exposes `splitserve.<pkg>.cli.register(subparsers)`,
which adds its parser and sets `func`. Those modules import only argparse-level code at
top level so that `splitserve --help` starts fast and without torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules whose `register(subparsers)` adds verbs. Missing modules are skipped so that a
# partially built tree still runs the verbs it has.
VERB_MODULES = (
    "splitserve.engine.cli",
    "splitserve.engine.profile_cli",
    "splitserve.worker.cli",
    "splitserve.router.cli",
    "splitserve.cluster.cli",
    "splitserve.bench.cli",
    "splitserve.planner.cli",
    "splitserve.demo.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="splitserve", description="Disaggregated prefill/decode LLM serving."
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name in VERB_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
