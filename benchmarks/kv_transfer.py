"""KV transfer throughput vs payload size: TCP loopback and shared memory against a plain
memory copy and a raw socket send of the same bytes, measured in the same run.

    PYTHONPATH=. python benchmarks/kv_transfer.py [--max-mb 1024] [--reps 5]

The source (prefill side) runs in a child process, as it would in a deployment; this
process is the sink. Every protocol transfer runs in full: connect, HMAC auth, handshake,
per-layer checksums on both sides, `write_layer` copying each layer into a preallocated
destination, ack and release; the destination is compared with the source afterwards.
`tcp_transport_only` is the same pull with a no-op `write_layer` (bytes end verified in
the receive buffer, as the raw socket's end in its target). The raw-socket baseline sends the same bytes from the same child process with one plain
`sendall` into `recv_into` calls, after a one-byte go signal (the protocol also starts
with a round trip). Throughput = payload bytes / median seconds of `--reps` runs after a
warm-up. Writes benchmarks/results/kv_transfer.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import socket
import statistics
import sys
import time
import zlib
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from splitserve.transfer import HandoffRecord, KVServer, ModelIdentity, kv_checksum, pull_kv
from splitserve.transfer.wire import tune_socket

NUM_LAYERS = 32
SECRET = b"bench-secret"
RESULT_PATH = Path(__file__).parent / "results" / "kv_transfer.json"
# label -> (pull transport, KVServer keyword arguments)
PROTOCOLS: dict[str, tuple[str, dict[str, bool]]] = {
    "tcp": ("tcp", {}),
    "tcp_transport_only": ("tcp", {}),
    "shm_export_at_pull": ("shm", {}),
    "shm_export_at_register": ("shm", {"shm_export_at_register": True}),
}


def identity_for(num_bytes: int) -> tuple[ModelIdentity, int]:
    """A model identity and a block count whose KV over all layers is ~num_bytes."""
    identity = ModelIdentity(
        "bench", "float16", block_size=16, num_layers=NUM_LAYERS, num_kv_heads=1, head_dim=32
    )
    return identity, max(1, num_bytes // (NUM_LAYERS * identity.bytes_per_block))


def make_payload(num_bytes: int) -> np.ndarray:
    return np.random.default_rng(num_bytes).integers(0, 256, num_bytes, dtype=np.uint8)


def recv_all(sock: socket.socket, target: np.ndarray) -> None:
    view = target.data
    num_received = 0
    while num_received < target.nbytes:
        num_received += sock.recv_into(view[num_received : num_received + (16 << 20)])


def source_process(pipe: Connection) -> None:
    """The prefill side: holds the payload, serves it through KVServers and raw sockets."""
    raw_listener = socket.create_server(("127.0.0.1", 0))
    pipe.send(raw_listener.getsockname()[1])
    servers: dict[str, KVServer] = {}
    raw_socket: socket.socket | None = None
    payload = np.zeros(0, np.uint8)
    layers: list[np.ndarray] = []
    num_blocks = 0
    while True:
        command, *args = pipe.recv()
        if command == "payload":
            for server in servers.values():
                server.close()
            identity, num_blocks = identity_for(args[0])
            payload = make_payload(num_blocks * identity.bytes_per_block * NUM_LAYERS)
            layers = np.split(payload, NUM_LAYERS)
            servers = {
                label: KVServer(identity, SECRET, **kwargs)  # type: ignore[arg-type]
                for label, (_, kwargs) in PROTOCOLS.items()
            }
            pipe.send(payload.nbytes)
        elif command == "raw_connect":
            if raw_socket is not None:
                raw_socket.close()
            raw_socket, _ = raw_listener.accept()
            if args[0]:
                tune_socket(raw_socket)
            pipe.send("ok")
        elif command == "raw_serve":
            assert raw_socket is not None
            for _ in range(args[0]):
                raw_socket.recv(1)
                raw_socket.sendall(payload.data)
            pipe.send("done")
        elif command == "register":
            label, request_id = args
            started = time.perf_counter()
            record = servers[label].register(
                request_id,
                layers=layers,
                block_ids=range(num_blocks),
                num_tokens=num_blocks * 16,
                expires_at=time.time() + 600,
            )
            pipe.send((record.to_json(), time.perf_counter() - started))
        elif command == "quit":
            for server in servers.values():
                server.close()
            if raw_socket is not None:
                raw_socket.close()
            raw_listener.close()
            pipe.send("bye")
            return


def summarize(num_bytes: int, samples: list[float]) -> dict[str, object]:
    median = statistics.median(samples)
    return {
        "gb_per_s": num_bytes / median / 1e9,
        "median_s": median,
        "samples_s": samples,
        "spread": (max(samples) - min(samples)) / median,
    }


def timed_runs(run: Callable[[], object], reps: int) -> list[float]:
    """Seconds of `reps` timed runs after one warm-up run (page faults, first paths)."""
    run()
    samples = []
    for _ in range(reps):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return samples


def bench_size(pipe: Connection, raw_port: int, size_bytes: int, reps: int) -> dict[str, object]:
    pipe.send(("payload", size_bytes))
    num_bytes = pipe.recv()
    identity, num_blocks = identity_for(size_bytes)
    layer_bytes = num_bytes // NUM_LAYERS
    source = make_payload(num_bytes)
    target = np.zeros_like(source)
    samples = {"memcpy": timed_runs(lambda: np.copyto(target, source), reps)}

    for tuned in (False, True):
        pipe.send(("raw_connect", tuned))
        sock = socket.create_connection(("127.0.0.1", raw_port))
        if tuned:
            tune_socket(sock)
        assert pipe.recv() == "ok"
        pipe.send(("raw_serve", reps + 1))

        def raw_transfer(sock: socket.socket = sock) -> None:
            sock.sendall(b"g")
            recv_all(sock, target)

        samples[f"raw_socket_{'tuned' if tuned else 'default'}"] = timed_runs(raw_transfer, reps)
        assert pipe.recv() == "done"
        sock.close()

    def write_layer(layer: int, view: memoryview) -> None:
        np.copyto(
            target[layer * layer_bytes : (layer + 1) * layer_bytes],
            np.frombuffer(view, dtype=np.uint8),
        )

    def discard_layer(layer: int, view: memoryview) -> None:
        pass

    register_s: dict[str, float] = {}
    for label, (transport, _) in PROTOCOLS.items():
        target[:] = 0
        pull_s: list[float] = []
        registering: list[float] = []
        for rep in range(reps + 1):
            pipe.send(("register", label, f"{label}-{rep}"))
            record_json, seconds = pipe.recv()
            record = HandoffRecord.from_json(record_json)
            started = time.perf_counter()
            # tcp_transport_only leaves each verified layer in the receive buffer, like the
            # raw socket leaves it in its target: the import copy is the engine's cost.
            sink = discard_layer if label == "tcp_transport_only" else write_layer
            pull_kv(record, SECRET, identity, sink, timeout_s=600, transport=transport)
            if rep:  # the first pull is a warm-up
                pull_s.append(time.perf_counter() - started)
                registering.append(seconds)
        samples[label] = pull_s
        register_s[label] = statistics.median(registering)
        if label != "tcp_transport_only" and not np.array_equal(target, source):
            raise AssertionError(f"{label}: destination differs from source")

    gb_per_s = {label: num_bytes / statistics.median(s) / 1e9 for label, s in samples.items()}
    # Best-of-reps throughput: on a shared, overloaded machine the fastest run is the one
    # least disturbed by other processes, so it is reported beside the median.
    best_gb_per_s = {label: num_bytes / min(s) / 1e9 for label, s in samples.items()}
    return {
        "payload_bytes": num_bytes,
        "num_layers": NUM_LAYERS,
        "num_blocks": num_blocks,
        "gb_per_s": gb_per_s,
        "best_gb_per_s": best_gb_per_s,
        "ratios_median": ratios(gb_per_s),
        "ratios_best": ratios(best_gb_per_s),
        "source_register_s_median": register_s,
        "runs": {label: summarize(num_bytes, s) for label, s in samples.items()},
    }


def ratios(gb_per_s: dict[str, float]) -> dict[str, float]:
    """The issue's targets: TCP >= 0.5 x raw socket, shared memory >= 0.5 x memory copy."""
    best_raw = max(gb_per_s["raw_socket_default"], gb_per_s["raw_socket_tuned"])
    return {
        "tcp_vs_best_raw_socket": gb_per_s["tcp"] / best_raw,
        "tcp_transport_only_vs_best_raw_socket": gb_per_s["tcp_transport_only"] / best_raw,
        "shm_export_at_pull_vs_memcpy": gb_per_s["shm_export_at_pull"] / gb_per_s["memcpy"],
        "shm_export_at_register_vs_memcpy": (
            gb_per_s["shm_export_at_register"] / gb_per_s["memcpy"]
        ),
    }


def bench_checksums(num_bytes: int, reps: int) -> dict[str, float]:
    data = make_payload(num_bytes)
    copy = np.empty_like(data)
    view = data.data
    functions: dict[str, Callable[[], object]] = {
        "zlib.crc32": lambda: zlib.crc32(view),
        "zlib.adler32": lambda: zlib.adler32(view),
        "kv_checksum (chunksum64-blake2b)": lambda: kv_checksum(view),
        "numpy uint64 sum (bandwidth bound)": lambda: data.view(np.uint64).sum(),
        "numpy copyto (for scale)": lambda: np.copyto(copy, data),
    }
    return {
        name: num_bytes / statistics.median(timed_runs(fn, reps)) / 1e9
        for name, fn in functions.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--max-mb", type=int, default=1024, help="largest payload (MB)")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions per point")
    parser.add_argument("--out", type=Path, default=RESULT_PATH)
    args = parser.parse_args()
    sizes_mb = [mb for mb in (1, 4, 16, 64, 256, 1024) if mb <= args.max_mb]
    load_before = os.getloadavg()
    pipe, child_pipe = mp.get_context("spawn").Pipe()
    source = mp.get_context("spawn").Process(target=source_process, args=(child_pipe,))
    source.start()
    points = []
    try:
        raw_port = pipe.recv()
        for size_mb in sizes_mb:
            reps = args.reps if size_mb < 1024 else max(3, args.reps // 2)
            point = bench_size(pipe, raw_port, size_mb << 20, reps)
            points.append(point)
            rates = point["gb_per_s"]
            assert isinstance(rates, dict)
            print(f"{size_mb:5d} MB GB/s " + " ".join(f"{k} {v:.2f}" for k, v in rates.items()))
            for kind in ("ratios_median", "ratios_best"):
                values = point[kind]
                assert isinstance(values, dict)
                print(f"      {kind} " + " ".join(f"{k} {v:.2f}" for k, v in values.items()))
        pipe.send(("quit",))
        pipe.recv()
    finally:
        source.join(timeout=30)
        if source.is_alive():
            source.terminate()
    report = {
        "command": "PYTHONPATH=. python " + " ".join(sys.argv),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "zlib": zlib.ZLIB_RUNTIME_VERSION,
            "num_cpus": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "checksum_gb_per_s_64mb": bench_checksums(64 << 20, args.reps),
        "points": points,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["checksum_gb_per_s_64mb"], indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
