"""`splitserve plan`: only argparse at import time; the planner loads inside `run`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "plan",
        help="size colocated and disaggregated fleets for a workload and SLOs",
        description="Simulate colocated and xPyD fleets, find the cheapest of each that "
        "meets the SLO, and say whether splitting pays.",
    )
    p.add_argument(
        "--model",
        required=True,
        help="config.json, a checkpoint folder, or a bundled name (llama-3-70b, opt-13b)",
    )
    p.add_argument("--hardware", default="h100", help="a100, h100, h200, l40s, b200")
    p.add_argument("--price-per-hour", type=float, default=None, help="USD per GPU-hour")
    p.add_argument("--workload", default="chat", help="chat, code, summarize, search, mixed-long")
    p.add_argument(
        "--input-len",
        type=int,
        default=None,
        help="fixed prompt length (with --output-len; overrides --workload)",
    )
    p.add_argument("--output-len", type=int, default=None)
    p.add_argument(
        "--trace",
        default=None,
        help="trace path, or azure-conv / azure-code / mooncake from ../shared/traces/",
    )
    p.add_argument(
        "--rate", type=float, default=None, help="req/s (a trace keeps its own rate unless given)"
    )
    p.add_argument(
        "--num-requests",
        type=int,
        default=2000,
        help="requests per simulation (a trace: at most this many; 0 = all)",
    )
    p.add_argument("--ttft", type=float, required=True, help="TTFT SLO, seconds")
    p.add_argument("--tpot", type=float, required=True, help="TPOT SLO, seconds")
    p.add_argument(
        "--attainment",
        type=float,
        default=0.9,
        help="fraction of requests that must meet both SLOs",
    )
    p.add_argument("--tp", default="1,2,4,8", help="tensor-parallel degrees to try")
    p.add_argument("--profile", default=None,
                   help="measured step latencies from `splitserve profile` (replaces the "
                        "roofline; only its TP degree is searched)")
    p.add_argument("--kv-link", choices=("network", "interconnect"), default="network")
    p.add_argument(
        "--layer-overlap",
        action="store_true",
        help="overlap the KV transfer with the prefill, layer by layer",
    )
    p.add_argument(
        "--local-prefill-max-len",
        type=int,
        default=0,
        help="prompts up to this length are prefilled on the decode instance",
    )
    p.add_argument(
        "--token-budget",
        type=int,
        default=None,
        help="colocated chunked-prefill budget (default: try 256, 512, 1024, 2048)",
    )
    p.add_argument("--no-chunked-prefill", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-goodput", action="store_true", help="skip the max-goodput search")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--out", default="plan_out", help="folder for plan.json and the PNG")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except ValueError as exc:
        print(f"splitserve plan: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    import json

    from splitserve.planner.cost_model import Efficiency
    from splitserve.planner.fleet import SchedulerConfig
    from splitserve.planner.hardware import get_hardware
    from splitserve.planner.model_spec import load_model_spec
    from splitserve.planner.plan import format_table, plot_attainment, run_plan
    from splitserve.planner.results import Slo
    from splitserve.planner.search import PlanSetup
    from splitserve.planner.workload import (
        fixed_workload,
        generate,
        get_workload,
        load_trace,
        resolve_trace,
    )

    slo = Slo(args.ttft, args.tpot, args.attainment)
    hardware = get_hardware(args.hardware, price_per_hour=args.price_per_hour)
    model = load_model_spec(args.model)
    try:
        tps = tuple(int(t) for t in args.tp.split(","))
    except ValueError as exc:
        raise ValueError(f"--tp must be a comma-separated list of ints, got {args.tp!r}") from exc
    profile = None
    if args.profile:
        from splitserve.planner.profile_format import load_profile

        profile = load_profile(args.profile)
        tps = (int(profile["tensor_parallel"]),)
    if args.num_requests < 0:
        raise ValueError(f"--num-requests must be >= 0, got {args.num_requests}")
    if args.trace:
        requests = load_trace(resolve_trace(args.trace), limit=args.num_requests or None)
        if args.rate is not None:
            requests = requests.with_rate(args.rate)
    else:
        if args.rate is None:
            raise ValueError("--rate is required without --trace")
        if (args.input_len is None) != (args.output_len is None):
            raise ValueError("--input-len and --output-len go together")
        spec = (
            fixed_workload(args.input_len, args.output_len)
            if args.input_len is not None
            else get_workload(args.workload)
        )
        requests = generate(spec, args.rate, args.num_requests or 2000, seed=args.seed)
    setup = PlanSetup(
        model=model,
        hardware=hardware,
        slo=slo,
        efficiency=Efficiency(),
        scheduler=SchedulerConfig(
            token_budget=args.token_budget or 2048, chunked_prefill=not args.no_chunked_prefill
        ),
        colocated_token_budgets=(
            () if args.token_budget or args.no_chunked_prefill else (256, 512, 1024, 2048)
        ),
        kv_link=args.kv_link,
        layer_overlap=args.layer_overlap,
        local_prefill_max_len=args.local_prefill_max_len,
        tp_options=tps,
        profile=profile,
    )
    plan = run_plan(setup, requests, with_goodput=not args.no_goodput)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not args.no_plot:
        png = out_dir / "attainment_vs_rate.png"
        plan["attainment_vs_rate"] = plot_attainment(setup, plan, requests, png)
        plan["plot"] = str(png)
    (out_dir / "plan.json").write_text(json.dumps(plan, indent=1) + "\n")
    print(format_table(plan))
    print(f"wrote {out_dir / 'plan.json'}")
    return 0
