"""Framing of the KV transport: a fixed struct header, JSON control bodies, raw layer bytes.

Every frame starts with `HEADER` = magic, wire version, message type, reserved, body length.
Control bodies are UTF-8 JSON objects of at most `MAX_CONTROL_BYTES`; a LAYER body is the
layer's raw bytes followed by their 8-byte little-endian checksum, and its length must
equal what META announced. Nothing received is unpickled or evaluated.

Conversation (client = decode side, server = prefill side), one request per connection:

    S->C HELLO {wire_version, nonce}
    C->S PULL  {request_id, mac=HMAC(secret, "client"|nonce), client_nonce, identity, transport}
    S->C META  {mac=HMAC(secret, "server"|client_nonce|nonce), num_layers, bytes_per_layer,
                checksum} | ERROR {code, message}
    tcp: S->C LAYER x num_layers          shm: S->C SHM {name, layer_offsets, checksums}
    C->S ACK {request_id}   (only after every layer was verified and written)
    S->C DONE {released}    (sent after the source released its blocks)

The secret never crosses the wire; both sides prove they know it. The stream itself is
not encrypted or MACed: run it on a trusted network (or under TLS/WireGuard).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import struct
from enum import IntEnum
from typing import Any

from splitserve.transfer.errors import ConnectionLost, ProtocolError

MAGIC = b"SSKV"
# 2: the LAYER checksum moved from before the bytes to a trailer after them.
WIRE_VERSION = 2
HEADER = struct.Struct("!4sBBHQ")
CHECKSUM = struct.Struct("<Q")
MAX_CONTROL_BYTES = 64 * 1024
NONCE_BYTES = 32
# Large recv/send calls keep Python overhead negligible per byte.
IO_CHUNK_BYTES = 16 << 20
SOCKET_BUFFER_BYTES = 8 << 20


class MsgType(IntEnum):
    HELLO = 1
    PULL = 2
    META = 3
    LAYER = 4
    SHM = 5
    ACK = 6
    DONE = 7
    ERROR = 8


def tune_socket(sock: socket.socket) -> None:
    """No Nagle delay on small control frames; big kernel buffers for layer bytes."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)


def client_mac(secret: bytes, server_nonce: bytes) -> str:
    return hmac.new(secret, b"client|" + server_nonce, hashlib.sha256).hexdigest()


def server_mac(secret: bytes, client_nonce: bytes, server_nonce: bytes) -> str:
    message = b"server|" + client_nonce + b"|" + server_nonce
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def macs_equal(expected: str, received: object) -> bool:
    """Constant-time comparison (a non-string answer is simply wrong)."""
    return isinstance(received, str) and hmac.compare_digest(expected, received)


def send_control(sock: socket.socket, msg_type: MsgType, body: dict[str, Any]) -> None:
    payload = json.dumps(body, separators=(",", ":")).encode()
    if len(payload) > MAX_CONTROL_BYTES:
        raise ValueError(f"control message of {len(payload)} bytes exceeds {MAX_CONTROL_BYTES}")
    sock.sendall(HEADER.pack(MAGIC, WIRE_VERSION, msg_type, 0, len(payload)) + payload)


def layer_header(num_bytes: int) -> bytes:
    """Header of a LAYER frame: `num_bytes` of layer data follow, then the 8-byte checksum
    (a trailer, so the sender can checksum a layer while it is being sent)."""
    return HEADER.pack(MAGIC, WIRE_VERSION, MsgType.LAYER, 0, num_bytes + CHECKSUM.size)


def send_parts(sock: socket.socket, parts: list[bytes | memoryview]) -> None:
    """Send `parts` back to back, in one gather syscall when the kernel takes it all."""
    num_sent = sock.sendmsg(parts)
    for part in parts:
        part_bytes = memoryview(part).nbytes
        if num_sent >= part_bytes:
            num_sent -= part_bytes
            continue
        sock.sendall(memoryview(part)[num_sent:])
        num_sent = 0


def recv_into_exact(sock: socket.socket, view: memoryview) -> None:
    """Fill `view` completely; ConnectionLost if the peer closes first."""
    view = view.cast("B")
    num_received = 0
    while num_received < view.nbytes:
        chunk = view[num_received : num_received + IO_CHUNK_BYTES]
        got = sock.recv_into(chunk)
        if got == 0:
            raise ConnectionLost(
                f"peer closed after {num_received} of {view.nbytes} expected bytes"
            )
        num_received += got


def recv_header(sock: socket.socket) -> tuple[MsgType, int]:
    raw = bytearray(HEADER.size)
    recv_into_exact(sock, memoryview(raw))
    return parse_header(raw)


def parse_header(raw: bytes | bytearray | memoryview) -> tuple[MsgType, int]:
    magic, version, msg_type, _, body_bytes = HEADER.unpack(raw)
    if magic != MAGIC:
        raise ProtocolError(f"bad frame magic {bytes(magic)!r}")
    if version != WIRE_VERSION:
        raise ProtocolError(f"wire version {version} != {WIRE_VERSION}")
    try:
        return MsgType(msg_type), body_bytes
    except ValueError:
        raise ProtocolError(f"unknown message type {msg_type}") from None


def recv_control_body(sock: socket.socket, body_bytes: int) -> dict[str, Any]:
    if body_bytes > MAX_CONTROL_BYTES:
        raise ProtocolError(f"control message of {body_bytes} bytes exceeds {MAX_CONTROL_BYTES}")
    raw = bytearray(body_bytes)
    recv_into_exact(sock, memoryview(raw))
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"control message is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ProtocolError("control message is not a JSON object")
    return body


def recv_control(sock: socket.socket, expected: MsgType) -> dict[str, Any]:
    """Receive one control frame that must be of type `expected`."""
    msg_type, body_bytes = recv_header(sock)
    if msg_type != expected:
        raise ProtocolError(f"expected {expected.name}, got {msg_type.name}")
    return recv_control_body(sock, body_bytes)
