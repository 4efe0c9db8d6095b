"""`splitserve serve` (a local cluster until Ctrl-C) and `splitserve demo` (the README's
main job: start a 1P1D cluster, send a few requests, print a short report, stop)."""

from __future__ import annotations

import argparse


def _add_cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default=None,
                   help="HF model folder (default: the bundled demo model)")
    p.add_argument("--prefill", type=int, default=None,
                   help="prefill workers (default 1, or 0 when --mixed is given)")
    p.add_argument("--decode", type=int, default=None,
                   help="decode workers (default 1, or 0 when --mixed is given)")
    p.add_argument("--mixed", type=int, default=0, help="colocated (mixed) workers")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="router port")
    p.add_argument("--transport", choices=("tcp", "shm"), default="tcp")
    p.add_argument("--cores", default=None, help="CPU cores to use, e.g. 0,1 (default: all)")
    p.add_argument("--gpus", default=None,
                   help="GPU ids, one per worker round-robin, e.g. 0,1 (with "
                        "--worker-arg=--device=cuda)")
    p.add_argument("--log-dir", default=None)
    p.add_argument("--worker-arg", action="append", default=[],
                   help="extra flag passed to every worker, e.g. --worker-arg=--dtype=float32")
    p.add_argument("--router-arg", action="append", default=[],
                   help="extra flag passed to the router")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = sub.add_parser("serve", help="run router + workers on this machine until Ctrl-C")
    _add_cluster_args(serve)
    serve.set_defaults(func=run_serve)
    demo = sub.add_parser("demo", help="start a 1P1D cluster, send a few requests, report, stop")
    _add_cluster_args(demo)
    demo.add_argument("--num-requests", type=int, default=4)
    demo.add_argument("--max-tokens", type=int, default=32)
    demo.set_defaults(func=run_demo)


def _spec(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from splitserve.cluster.launcher import ClusterSpec

    model = args.model
    if model is None:
        from splitserve.demo import default_model_dir

        model = str(default_model_dir())
    # `serve --mixed 2` alone means a colocated cluster, not 1P1D plus 2 mixed
    default_pool = 0 if args.mixed else 1
    num_prefill = default_pool if args.prefill is None else args.prefill
    num_decode = default_pool if args.decode is None else args.decode
    cores = tuple(int(c) for c in args.cores.split(",")) if args.cores else None
    gpus = tuple(int(g) for g in args.gpus.split(",")) if args.gpus else None
    return ClusterSpec(
        model_dir=model, num_prefill=num_prefill, num_decode=num_decode,
        num_mixed=args.mixed, host=args.host, router_port=args.port,
        transport=args.transport, cores=cores, gpus=gpus, log_dir=args.log_dir,
        worker_args=tuple(args.worker_arg), router_args=tuple(args.router_arg),
    )


def run_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from splitserve.cluster.launcher import Cluster

    cluster = Cluster(_spec(args))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"starting {cluster.spec.roles()} on model {cluster.spec.model_dir} ...", flush=True)
    cluster.start()
    try:
        print(f"splitserve is serving at {cluster.url}/v1  (logs: {cluster.log_dir}); "
              "Ctrl-C stops it", flush=True)
        while not stop.wait(1.0):
            dead = [c.name for c in cluster.children if c.proc.poll() is not None]
            if dead:
                print(f"process(es) {dead} exited; stopping the cluster", flush=True)
                return 1
        return 0
    finally:
        print("stopping ...", flush=True)
        cluster.stop()


def run_demo(args: argparse.Namespace) -> int:
    from splitserve.cluster.demo_job import run_demo_job
    from splitserve.cluster.launcher import Cluster

    with Cluster(_spec(args)) as cluster:
        return run_demo_job(cluster, args.num_requests, args.max_tokens)
