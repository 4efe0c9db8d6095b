"""The source's side of one pull: the conversation described in `wire.py`."""

from __future__ import annotations

import secrets
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from splitserve.thread_names import named_initializer
from splitserve.transfer import checksum as checksum_module
from splitserve.transfer.checksum import CHECKSUM_NAME, kv_checksum
from splitserve.transfer.errors import AuthError, HandshakeMismatch, ProtocolError, TransferError
from splitserve.transfer.faults import FaultInjection
from splitserve.transfer.handshake import HANDSHAKE_REFUSED, ModelIdentity, identity_mismatches
from splitserve.transfer.registry import Entry, Registry
from splitserve.transfer.shm import ShmExport
from splitserve.transfer.wire import (
    CHECKSUM,
    NONCE_BYTES,
    MsgType,
    client_mac,
    layer_header,
    macs_equal,
    recv_control,
    send_control,
    send_parts,
    server_mac,
)


@dataclass(frozen=True)
class SessionContext:
    """What every connection of one KVServer shares."""

    identity: ModelIdentity
    secret: bytes
    registry: Registry
    faults: FaultInjection
    shm_offered: bool
    stop: threading.Event


def serve_pull(conn: socket.socket, ctx: SessionContext) -> None:
    """One connection, one request: HELLO, authenticate, handshake, move KV, await ACK."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    send_control(conn, MsgType.HELLO, {"nonce": nonce.hex()})
    pull = recv_control(conn, MsgType.PULL)
    try:
        if not macs_equal(client_mac(ctx.secret, nonce), pull.get("mac")):
            raise AuthError("client does not know the cluster secret")
        client_nonce = bytes.fromhex(_field(pull, "client_nonce", str))
        remote = ModelIdentity.from_dict(pull.get("identity"))
        mismatches = identity_mismatches(remote, ctx.identity)
        if mismatches:
            raise HandshakeMismatch(HANDSHAKE_REFUSED + "; ".join(mismatches))
        transport = _field(pull, "transport", str)
        if transport not in ("tcp", "shm") or (transport == "shm" and not ctx.shm_offered):
            raise ProtocolError(f"transport {transport!r} is not offered")
        entry = ctx.registry.checkout(_field(pull, "request_id", str))
    except (TransferError, ValueError) as exc:
        code = exc.code if isinstance(exc, TransferError) else "protocol"
        send_control(conn, MsgType.ERROR, {"code": code, "message": str(exc)})
        return
    acked = False
    try:
        send_control(
            conn,
            MsgType.META,
            {
                "mac": server_mac(ctx.secret, client_nonce, nonce),
                "num_layers": entry.num_layers,
                "bytes_per_layer": entry.bytes_per_layer,
                "checksum": CHECKSUM_NAME,
            },
        )
        if transport == "tcp":
            _send_layers(conn, entry, ctx)
        else:
            _offer_shm(conn, entry, ctx)
        ack = recv_control(conn, MsgType.ACK)
        acked = ack.get("request_id") == entry.request_id
    finally:
        detached = ctx.registry.checkin(entry, acked=acked)
    try:
        if acked:
            send_control(conn, MsgType.DONE, {"released": True})
    finally:
        if detached is not None:
            detached.unlink()


def _send_layers(conn: socket.socket, entry: Entry, ctx: SessionContext) -> None:
    """Stream layer after layer; a large layer is checksummed on a helper thread while
    its bytes are being sent (both only read it), so the checksum costs no send time."""
    if ctx.faults.stall_s:
        ctx.stop.wait(ctx.faults.stall_s)
    parallel = entry.bytes_per_layer >= checksum_module.PARALLEL_CHECKSUM_MIN_BYTES
    with ThreadPoolExecutor(1, thread_name_prefix="kv-checksum",
                            initializer=named_initializer("kv-checksum")) as pool:
        num_sent_bytes = 0
        for layer in range(entry.num_layers):
            if entry.pending_reason is not None or ctx.stop.is_set():
                raise TransferError("request released during the transfer")
            data = entry.read_layer(layer)
            checksum = pool.submit(kv_checksum, data) if parallel else None
            checksum_value = kv_checksum(data) if checksum is None else None
            sent = _corrupted(data) if ctx.faults.corrupt_every_transfer else data
            limit = ctx.faults.close_after_bytes
            if limit is not None and num_sent_bytes + sent.nbytes > limit:
                send_parts(conn, [layer_header(sent.nbytes), sent[: limit - num_sent_bytes]])
                raise TransferError("fault injection: closing mid-transfer")
            num_sent_bytes += sent.nbytes
            if checksum is None:
                assert checksum_value is not None
                send_parts(conn, [layer_header(sent.nbytes), sent, CHECKSUM.pack(checksum_value)])
            else:
                send_parts(conn, [layer_header(sent.nbytes), sent])
                conn.sendall(CHECKSUM.pack(checksum.result()))


def _corrupted(data: memoryview) -> memoryview:
    """A copy of `data` with one byte flipped (the source's own buffer stays intact)."""
    corrupted = bytearray(data)
    if corrupted:
        corrupted[len(corrupted) // 2] ^= 0xFF
    return memoryview(corrupted)


def _offer_shm(conn: socket.socket, entry: Entry, ctx: SessionContext) -> None:
    if entry.shm is None:
        entry.shm = ShmExport(entry.num_layers, entry.bytes_per_layer, entry.read_layer)
    if ctx.faults.corrupt_every_transfer and not entry.shm_corrupted:
        entry.shm.flip_byte(0)
        entry.shm_corrupted = True
    send_control(
        conn,
        MsgType.SHM,
        {
            "name": entry.shm.name,
            "layer_offsets": entry.shm.layer_offsets,
            "checksums": entry.shm.checksums,
        },
    )


def _field(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if not isinstance(value, kind):
        raise ProtocolError(f"field {name!r} missing or not a {kind.__name__}")
    return value
