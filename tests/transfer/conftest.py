from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from splitserve.transfer import KVServer, ModelIdentity
from splitserve.transfer.shm import SHM_DIR, segment_prefix

SECRET = b"cluster-secret-for-tests"


def make_identity(**overrides: object) -> ModelIdentity:
    fields: dict[str, object] = dict(
        model_hash="a1b2c3",
        dtype="float16",
        block_size=4,
        num_layers=3,
        num_kv_heads=2,
        head_dim=8,
    )
    fields.update(overrides)
    return ModelIdentity(**fields)  # type: ignore[arg-type]


def make_layers(identity: ModelIdentity, num_blocks: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    num_bytes = num_blocks * identity.bytes_per_block
    return [
        rng.integers(0, 256, num_bytes, dtype=np.uint8).tobytes()
        for _ in range(identity.num_layers)
    ]


class Sink:
    """Records what pull_kv hands over, copying each view (as the engine's import does)."""

    def __init__(self) -> None:
        self.layers: dict[int, bytes] = {}
        self.order: list[int] = []

    def __call__(self, layer: int, view: memoryview) -> None:
        self.order.append(layer)
        self.layers[layer] = bytes(view)


class Releases:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, request_id: str, reason: str) -> None:
        with self._lock:
            self.calls.append((request_id, reason))

    def wait_for(self, count: int, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.calls) < count and time.monotonic() < deadline:
            time.sleep(0.01)


def _shm_segments() -> set[str]:
    if not os.path.isdir(SHM_DIR):
        return set()
    # Only this process's segments: other test processes may be transferring right now.
    return {name for name in os.listdir(SHM_DIR) if name.startswith(segment_prefix())}


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Every test must leave no shared-memory segment and no transfer thread behind."""
    segments_before = _shm_segments()
    yield
    assert _shm_segments() - segments_before == set(), "shared-memory segment leaked"
    leftover = [t.name for t in threading.enumerate() if t.name.startswith("kv-")]
    assert leftover == [], f"transfer threads left running: {leftover}"


@pytest.fixture
def releases() -> Releases:
    return Releases()


@pytest.fixture
def make_server(releases: Releases) -> Iterator[Callable[..., KVServer]]:
    servers: list[KVServer] = []

    def make(**kwargs: object) -> KVServer:
        kwargs.setdefault("on_release", releases)
        kwargs.setdefault("worker_id", "prefill-0")
        identity = kwargs.pop("identity", make_identity())
        secret = kwargs.pop("secret", SECRET)
        server = KVServer(identity, secret, **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture(params=["inline", "pipelined"])
def verify_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with layer checksums computed inline and on helper threads (both ends)."""
    from splitserve.transfer import checksum

    threshold = 0 if request.param == "pipelined" else 1 << 62
    monkeypatch.setattr(checksum, "PARALLEL_CHECKSUM_MIN_BYTES", threshold)
    return str(request.param)
