"""`splitserve worker`: one engine + KV endpoint + internal API, in this process."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from splitserve.engine.cli_args import add_engine_args

    p = sub.add_parser("worker", help="run one prefill, decode or mixed worker")
    p.add_argument("--role", choices=("prefill", "decode", "mixed"), default="mixed")
    p.add_argument("--model", default=None, help="HF model folder (default: the demo model)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--kv-host", default=None, help="address decode workers pull KV from")
    p.add_argument("--kv-port", type=int, default=0)
    p.add_argument("--transport", choices=("tcp", "shm"), default="tcp")
    p.add_argument("--worker-id", default=None)
    p.add_argument("--log-level", default="info")
    add_engine_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from splitserve.cluster.cores import pin_current_process
    from splitserve.engine.cli_args import engine_config_from_args
    from splitserve.worker.app import create_app
    from splitserve.worker.config import WorkerConfig

    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cores = pin_current_process()
    if args.num_threads is None and cores:
        args.num_threads = len(cores)
    model = args.model
    if model is None:
        from splitserve.demo import default_model_dir

        model = str(default_model_dir())
    cfg = WorkerConfig(
        engine=engine_config_from_args(args, model),
        role=args.role, host=args.host, port=args.port, kv_host=args.kv_host,
        kv_port=args.kv_port, transport=args.transport,
        worker_id=args.worker_id or f"{args.role}-{args.port}",
        secret=WorkerConfig.secret_from_env(),
    )
    uvicorn.run(create_app(cfg), host=cfg.host, port=cfg.port, log_level="warning",
                timeout_graceful_shutdown=5)
    return 0
