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
from pathlib import Path

import numpy as np

from splitserve.transfer import KVServer, ModelIdentity, kv_checksum, pull_kv
from splitserve.transfer.wire import tune_socket

NUM_LAYERS = 32
SECRET = b"bench-secret"
RESULT_PATH = Path(__file__).parent / "results" / "kv_transfer.json"


def median_s(run: Callable[[], None], reps: int) -> tuple[float, list[float]]:
    run()  # warm-up: page faults, connection setup paths
    samples = []
    for _ in range(reps):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples), samples


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
        thread = threading.Thread(target=self.sender.sendall, args=(memoryview(source),))
        thread.start()
        view = memoryview(target)
        num_received = 0
        while num_received < target.nbytes:
            num_received += self.receiver.recv_into(view[num_received : num_received + (16 << 20)])
        thread.join()

    def close(self) -> None:
        self.sender.close()
        self.receiver.close()


def identity_for(num_bytes: int) -> tuple[ModelIdentity, int]:
    """A model identity whose per-layer KV of `num_blocks` blocks sums to num_bytes."""
    identity = ModelIdentity("bench", "float16", block_size=16, num_layers=NUM_LAYERS,
                             num_kv_heads=1, head_dim=32)
    num_blocks = num_bytes // (NUM_LAYERS * identity.bytes_per_block)
    return identity, num_blocks


def bench_size(num_bytes: int, reps: int) -> dict[str, object]:
    identity, num_blocks = identity_for(num_bytes)
    layer_bytes = num_blocks * identity.bytes_per_block
    num_bytes = layer_bytes * NUM_LAYERS
    source = np.random.default_rng(0).integers(0, 256, num_bytes, dtype=np.uint8)
    target = np.zeros_like(source)
    source_layers = [source[i * layer_bytes : (i + 1) * layer_bytes] for i in range(NUM_LAYERS)]

    def write_layer(layer: int, view: memoryview) -> None:
        np.copyto(target[layer * layer_bytes : (layer + 1) * layer_bytes],
                  np.frombuffer(view, dtype=np.uint8))

    results: dict[str, object] = {"payload_bytes": num_bytes, "num_layers": NUM_LAYERS}
    timings: dict[str, tuple[float, list[float]]] = {}
    timings["memcpy"] = median_s(lambda: np.copyto(target, source), reps)
    for tuned in (False, True):
        pair = RawSocketPair(tuned)
        timings[f"raw_socket_{'tuned' if tuned else 'default'}"] = median_s(
            lambda p=pair: p.transfer(source, target), reps)
        pair.close()
    counter = iter(range(1 << 30))
    for label, kwargs, transport in (
        ("tcp", {}, "tcp"),
        ("shm_export_at_pull", {}, "shm"),
        ("shm_export_at_register", {"shm_export_at_register": True}, "shm"),
    ):
        with KVServer(identity, SECRET, **kwargs) as server:
            records = []

            def register() -> None:
                records.append(server.register(
                    f"r{next(counter)}", layers=source_layers, block_ids=range(num_blocks),
                    num_tokens=num_blocks * 16, expires_at=time.time() + 600))

            def pull(transport: str = transport) -> None:
                register_started = time.perf_counter()
                register()
                register_s.append(time.perf_counter() - register_started)
                started = time.perf_counter()
                pull_kv(records.pop(), SECRET, identity, write_layer, timeout_s=600,
                        transport=transport)
                pull_s.append(time.perf_counter() - started)

            register_s: list[float] = []
            pull_s: list[float] = []
            median_s(pull, reps)  # measured inside pull() so register time is excluded
            timings[label] = (statistics.median(pull_s[1:]), pull_s[1:])
            results[f"{label}_register_s_median"] = statistics.median(register_s[1:])
        if not np.array_equal(target, source):
            raise AssertionError(f"{label}: destination differs from source")
        target[:] = 0
    for label, (median, samples) in timings.items():
        results[label] = {
            "gb_per_s": num_bytes / median / 1e9,
            "median_s": median,
            "samples_s": samples,
            "spread": (max(samples) - min(samples)) / median,
        }
    best_raw = max(results["raw_socket_default"]["gb_per_s"],  # type: ignore[index]
                   results["raw_socket_tuned"]["gb_per_s"])  # type: ignore[index]
    memcpy = results["memcpy"]["gb_per_s"]  # type: ignore[index]
    results["ratio_tcp_vs_best_raw_socket"] = results["tcp"]["gb_per_s"] / best_raw  # type: ignore[index]
    for label in ("shm_export_at_pull", "shm_export_at_register"):
        results[f"ratio_{label}_vs_memcpy"] = results[label]["gb_per_s"] / memcpy  # type: ignore[index]
    return results


def bench_checksums(num_bytes: int, reps: int) -> dict[str, float]:
    data = np.random.default_rng(1).integers(0, 256, num_bytes, dtype=np.uint8)
    view = memoryview(data)
    functions: dict[str, Callable[[], object]] = {
        "zlib.crc32": lambda: zlib.crc32(view),
        "zlib.adler32": lambda: zlib.adler32(view),
        "kv_checksum (chunksum64-blake2b)": lambda: kv_checksum(view),
        "numpy uint64 sum (bandwidth bound)": lambda: data.view(np.uint64).sum(),
    }
    return {name: num_bytes / median_s(fn, reps)[0] / 1e9 for name, fn in functions.items()}


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
        print(f"{size_mb:5d} MB  memcpy {point['memcpy']['gb_per_s']:.2f}  "  # type: ignore[index]
              f"raw {point['raw_socket_tuned']['gb_per_s']:.2f}/"  # type: ignore[index]
              f"{point['raw_socket_default']['gb_per_s']:.2f}  "  # type: ignore[index]
              f"tcp {point['tcp']['gb_per_s']:.2f}  "  # type: ignore[index]
              f"shm {point['shm_export_at_pull']['gb_per_s']:.2f}/"  # type: ignore[index]
              f"{point['shm_export_at_register']['gb_per_s']:.2f} GB/s", flush=True)  # type: ignore[index]
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
