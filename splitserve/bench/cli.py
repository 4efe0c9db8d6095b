"""`splitserve bench`: load an OpenAI-compatible server and report latency and goodput.

Only argparse is imported at module level; the bench modules load when the verb runs.
"""

from __future__ import annotations

import argparse
import os
import sys

from splitserve.bench import compare_cli

# Mirrors workloads.PRESETS (a test keeps them equal) without importing it at startup.
PRESET_NAMES = ("chat", "code", "summarize", "mixed-long")


def _rates(text: str) -> list[float]:
    try:
        rates = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"rates must be numbers, got {text!r}") from None
    if not rates or any(r <= 0 for r in rates):
        raise argparse.ArgumentTypeError(f"rates must be positive, got {text!r}")
    return rates


def _pair(text: str) -> tuple[float, float | None]:
    """`START:DURATION` or `START:` (to the end)."""
    start, _, duration = text.partition(":")
    try:
        return float(start or 0), float(duration) if duration else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:DURATION seconds, got {text!r}") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench", help="load generator: latency percentiles, SLO attainment, goodput",
        description="Load an OpenAI-compatible server with streamed requests and report "
        "TTFT / TPOT / ITL / E2E percentiles, throughput, SLO attainment and goodput "
        "(docs/bench.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--url", default=None,
                   help="server base URL, e.g. http://127.0.0.1:8000 (required without --compare)")
    p.add_argument("--model-name", default=None, help="model field (default: first listed)")
    p.add_argument("--tokenizer", default=None, metavar="DIR",
                   help="dir with the model's tokenizer.json (prompts of exact length); "
                        "required, except with --compare (default: --model)")
    p.add_argument("--workload", choices=PRESET_NAMES, default="chat")
    p.add_argument("--input-len", default=None, metavar="DIST",
                   help="override input lengths: fixed:N | uniform:LO:HI | "
                        "lognormal:MEAN[:SIGMA[:MAX]]")
    p.add_argument("--output-len", default=None, metavar="DIST", help="override output lengths")
    p.add_argument("--length-scale", type=float, default=1.0,
                   help="divide every length (workload or trace) by this")
    p.add_argument("--max-model-len", type=int, default=None,
                   help="clip input+output to this (default: the server's, if reported)")
    p.add_argument("--arrival", choices=("poisson", "constant", "burst", "trace"),
                   default="poisson")
    p.add_argument("--rate", type=float, default=1.0, help="requests/s")
    p.add_argument("--burst-size", type=int, default=8)
    p.add_argument("--trace", default=None, metavar="PATH",
                   help="trace file (.csv Azure, .jsonl Mooncake); a bare name is looked up "
                        "in --trace-dir. Implies --arrival trace")
    p.add_argument("--trace-dir", default=os.path.join("..", "shared", "traces"))
    p.add_argument("--trace-window", type=_pair, default=(0.0, 60.0), metavar="START:DURATION",
                   help="seconds of trace time to replay ('300:' = from 300 s to the end)")
    p.add_argument("--speed", type=float, default=1.0, help="trace time speed-up factor")
    p.add_argument("--num-requests", type=int, default=100, help="0 = no count bound")
    p.add_argument("--duration", type=float, default=None, help="stop sending after S seconds")
    p.add_argument("--timeout", type=float, default=300.0, help="per-request timeout (s)")
    p.add_argument("--max-concurrency", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ttft-slo", type=float, default=None, help="seconds")
    p.add_argument("--tpot-slo", type=float, default=None, help="seconds")
    p.add_argument("--sweep", type=_rates, default=None, metavar="RATES",
                   help="comma-separated rates: one run each; goodput = highest passing")
    p.add_argument("--goodput-search", type=_rates, default=None, metavar="MIN,MAX",
                   help="bracket + bisect the goodput rate within [MIN, MAX]")
    p.add_argument("--max-runs", type=int, default=6, help="runs allowed to --goodput-search")
    p.add_argument("--target", type=float, default=0.9, help="attainment target for goodput")
    p.add_argument("--chat", action="store_true", help="use /v1/chat/completions")
    p.add_argument("--text-prompts", action="store_true",
                   help="send text prompts instead of token ids")
    p.add_argument("--timeline", action="store_true",
                   help="ask splitserve's router for each request's timeline (route, queue, "
                        "KV handoff, first token per worker), kept in the JSONL records")
    p.add_argument("--label", default=None, help="name of this run in tables and plots")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write JSONL records, summary JSON and PNG plots here")
    p.add_argument("--no-progress", action="store_true")
    compare_cli.add_args(p)
    p.set_defaults(func=run)


def _find_trace(name: str, trace_dir: str) -> str:
    """A path as given, else NAME under trace_dir (relative to the working directory,
    then to the repository checkout this package lives in)."""
    if os.path.exists(name) or os.sep in name:
        return name
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for folder in (trace_dir, os.path.join(repo, trace_dir)):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return os.path.join(trace_dir, name)


def _config(args: argparse.Namespace) -> object:
    from splitserve.bench.arrivals import TraceScaling
    from splitserve.bench.runner import BenchConfig
    from splitserve.bench.stats import SLO
    from splitserve.bench.workloads import get_workload, parse_dist

    workload = get_workload(args.workload)
    if args.input_len or args.output_len:
        workload = type(workload)(
            name=f"{workload.name}+custom",
            input_dist=parse_dist(args.input_len) if args.input_len else workload.input_dist,
            output_dist=parse_dist(args.output_len) if args.output_len else workload.output_dist,
            description="custom lengths",
        )
    trace = None
    if args.trace or args.arrival == "trace":
        if not args.trace:
            raise ValueError("--arrival trace needs --trace PATH")
        path = _find_trace(args.trace, args.trace_dir)
        start_s, duration_s = args.trace_window
        trace = TraceScaling(path, start_s, duration_s, args.length_scale, args.speed)
    return BenchConfig(
        url=args.url, tokenizer_dir=args.tokenizer, workload=workload, model=args.model_name,
        arrival="trace" if trace else args.arrival, rate_rps=args.rate,
        burst_size=args.burst_size, num_requests=args.num_requests or None,
        duration_s=args.duration, seed=args.seed,
        length_scale=1.0 if trace else args.length_scale, max_model_len=args.max_model_len,
        chat=args.chat, text_prompts=args.text_prompts, timeout_s=args.timeout,
        max_concurrency=args.max_concurrency, trace=trace,
        slo=SLO(args.ttft_slo, args.tpot_slo), label=args.label,
        capture_timeline=args.timeline,
    )


def run(args: argparse.Namespace) -> int:
    from splitserve.bench.client import BenchError

    try:
        return _run(args)
    except (BenchError, ValueError) as exc:
        print(f"splitserve bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("splitserve bench: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    import dataclasses

    from splitserve.bench import report
    from splitserve.bench.progress import Progress
    from splitserve.bench.runner import BenchConfig, BenchResult, run_bench, sweep_goodput
    from splitserve.bench.stats import goodput_search

    if args.compare:
        if args.url:
            raise ValueError("--compare starts its own clusters: drop --url")
        args.url = "http://127.0.0.1:0"  # replaced by each cluster's router URL
        args.tokenizer = args.tokenizer or args.model
        if not args.tokenizer:
            raise ValueError("--compare needs --model DIR")
        return compare_cli.run(args, _config(args))
    if not args.url or not args.tokenizer:
        raise ValueError("--url and --tokenizer are required (or use --compare)")
    config = _config(args)
    assert isinstance(config, BenchConfig)
    if (args.sweep or args.goodput_search) and config.trace is not None:
        raise ValueError("--sweep/--goodput-search vary --rate; a trace sets its own arrivals")
    label = args.label or (
        os.path.splitext(os.path.basename(config.trace.path))[0] if config.trace
        else config.workload.name
    )
    results: list[BenchResult] = []

    def one(cfg: BenchConfig) -> BenchResult:
        desc = f"{label} @ {cfg.rate_rps:g} rps" if cfg.trace is None else label
        bar = Progress(cfg.num_requests, desc, enabled=not args.no_progress)
        try:
            result = run_bench(cfg, on_done=bar)
        finally:
            bar.close()
        result.summary["label"] = label  # the CLI's default label when none was given
        results.append(result)
        return result

    goodput = None
    if args.goodput_search:
        lo, hi = min(args.goodput_search), max(args.goodput_search)
        if config.slo.ttft_s is None and config.slo.tpot_s is None:
            raise ValueError("--goodput-search needs --ttft-slo and/or --tpot-slo")
        found = goodput_search(
            lambda rate: float(
                one(dataclasses.replace(config, rate_rps=rate)).summary["slo_attainment"] or 0.0
            ),
            min_rate=lo, max_rate=hi, target=args.target, max_runs=args.max_runs,
            start_rate=config.rate_rps if lo <= config.rate_rps <= hi else lo,
        )
        goodput = {"goodput_rps": found.goodput_rps, "target": args.target,
                   "runs": found.runs, "method": "bracket+bisect"}
    else:
        for rate in args.sweep or [config.rate_rps]:
            one(dataclasses.replace(config, rate_rps=rate))
        if args.sweep:
            goodput = {"goodput_rps": sweep_goodput([r.summary for r in results], args.target),
                       "target": args.target, "method": "sweep"}
    summaries = [r.summary for r in results]
    if summaries:
        print(report.format_table(summaries))
    if goodput is not None:
        print(f"goodput: {goodput['goodput_rps']:g} req/s at >= {args.target:.0%} attainment")
    if args.out:
        _write(args.out, label, results, goodput)
    return 0


def _write(out_dir: str, label: str, results: list, goodput: dict | None) -> None:
    from splitserve.bench import plots, report

    for result in results:
        rate = result.summary.get("rate_rps")
        name = "run" if len(results) == 1 else f"rate_{rate:g}"
        report.save_run(out_dir, name, result.summary, result.records)
    if goodput is not None or len(results) > 1:
        report.write_json(os.path.join(out_dir, "sweep.json"),
                          {"summaries": [r.summary for r in results], "goodput": goodput})
    last = results[-1].records if results else []
    if results:
        plots.plot_ttft_cdf({label: last}, os.path.join(out_dir, "ttft_cdf.png"))
        plots.plot_itl_cdf({label: last}, os.path.join(out_dir, "itl_cdf.png"))
        plots.plot_stream_timelines({label: last}, os.path.join(out_dir, "timeline.png"))
    if len(results) > 1:
        plots.plot_attainment_vs_rate({label: [r.summary for r in results]},
                                      os.path.join(out_dir, "attainment.png"))
    print(f"wrote {out_dir}", file=sys.stderr)
