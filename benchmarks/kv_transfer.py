"""KV transfer throughput vs payload size: TCP loopback and shared memory against a plain
memory copy and a raw socket send of the same bytes, measured in the same run.

    PYTHONPATH=. python benchmarks/kv_transfer.py [--max-mb 1024] [--reps 5]

Every transfer runs the full protocol (connect, HMAC auth, handshake, per-layer checksum
on both sides, write_layer copying into a preallocated destination, ack and release),
with source and sink as two threads of this process, like the raw-socket baseline.
Writes benchmarks/results/kv_transfer.json. Throughput is payload bytes / median seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import threading
import time
import zlib
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from splitserve.transfer import KVServer, ModelIdentity, kv_checksum, pull_kv
from splitserve.transfer.wire import tune_socket

NUM_LAYERS = 32
SECRET = b"bench-secret"
RESULT_PATH = Path(__file__).parent / "results" / "kv_transfer.json"


def timed_runs(run: Callable[[], object], reps: int) -> list[float]:
    """Seconds of `reps` timed runs after one warm-up run (page faults, first paths)."""
    run()
    samples = []
    for _ in range(reps):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return samples


class RawSocketPair:
    """A connected loopback TCP pair: one thread sendall()s, the caller recv_into()s."""

    def __init__(self, tuned: bool) -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        self.sender = socket.create_connection(listener.getsockname())
        self.receiver, _ = listener.accept()
        listener.close()
        if tuned:
            tune_socket(self.sender)
            tune_socket(self.receiver)

    def transfer(self, source: np.ndarray, target: np.ndarray) -> None:
        thread = threading.Thread(target=self.sender.sendall, args=(source.data,))
        thread.start()
        view = target.data
        num_received = 0
        while num_received < target.nbytes:
            num_received += self.receiver.recv_into(view[num_received : num_received + (16 << 20)])
        thread.join()

    def close(self) -> None:
        self.sender.close()
        self.receiver.close()


def identity_for(num_bytes: int) -> tuple[ModelIdentity, int]:
    """A model identity and a block count whose KV over all layers is ~num_bytes."""
    identity = ModelIdentity(
        "bench", "float16", block_size=16, num_layers=NUM_LAYERS, num_kv_heads=1, head_dim=32
    )
    return identity, max(1, num_bytes // (NUM_LAYERS * identity.bytes_per_block))


def summarize(num_bytes: int, samples: list[float]) -> dict[str, object]:
    median = statistics.median(samples)
    return {
        "gb_per_s": num_bytes / median / 1e9,
        "median_s": median,
        "samples_s": samples,
        "spread": (max(samples) - min(samples)) / median,
    }


def time_protocol(
    identity: ModelIdentity,
    num_blocks: int,
    source_layers: list[np.ndarray],
    write_layer: Callable[[int, memoryview], None],
    transport: str,
    reps: int,
    **server_kwargs: bool,
) -> tuple[list[float], list[float]]:
    """(pull seconds, register seconds) of reps full pulls after one warm-up pull."""
    pull_s: list[float] = []
    register_s: list[float] = []
    with KVServer(identity, SECRET, **server_kwargs) as server:  # type: ignore[arg-type]
        for rep in range(reps + 1):
            started = time.perf_counter()
            record = server.register(
                f"r{rep}",
                layers=source_layers,
                block_ids=range(num_blocks),
                num_tokens=num_blocks * identity.block_size,
                expires_at=time.time() + 600,
            )
            registered = time.perf_counter()
            pull_kv(record, SECRET, identity, write_layer, timeout_s=600, transport=transport)
            if rep:  # the first pull is a warm-up
                register_s.append(registered - started)
                pull_s.append(time.perf_counter() - registered)
    return pull_s, register_s


def bench_size(num_bytes: int, reps: int) -> dict[str, object]:
    identity, num_blocks = identity_for(num_bytes)
    layer_bytes = num_blocks * identity.bytes_per_block
    num_bytes = layer_bytes * NUM_LAYERS
    source = np.random.default_rng(0).integers(0, 256, num_bytes, dtype=np.uint8)
    target = np.zeros_like(source)
    source_layers = [source[i * layer_bytes : (i + 1) * layer_bytes] for i in range(NUM_LAYERS)]

    def write_layer(layer: int, view: memoryview) -> None:
        np.copyto(
            target[layer * layer_bytes : (layer + 1) * layer_bytes],
            np.frombuffer(view, dtype=np.uint8),
        )

    samples: dict[str, list[float]] = {
        "memcpy": timed_runs(lambda: np.copyto(target, source), reps)
    }
    for tuned in (False, True):
        pair = RawSocketPair(tuned)
        label = f"raw_socket_{'tuned' if tuned else 'default'}"
        samples[label] = timed_runs(partial(pair.transfer, source, target), reps)
        pair.close()
    register_s: dict[str, float] = {}
    for label, transport, at_register in (
        ("tcp", "tcp", False),
        ("shm_export_at_pull", "shm", False),
        ("shm_export_at_register", "shm", True),
    ):
        target[:] = 0
        samples[label], registering = time_protocol(
            identity,
            num_blocks,
            source_layers,
            write_layer,
            transport,
            reps,
            shm_export_at_register=at_register,
        )
        register_s[label] = statistics.median(registering)
        if not np.array_equal(target, source):
            raise AssertionError(f"{label}: destination differs from source")
    gb_per_s = {label: num_bytes / statistics.median(s) / 1e9 for label, s in samples.items()}
    best_raw = max(gb_per_s["raw_socket_default"], gb_per_s["raw_socket_tuned"])
    return {
        "payload_bytes": num_bytes,
        "num_layers": NUM_LAYERS,
        "gb_per_s": gb_per_s,
        "ratio_tcp_vs_best_raw_socket": gb_per_s["tcp"] / best_raw,
        "ratio_shm_export_at_pull_vs_memcpy": gb_per_s["shm_export_at_pull"] / gb_per_s["memcpy"],
        "ratio_shm_export_at_register_vs_memcpy": (
            gb_per_s["shm_export_at_register"] / gb_per_s["memcpy"]
        ),
        "register_s_median": register_s,
        "runs": {label: summarize(num_bytes, s) for label, s in samples.items()},
    }


def bench_checksums(num_bytes: int, reps: int) -> dict[str, float]:
    data = np.random.default_rng(1).integers(0, 256, num_bytes, dtype=np.uint8)
    view = data.data
    functions: dict[str, Callable[[], object]] = {
        "zlib.crc32": lambda: zlib.crc32(view),
        "zlib.adler32": lambda: zlib.adler32(view),
        "kv_checksum (chunksum64-blake2b)": lambda: kv_checksum(view),
        "numpy uint64 sum (bandwidth bound)": lambda: data.view(np.uint64).sum(),
    }
    return {
        name: num_bytes / statistics.median(timed_runs(fn, reps)) / 1e9
        for name, fn in functions.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-mb", type=int, default=1024, help="largest payload (MB)")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions per point")
    parser.add_argument("--out", type=Path, default=RESULT_PATH)
    args = parser.parse_args()
    sizes_mb = [mb for mb in (1, 4, 16, 64, 256, 1024) if mb <= args.max_mb]
    load_before = os.getloadavg()
    points = []
    for size_mb in sizes_mb:
        reps = args.reps if size_mb < 1024 else max(3, args.reps // 2)
        point = bench_size(size_mb << 20, reps)
        points.append(point)
        rates = point["gb_per_s"]
        assert isinstance(rates, dict)
        print(f"{size_mb:5d} MB " + " ".join(f"{k} {v:.2f}" for k, v in rates.items()), flush=True)
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
