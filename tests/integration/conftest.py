"""Real clusters (router + worker processes on loopback) for the integration tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from splitserve.cluster.launcher import Cluster, ClusterSpec, free_port
from tests.helpers.checkpoints import make_model_dir

# Small pools so the tests also exercise admission limits; float32 for exact parity.
WORKER_ARGS = ("--dtype=float32", "--num-blocks=256", "--max-num-batched-tokens=128")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir("llama", tmp_path_factory.mktemp("model"),
                          max_position_embeddings=4096)


def start_cluster(model: Path, *, prefill: int = 1, decode: int = 1, mixed: int = 0,
                  transport: str = "tcp", extra_worker_args: tuple[str, ...] = ()) -> Cluster:
    spec = ClusterSpec(
        model_dir=str(model), num_prefill=prefill, num_decode=decode, num_mixed=mixed,
        router_port=free_port(), transport=transport,
        worker_args=WORKER_ARGS + extra_worker_args, ready_timeout_s=120.0)
    cluster = Cluster(spec)
    cluster.start()
    return cluster


@pytest.fixture(scope="module")
def cluster_1p1d(model_dir: Path) -> Iterator[Cluster]:
    cluster = start_cluster(model_dir)
    yield cluster
    cluster.stop()


def worker_loads(cluster: Cluster) -> dict[str, dict[str, int]]:
    headers = {"X-Splitserve-Secret": cluster.secret}
    return {w.name: httpx.get(f"{w.url}/internal/load", headers=headers, timeout=5).json()
            for w in cluster.workers()}


def wait_blocks_freed(cluster: Cluster, timeout_s: float) -> dict[str, dict[str, int]]:
    """Poll until no worker holds KV blocks (beyond its prefix cache); return last loads."""
    deadline = time.monotonic() + timeout_s
    while True:
        loads = worker_loads(cluster)
        if all(load["num_used_blocks"] == 0 for load in loads.values()):
            return loads
        if time.monotonic() > deadline:
            return loads
        time.sleep(0.05)
