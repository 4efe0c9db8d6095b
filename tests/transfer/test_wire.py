"""Frame parsing bounds, and a misbehaving peer on either side of the conversation."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time

import pytest

from splitserve.transfer import AuthError, ProtocolError, pull_kv
from splitserve.transfer.wire import (
    HEADER,
    MAGIC,
    MAX_CONTROL_BYTES,
    WIRE_VERSION,
    MsgType,
    recv_control,
    send_control,
)
from tests.transfer.conftest import SECRET, Sink, make_identity, make_layers


def frame(
    msg_type: int,
    body: bytes,
    *,
    magic: bytes = MAGIC,
    version: int = WIRE_VERSION,
    length: int | None = None,
) -> bytes:
    return HEADER.pack(magic, version, msg_type, 0, len(body) if length is None else length) + body


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (frame(MsgType.HELLO, b"{}", magic=b"HTTP"), "magic"),
        (frame(MsgType.HELLO, b"{}", version=9), "wire version"),
        (frame(77, b"{}"), "unknown message type"),
        (frame(MsgType.HELLO, b"", length=MAX_CONTROL_BYTES + 1), "exceeds"),
        (frame(MsgType.HELLO, b"[1]"), "not a JSON object"),
        (frame(MsgType.HELLO, b"\xff\xfe"), "not valid JSON"),
        (frame(MsgType.META, b"{}"), "expected HELLO"),
    ],
)
def test_malformed_frames_are_protocol_errors(raw, message):
    left, right = socket.socketpair()
    with left, right:
        left.sendall(raw)
        with pytest.raises(ProtocolError, match=message):
            recv_control(right, MsgType.HELLO)


def test_control_roundtrip():
    left, right = socket.socketpair()
    with left, right:
        send_control(left, MsgType.ACK, {"request_id": "é"})
        assert recv_control(right, MsgType.ACK) == {"request_id": "é"}
        with pytest.raises(ValueError, match="exceeds"):
            send_control(left, MsgType.ACK, {"pad": "x" * MAX_CONTROL_BYTES})


def test_garbage_clients_do_not_hurt_the_server(make_server, releases):
    server = make_server(io_timeout_s=2.0)
    identity = make_identity()
    record = server.register(
        "g",
        layers=make_layers(identity, 1),
        block_ids=[0],
        num_tokens=1,
        expires_at=time.time() + 60,
    )
    host, port = server.address.rsplit(":", 1)
    payloads = [
        b"GET / HTTP/1.1\r\n\r\n",
        frame(MsgType.PULL, b"x" * 10, length=1 << 40),
        frame(MsgType.PULL, json.dumps({"mac": 1}).encode()),
        b"",
    ]
    for payload in payloads:
        with socket.create_connection((host, int(port))) as sock:
            sock.settimeout(5)
            try:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(65536):
                    pass
            except OSError:  # reset, broken pipe, not connected
                pass  # the server hung up on the garbage: that is the point
    assert releases.calls == []
    pull_kv(record, SECRET, identity, Sink(), timeout_s=10, transport="tcp")
    assert releases.calls == [("g", "ack")]


def test_client_refuses_a_source_that_does_not_know_the_secret(make_server):
    """An impostor source (answers HELLO, cannot MAC) gets no ACK and delivers nothing."""
    identity = make_identity()
    genuine = make_server()
    record = genuine.register(
        "i",
        layers=make_layers(identity, 1),
        block_ids=[0],
        num_tokens=1,
        expires_at=time.time() + 60,
    )
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[MsgType] = []

    def impostor() -> None:
        conn, _ = listener.accept()
        with conn:
            send_control(conn, MsgType.HELLO, {"nonce": "00" * 32})
            recv_control(conn, MsgType.PULL)
            send_control(
                conn,
                MsgType.META,
                {
                    "mac": "00" * 32,
                    "num_layers": 3,
                    "bytes_per_layer": record.bytes_per_layer,
                    "checksum": "chunksum64-blake2b",
                },
            )
            conn.settimeout(2)
            try:
                header = conn.recv(HEADER.size)
                if header:
                    seen.append(MsgType(HEADER.unpack(header)[2]))
            except OSError:
                pass

    thread = threading.Thread(target=impostor)
    thread.start()
    fake = dataclasses.replace(record, tcp_address=f"127.0.0.1:{listener.getsockname()[1]}")
    sink = Sink()
    with pytest.raises(AuthError, match="source does not know"):
        pull_kv(fake, SECRET, identity, sink, timeout_s=5, transport="tcp")
    thread.join()
    listener.close()
    assert sink.layers == {} and MsgType.ACK not in seen
