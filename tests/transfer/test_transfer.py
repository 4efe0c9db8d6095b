"""End-to-end KV pulls over loopback: bytes, verification, lifecycle, failure paths."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest

from splitserve.transfer import (
    AuthError,
    Busy,
    ChecksumMismatch,
    ConnectionLost,
    FaultInjection,
    HandshakeMismatch,
    NotFound,
    TransferError,
    TransferTimeout,
    pull_kv,
)
from tests.transfer.conftest import SECRET, Releases, Sink, make_identity, make_layers

IDENTITY = make_identity()
TRANSPORTS = ["tcp", "shm"]


def far_future() -> float:
    return time.time() + 60


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("num_blocks", [1, 3, 257])
def test_pull_delivers_identical_bytes_layer_by_layer(
    verify_mode, make_server, releases, transport, num_blocks
):
    server = make_server()
    layers = make_layers(IDENTITY, num_blocks, seed=num_blocks)
    record = server.register(
        "r1",
        layers=layers,
        block_ids=list(range(num_blocks)),
        num_tokens=num_blocks * 4,
        expires_at=far_future(),
    )
    sink = Sink()
    stats = pull_kv(record, SECRET, IDENTITY, sink, timeout_s=10, transport=transport)
    assert sink.order == [0, 1, 2]
    assert [sink.layers[i] for i in range(3)] == layers
    assert stats.transport == transport
    assert stats.num_bytes == sum(len(layer) for layer in layers)
    assert stats.ack_confirmed
    # The source released when the sink acked, before pull_kv returned.
    assert releases.calls == [("r1", "ack")]
    assert server.num_registered == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_lazy_read_layer_and_export_at_register(make_server, transport):
    layers = make_layers(IDENTITY, 5)
    reads: list[int] = []

    def read_layer(layer: int) -> bytes:
        reads.append(layer)
        return layers[layer]

    server = make_server(shm_export_at_register=True)
    record = server.register(
        "lazy",
        read_layer=read_layer,
        block_ids=[7, 1, 9, 2, 4],
        num_tokens=17,
        expires_at=far_future(),
    )
    sink = Sink()
    pull_kv(record, SECRET, IDENTITY, sink, timeout_s=10, transport=transport)
    assert [sink.layers[i] for i in range(3)] == layers
    assert sorted(set(reads)) == [0, 1, 2]


def test_auto_transport_picks_shm_on_the_same_host(make_server):
    server = make_server()
    record = server.register(
        "a",
        layers=make_layers(IDENTITY, 2),
        block_ids=[0, 1],
        num_tokens=5,
        expires_at=far_future(),
    )
    assert pull_kv(record, SECRET, IDENTITY, Sink(), timeout_s=10).transport == "shm"
    tcp_only = make_server(shm_enabled=False)
    record = tcp_only.register(
        "b",
        layers=make_layers(IDENTITY, 2),
        block_ids=[0, 1],
        num_tokens=5,
        expires_at=far_future(),
    )
    assert record.shm_host_id is None
    assert pull_kv(record, SECRET, IDENTITY, Sink(), timeout_s=10).transport == "tcp"


def test_record_survives_json_between_register_and_pull(make_server):
    from splitserve.transfer import HandoffRecord

    server = make_server()
    layers = make_layers(IDENTITY, 2)
    record = server.register(
        "j", layers=layers, block_ids=[3, 4], num_tokens=8, expires_at=far_future()
    )
    decoded = HandoffRecord.from_json(record.to_json())
    assert decoded == record
    sink = Sink()
    pull_kv(decoded, SECRET, IDENTITY, sink, timeout_s=10, transport="tcp")
    assert [sink.layers[i] for i in range(3)] == layers


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_identity_mismatch_is_refused_naming_fields_and_writes_nothing(
    make_server, releases, transport
):
    server = make_server()
    record = server.register(
        "m",
        layers=make_layers(IDENTITY, 2),
        block_ids=[0, 1],
        num_tokens=5,
        expires_at=far_future(),
    )
    other = make_identity(model_hash="c3d4", dtype="bfloat16")
    sink = Sink()
    with pytest.raises(HandshakeMismatch, match="model_hash c3d4 != a1b2c3") as info:
        pull_kv(record, SECRET, other, sink, timeout_s=10, transport=transport)
    assert "dtype bfloat16 != float16" in str(info.value)
    assert sink.layers == {}
    assert releases.calls == [] and server.num_registered == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_server_refuses_a_sink_whose_identity_differs_even_if_the_record_fits(
    make_server, transport
):
    """The source's own check: a record edited to fit the sink does not get KV moved."""
    server = make_server()
    record = server.register(
        "m",
        layers=make_layers(IDENTITY, 2),
        block_ids=[0, 1],
        num_tokens=5,
        expires_at=far_future(),
    )
    other = make_identity(num_kv_heads=4, block_size=2)
    forged = dataclasses.replace(record, block_shape=other.block_shape)
    sink = Sink()
    with pytest.raises(HandshakeMismatch) as info:
        pull_kv(forged, SECRET, other, sink, timeout_s=10, transport=transport)
    assert "block_size 2 != 4" in str(info.value)
    assert "num_kv_heads 4 != 2" in str(info.value)
    assert sink.layers == {}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_wrong_secret_is_refused_and_nothing_released(make_server, releases, transport):
    server = make_server()
    record = server.register(
        "s",
        layers=make_layers(IDENTITY, 2),
        block_ids=[0, 1],
        num_tokens=5,
        expires_at=far_future(),
    )
    sink = Sink()
    with pytest.raises(AuthError):
        pull_kv(record, b"not-the-secret", IDENTITY, sink, timeout_s=10, transport=transport)
    assert sink.layers == {} and releases.calls == []
    # The right secret still works afterwards.
    pull_kv(record, SECRET, IDENTITY, sink, timeout_s=10, transport=transport)
    assert releases.calls == [("s", "ack")]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_corrupted_transfer_is_detected_and_wrong_bytes_never_delivered(
    verify_mode, make_server, releases, transport
):
    server = make_server(faults=FaultInjection(corrupt_every_transfer=True))
    layers = make_layers(IDENTITY, 3)
    record = server.register(
        "c", layers=layers, block_ids=[0, 1, 2], num_tokens=9, expires_at=far_future()
    )
    sink = Sink()
    with pytest.raises(ChecksumMismatch, match="layer 0"):
        pull_kv(record, SECRET, IDENTITY, sink, timeout_s=10, transport=transport)
    assert sink.layers == {}
    assert releases.calls == [], "a failed transfer must not release the source's blocks"


def test_corruption_can_be_switched_on_by_environment(make_server, monkeypatch):
    monkeypatch.setenv("SPLITSERVE_TEST_CORRUPT_KV", "1")
    server = make_server()
    record = server.register(
        "e", layers=make_layers(IDENTITY, 1), block_ids=[0], num_tokens=1, expires_at=far_future()
    )
    with pytest.raises(ChecksumMismatch):
        pull_kv(record, SECRET, IDENTITY, Sink(), timeout_s=10, transport="tcp")


def test_truncated_transfer_raises_and_a_retry_succeeds(verify_mode, make_server, releases):
    layers = make_layers(IDENTITY, 4)
    broken = make_server(faults=FaultInjection(close_after_bytes=len(layers[0]) + 100))
    record = broken.register(
        "t", layers=layers, block_ids=[0, 1, 2, 3], num_tokens=16, expires_at=far_future()
    )
    sink = Sink()
    with pytest.raises(ConnectionLost):
        pull_kv(record, SECRET, IDENTITY, sink, timeout_s=10, transport="tcp")
    assert len(sink.layers) < 3  # whatever was written before the cut is correct
    assert all(sink.layers[i] == layers[i] for i in sink.layers)
    assert releases.calls == [] and broken.num_registered == 1
    # The request stays held, so a second pull (router retry) can still get it.
    healthy = make_server()
    record = healthy.register(
        "t", layers=layers, block_ids=[0, 1, 2, 3], num_tokens=16, expires_at=far_future()
    )
    pull_kv(record, SECRET, IDENTITY, Sink(), timeout_s=10, transport="tcp")


def test_stalled_source_times_out_within_the_bound(make_server):
    server = make_server(faults=FaultInjection(stall_s=1.5))
    record = server.register(
        "slow",
        layers=make_layers(IDENTITY, 1),
        block_ids=[0],
        num_tokens=1,
        expires_at=far_future(),
    )
    started = time.monotonic()
    with pytest.raises(TransferTimeout):
        pull_kv(record, SECRET, IDENTITY, Sink(), timeout_s=0.3, transport="tcp")
    assert time.monotonic() - started < 1.0


def test_unknown_request_is_not_found(make_server):
    server = make_server()
    record = server.register(
        "known",
        layers=make_layers(IDENTITY, 1),
        block_ids=[0],
        num_tokens=1,
        expires_at=far_future(),
    )
    unknown = dataclasses.replace(record, request_id="unknown")
    with pytest.raises(NotFound, match="unknown"):
        pull_kv(unknown, SECRET, IDENTITY, Sink(), timeout_s=10)


def test_expiry_releases_once_and_later_pulls_are_not_found(make_server, releases):
    server = make_server()
    record = server.register(
        "x",
        layers=make_layers(IDENTITY, 1),
        block_ids=[0],
        num_tokens=1,
        expires_at=time.time() + 0.2,
    )
    releases.wait_for(1)
    assert releases.calls == [("x", "expired")]
    with pytest.raises(NotFound):
        pull_kv(record, SECRET, IDENTITY, Sink(), timeout_s=10)
    time.sleep(0.1)
    assert releases.calls == [("x", "expired")]


def test_pull_of_a_past_lease_is_expired_even_before_the_reaper_runs(make_server, releases):
    server = make_server()
    record = server.register(
        "y",
        layers=make_layers(IDENTITY, 1),
        block_ids=[0],
        num_tokens=1,
        expires_at=time.time() - 1,
    )
    with pytest.raises(NotFound):  # Expired, or NotFound once the reaper released it
        pull_kv(record, SECRET, IDENTITY, Sink(), timeout_s=10)
    releases.wait_for(1)
    assert releases.calls == [("y", "expired")]


def test_unregister_releases_exactly_once(make_server, releases):
    server = make_server()
    server.register(
        "u", layers=make_layers(IDENTITY, 1), block_ids=[0], num_tokens=1, expires_at=far_future()
    )
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(server.unregister("u"))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert releases.calls == [("u", "unregistered")]
    assert server.num_registered == 0
    assert server.unregister("u") is False


def test_unregister_during_a_pull_fails_it_and_releases_once_after(make_server, releases):
    server = make_server(faults=FaultInjection(stall_s=0.5))
    record = server.register(
        "v", layers=make_layers(IDENTITY, 1), block_ids=[0], num_tokens=1, expires_at=far_future()
    )
    errors: list[Exception] = []

    def pull() -> None:
        try:
            pull_kv(record, SECRET, IDENTITY, Sink(), timeout_s=10, transport="tcp")
        except TransferError as exc:
            errors.append(exc)

    thread = threading.Thread(target=pull)
    thread.start()
    time.sleep(0.2)
    assert server.unregister("v") is True
    assert releases.calls == [], "blocks must stay pinned while the source reads them"
    thread.join()
    assert len(errors) == 1
    releases.wait_for(1)
    assert releases.calls == [("v", "unregistered")]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_concurrent_pulls_of_one_request_release_it_once(make_server, releases, transport):
    server = make_server()
    layers = make_layers(IDENTITY, 64)
    record = server.register(
        "d", layers=layers, block_ids=list(range(64)), num_tokens=250, expires_at=far_future()
    )
    outcomes: list[object] = []

    def pull() -> None:
        try:
            outcomes.append(
                pull_kv(record, SECRET, IDENTITY, Sink(), timeout_s=10, transport=transport)
            )
        except (Busy, NotFound) as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=pull) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 4
    assert sum(not isinstance(o, Exception) for o in outcomes) == 1
    assert releases.calls == [("d", "ack")]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_concurrent_pulls_of_different_requests(make_server, releases, transport):
    server = make_server()
    expected = {}
    records = []
    for index in range(6):
        layers = make_layers(IDENTITY, index + 1, seed=index)
        expected[f"q{index}"] = layers
        records.append(
            server.register(
                f"q{index}",
                layers=layers,
                block_ids=list(range(index + 1)),
                num_tokens=index + 1,
                expires_at=far_future(),
            )
        )
    got: dict[str, list[bytes]] = {}

    def pull(record) -> None:
        sink = Sink()
        pull_kv(record, SECRET, IDENTITY, sink, timeout_s=10, transport=transport)
        got[record.request_id] = [sink.layers[i] for i in range(3)]

    threads = [threading.Thread(target=pull, args=(r,)) for r in records]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert got == expected
    assert sorted(releases.calls) == sorted((rid, "ack") for rid in expected)


def test_close_releases_held_requests_and_joins_threads(make_server, releases):
    server = make_server(shm_export_at_register=True)
    for name in ("a", "b"):
        server.register(
            name,
            layers=make_layers(IDENTITY, 1),
            block_ids=[0],
            num_tokens=1,
            expires_at=far_future(),
        )
    server.close()
    assert sorted(releases.calls) == [("a", "shutdown"), ("b", "shutdown")]
    server.close()  # idempotent
    assert len(releases.calls) == 2


def test_close_during_a_pull_fails_the_pull(make_server, releases):
    server = make_server(faults=FaultInjection(stall_s=0.5))
    record = server.register(
        "z", layers=make_layers(IDENTITY, 1), block_ids=[0], num_tokens=1, expires_at=far_future()
    )
    errors: list[Exception] = []

    def pull() -> None:
        try:
            pull_kv(record, SECRET, IDENTITY, Sink(), timeout_s=10, transport="tcp")
        except TransferError as exc:
            errors.append(exc)

    thread = threading.Thread(target=pull)
    thread.start()
    time.sleep(0.2)
    server.close()
    thread.join()
    assert len(errors) == 1
    assert releases.calls == [("z", "shutdown")]


def test_connection_refused_is_a_transfer_error(make_server):
    server = make_server()
    record = server.register(
        "gone",
        layers=make_layers(IDENTITY, 1),
        block_ids=[0],
        num_tokens=1,
        expires_at=far_future(),
    )
    server.close()
    with pytest.raises(ConnectionLost):
        pull_kv(record, SECRET, IDENTITY, Sink(), timeout_s=2, transport="tcp")


def test_register_rejects_bad_buffers(make_server):
    server = make_server()
    layers = make_layers(IDENTITY, 2)
    with pytest.raises(ValueError, match="layers"):
        server.register(
            "r", layers=layers[:2], block_ids=[0, 1], num_tokens=2, expires_at=far_future()
        )
    with pytest.raises(ValueError, match="layer 1 holds"):
        server.register(
            "r",
            layers=[layers[0], layers[1][:-2], layers[2]],
            block_ids=[0, 1],
            num_tokens=2,
            expires_at=far_future(),
        )
    with pytest.raises(ValueError, match="block_ids is empty"):
        server.register(
            "r", layers=[b"", b"", b""], block_ids=[], num_tokens=1, expires_at=far_future()
        )
    with pytest.raises(ValueError, match="exactly one"):
        server.register("r", block_ids=[0], num_tokens=1, expires_at=far_future())
    server.register("r", layers=layers, block_ids=[0, 1], num_tokens=2, expires_at=far_future())
    with pytest.raises(ValueError, match="already registered"):
        server.register("r", layers=layers, block_ids=[0, 1], num_tokens=2, expires_at=far_future())


def test_short_read_layer_fails_the_pull_not_the_server(make_server, releases):
    server = make_server()
    record = server.register(
        "bad", read_layer=lambda layer: b"x", block_ids=[0], num_tokens=1, expires_at=far_future()
    )
    with pytest.raises(TransferError):
        pull_kv(record, SECRET, IDENTITY, Sink(), timeout_s=5, transport="tcp")
    assert releases.calls == []
    good = server.register(
        "good",
        layers=make_layers(IDENTITY, 1),
        block_ids=[0],
        num_tokens=1,
        expires_at=far_future(),
    )
    pull_kv(good, SECRET, IDENTITY, Sink(), timeout_s=5, transport="tcp")


def test_releases_fixture_is_typed() -> None:
    assert Releases().calls == []


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_numpy_layers_in_kv_cache_shape_roundtrip(verify_mode, make_server, transport):
    """Layers as the engine holds them: [2, num_blocks, block_size, heads, head_dim] arrays."""
    rng = np.random.default_rng(3)
    shape = (2, 5, IDENTITY.block_size, IDENTITY.num_kv_heads, IDENTITY.head_dim)
    arrays = [rng.standard_normal(shape).astype(np.float16) for _ in range(3)]
    server = make_server()
    record = server.register(
        "np", layers=arrays, block_ids=range(5), num_tokens=20, expires_at=far_future()
    )
    received: list[np.ndarray] = []
    pull_kv(
        record,
        SECRET,
        IDENTITY,
        lambda layer, view: received.append(np.frombuffer(view, np.float16).reshape(shape).copy()),
        timeout_s=10,
        transport=transport,
    )
    for got, sent in zip(received, arrays, strict=True):
        np.testing.assert_array_equal(got, sent)


def test_non_contiguous_layers_are_refused(make_server):
    server = make_server()
    wide = np.zeros((2 * 3, IDENTITY.bytes_per_block), np.uint8)
    with pytest.raises(ValueError, match="C-contiguous"):
        server.register(
            "nc", layers=[wide[::2]] * 3, block_ids=[0, 1, 2], num_tokens=3, expires_at=far_future()
        )


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_failing_write_layer_propagates_and_the_request_stays_held(
    verify_mode, make_server, releases, transport
):
    server = make_server(shm_export_at_register=True)
    record = server.register(
        "w",
        layers=make_layers(IDENTITY, 2),
        block_ids=[0, 1],
        num_tokens=5,
        expires_at=far_future(),
    )

    def broken_sink(layer: int, view: memoryview) -> None:
        raise RuntimeError("engine import failed")

    with pytest.raises(RuntimeError, match="engine import failed"):
        pull_kv(record, SECRET, IDENTITY, broken_sink, timeout_s=10, transport=transport)
    assert releases.calls == [] and server.num_registered == 1
    assert server.unregister("w")
    releases.wait_for(1)
    assert releases.calls == [("w", "unregistered")]
