"""Flags and entry point of `splitserve bench --compare 2m,1p1d --model DIR ...`.

Only argparse at import time (this module is imported by `splitserve --help`).
"""

from __future__ import annotations

import argparse
import os
import sys


def _slo(text: str) -> tuple[str, float | None, float | None]:
    """`NAME=TTFT:TPOT` seconds; either side may be empty (not judged)."""
    name, sep, rest = text.partition("=")
    ttft, sep2, tpot = rest.partition(":")
    try:
        if not (name and sep and sep2):
            raise ValueError
        return name, float(ttft) if ttft else None, float(tpot) if tpot else None
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--slo must look like NAME=TTFT_S:TPOT_S (e.g. tpot=:0.2), got {text!r}") from None


def add_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("compare (start clusters here and compare topologies)")
    g.add_argument("--compare", default=None, metavar="TOPOLOGIES",
                   help="comma-separated topologies on the same cores, e.g. 2m,1p1d "
                        "(Km = K mixed workers, XpYd = X prefill + Y decode); replaces --url")
    g.add_argument("--model", default=None, metavar="DIR", help="model folder to serve")
    g.add_argument("--cores", default=None, help="cores for every cluster, e.g. 0,1")
    g.add_argument("--worker-arg", action="append", default=[],
                   help="flag for every worker, e.g. --worker-arg=--dtype=float32")
    g.add_argument("--router-arg", action="append", default=[], help="flag for the router")
    g.add_argument("--slo", type=_slo, action="append", default=[], metavar="NAME=TTFT:TPOT",
                   help="named SLO judged on the same runs (repeatable); default: one SLO "
                        "'slo' from --ttft-slo/--tpot-slo")
    g.add_argument("--max-per-topology", type=float, default=None, metavar="S",
                   help="start no new run on a cluster after S seconds of running it")


def run(args: argparse.Namespace, config: object) -> int:
    from splitserve.bench.compare import CompareConfig, Topology, format_comparison, run_compare
    from splitserve.bench.runner import BenchConfig, BenchResult
    from splitserve.bench.stats import SLO

    assert isinstance(config, BenchConfig)
    if not args.model:
        raise ValueError("--compare needs --model DIR (the clusters serve it)")
    if args.goodput_search:
        raise ValueError("--compare sweeps --sweep rates; --goodput-search is not supported")
    slos = {name: SLO(ttft, tpot) for name, ttft, tpot in args.slo}
    if not slos and (config.slo.ttft_s is not None or config.slo.tpot_s is not None):
        slos = {"slo": config.slo}
    rates = () if config.trace else tuple(args.sweep or [config.rate_rps])
    compare = CompareConfig(
        model_dir=args.model, bench=config,
        topologies=tuple(Topology.parse(t) for t in args.compare.split(",") if t.strip()),
        rates=rates, slos=slos, target=args.target,
        cores=tuple(int(c) for c in args.cores.split(",")) if args.cores else None,
        worker_args=tuple(args.worker_arg), router_args=tuple(args.router_arg),
        max_per_topology_s=args.max_per_topology, out_dir=args.out)

    def progress(topology: Topology, result: BenchResult) -> None:
        if not args.no_progress:
            s = result.summary
            print(f"done: {topology.label} @ {s['rate_rps'] or 'trace'}: {s['completed']}/"
                  f"{s['sent']} completed", file=sys.stderr, flush=True)

    if not args.no_progress:
        print(f"comparing {[t.label for t in compare.topologies]} at rates "
              f"{list(rates) or ['trace']} ...", file=sys.stderr, flush=True)
    comparison = run_compare(compare, on_result=progress)
    print(format_comparison(comparison))
    if args.out:
        print(f"wrote {os.path.join(args.out, 'compare.json')}", file=sys.stderr)
    return 0
