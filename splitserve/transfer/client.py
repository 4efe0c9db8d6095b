"""pull_kv: the decode worker's end of the KV handoff (blocking; run it in a thread)."""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from splitserve.thread_names import named_initializer
from splitserve.transfer import checksum as checksum_module
from splitserve.transfer.checksum import CHECKSUM_NAME, kv_checksum
from splitserve.transfer.errors import (
    AuthError,
    ChecksumMismatch,
    ConnectionLost,
    HandshakeMismatch,
    ProtocolError,
    TransferError,
    TransferTimeout,
    error_from_code,
)
from splitserve.transfer.handshake import HANDSHAKE_REFUSED, ModelIdentity
from splitserve.transfer.record import HandoffRecord, parse_address
from splitserve.transfer.shm import local_host_id, mapped_segment
from splitserve.transfer.wire import (
    CHECKSUM,
    HEADER,
    NONCE_BYTES,
    MsgType,
    client_mac,
    macs_equal,
    parse_header,
    recv_control_body,
    recv_header,
    recv_into_exact,
    send_control,
    server_mac,
    tune_socket,
)

WriteLayer = Callable[[int, memoryview], None]


@dataclass(frozen=True)
class TransferStats:
    request_id: str
    transport: str
    num_layers: int
    num_bytes: int
    elapsed_s: float
    ack_confirmed: bool

    @property
    def gb_per_s(self) -> float:
        return self.num_bytes / self.elapsed_s / 1e9 if self.elapsed_s > 0 else 0.0


def pull_kv(
    record: HandoffRecord,
    secret: bytes | str,
    identity: ModelIdentity,
    write_layer: WriteLayer,
    timeout_s: float = 30.0,
    transport: str = "auto",
) -> TransferStats:
    """Pull one request's KV from its source, verify it, hand it over, then ack.

    `write_layer(layer, view)` is called on this thread once per layer, in order, only
    with bytes whose checksum matched the sender's; `view` is read-only and valid only
    during the call (copy it into the reserved blocks). On success the source has released its blocks when this returns
    (`ack_confirmed`). Any failure raises a TransferError subclass and sends no ack; layers
    written before the failure must be discarded by the caller (nothing is VERIFIED).
    `transport`: "tcp", "shm" (same host only) or "auto" (shm when the source is local).
    """
    mismatches = record.mismatches(identity)
    if mismatches:
        raise HandshakeMismatch(HANDSHAKE_REFUSED + "; ".join(mismatches))
    if transport == "auto":
        same_host = record.shm_host_id is not None and record.shm_host_id == local_host_id()
        transport = "shm" if same_host else "tcp"
    if transport not in ("tcp", "shm"):
        raise ValueError(f"transport must be tcp, shm or auto, got {transport!r}")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    secret_bytes = secret.encode() if isinstance(secret, str) else bytes(secret)
    started = time.monotonic()
    deadline = started + timeout_s
    try:
        sock = socket.create_connection(parse_address(record.tcp_address), timeout=timeout_s)
    except TimeoutError:
        raise TransferTimeout(f"connecting to {record.tcp_address} timed out") from None
    except OSError as exc:
        raise ConnectionLost(f"cannot connect to {record.tcp_address}: {exc}") from None
    try:
        with sock:
            tune_socket(sock)
            session = _Session(sock, record, deadline)
            session.handshake(secret_bytes, identity, transport)
            with ExitStack() as mappings:
                if transport == "tcp":
                    session.receive_layers(write_layer)
                else:
                    session.read_shm(write_layer, mappings)
                ack_sent = session.send_ack()
                # Unmapping a large segment takes a while: overlap it with the source's
                # release instead of waiting for both in turn.
                mappings.close()
                ack_confirmed = ack_sent and session.await_done()
    except TimeoutError:
        raise TransferTimeout(
            f"KV transfer of {record.request_id!r} exceeded {timeout_s} s"
        ) from None
    except OSError as exc:
        raise ConnectionLost(f"KV transfer of {record.request_id!r} failed: {exc}") from None
    return TransferStats(
        request_id=record.request_id,
        transport=transport,
        num_layers=record.num_layers,
        num_bytes=record.num_bytes,
        elapsed_s=time.monotonic() - started,
        ack_confirmed=ack_confirmed,
    )


class _Session:
    def __init__(self, sock: socket.socket, record: HandoffRecord, deadline: float) -> None:
        self.sock = sock
        self.record = record
        self.deadline = deadline

    def _arm(self) -> None:
        """Bound the next socket operation by what is left of the overall deadline."""
        remaining_s = self.deadline - time.monotonic()
        if remaining_s <= 0:
            raise TimeoutError
        self.sock.settimeout(remaining_s)

    def _recv(self, expected: MsgType) -> dict[str, Any]:
        self._arm()
        msg_type, body_bytes = recv_header(self.sock)
        if msg_type == MsgType.ERROR:
            body = recv_control_body(self.sock, body_bytes)
            raise error_from_code(body.get("code"), body.get("message"))
        if msg_type != expected:
            raise ProtocolError(f"expected {expected.name}, got {msg_type.name}")
        self._arm()
        return recv_control_body(self.sock, body_bytes)

    def handshake(self, secret: bytes, identity: ModelIdentity, transport: str) -> None:
        hello = self._recv(MsgType.HELLO)
        try:
            server_nonce = bytes.fromhex(hello["nonce"])
        except (KeyError, TypeError, ValueError):
            raise ProtocolError("HELLO without a valid nonce") from None
        if len(server_nonce) != NONCE_BYTES:
            raise ProtocolError("HELLO nonce has the wrong length")
        client_nonce = secrets.token_bytes(NONCE_BYTES)
        self._arm()
        send_control(
            self.sock,
            MsgType.PULL,
            {
                "request_id": self.record.request_id,
                "mac": client_mac(secret, server_nonce),
                "client_nonce": client_nonce.hex(),
                "identity": identity.to_dict(),
                "transport": transport,
            },
        )
        meta = self._recv(MsgType.META)
        if not macs_equal(server_mac(secret, client_nonce, server_nonce), meta.get("mac")):
            raise AuthError("KV source does not know the cluster secret")
        announced = (meta.get("num_layers"), meta.get("bytes_per_layer"), meta.get("checksum"))
        expected = (self.record.num_layers, self.record.bytes_per_layer, CHECKSUM_NAME)
        if announced != expected:
            raise ProtocolError(f"source announced {announced}, the record says {expected}")

    def receive_layers(self, write_layer: WriteLayer) -> None:
        self._verify_and_write(self._received_layers(), write_layer)

    def _received_layers(self) -> Iterator[tuple[int, memoryview, int]]:
        """Receive each LAYER frame whole (header, bytes, checksum trailer: few syscalls)
        into one of two alternating staging buffers: the consumer holds at most the
        previous layer while the next one arrives."""
        bytes_per_layer = self.record.bytes_per_layer
        frame_bytes = HEADER.size + bytes_per_layer + CHECKSUM.size
        staging = [memoryview(bytearray(frame_bytes)) for _ in range(2)]
        for layer in range(self.record.num_layers):
            frame = staging[layer % 2]
            self._arm()
            # A short or foreign frame cannot pass: the header is checked below, and a
            # peer that stops early leaves recv waiting until close (ConnectionLost) or
            # the deadline (TransferTimeout).
            recv_into_exact(self.sock, frame)
            msg_type, body_bytes = parse_header(frame[: HEADER.size])
            if msg_type != MsgType.LAYER or body_bytes != CHECKSUM.size + bytes_per_layer:
                raise ProtocolError(
                    f"layer {layer}: expected LAYER of {CHECKSUM.size + bytes_per_layer} bytes, "
                    f"got {msg_type.name} of {body_bytes}"
                )
            (expected_checksum,) = CHECKSUM.unpack(frame[HEADER.size + bytes_per_layer :])
            yield layer, frame[HEADER.size : HEADER.size + bytes_per_layer], expected_checksum

    def read_shm(self, write_layer: WriteLayer, mappings: ExitStack) -> None:
        """Verify and write every layer from the offered segment; `mappings` unmaps it."""
        offer = self._recv(MsgType.SHM)
        name, offsets, checksums = (
            offer.get("name"),
            offer.get("layer_offsets"),
            offer.get("checksums"),
        )
        num_layers = self.record.num_layers
        if not (
            isinstance(name, str)
            and isinstance(offsets, list)
            and isinstance(checksums, list)
            and len(offsets) == len(checksums) == num_layers
            and all(isinstance(v, int) for v in offsets + checksums)
        ):
            raise ProtocolError("malformed SHM offer")
        bytes_per_layer = self.record.bytes_per_layer

        def layers(segment: memoryview) -> Iterator[tuple[int, memoryview, int]]:
            for layer, offset in enumerate(offsets):
                if time.monotonic() > self.deadline:
                    raise TimeoutError
                if offset < 0 or offset + bytes_per_layer > segment.nbytes:
                    raise ProtocolError(f"layer {layer} at {offset} lies outside the segment")
                yield layer, segment[offset : offset + bytes_per_layer], checksums[layer]

        try:
            segment = mappings.enter_context(mapped_segment(name))
            self._verify_and_write(layers(segment), write_layer)
        except ValueError as exc:
            raise ProtocolError(str(exc)) from None
        except FileNotFoundError:
            raise TransferError(f"shared-memory segment {name!r} is gone") from None

    def _verify_and_write(
        self, layers: Iterator[tuple[int, memoryview, int]], write_layer: WriteLayer
    ) -> None:
        """Checksum layer i on a helper thread while layer i-1 is written here and layer i+1
        is received (numpy, hashlib and socket calls release the GIL), so verification
        adds little to the critical path. Small layers are checked inline: a thread
        handoff per layer costs more than their checksum. write_layer sees only verified
        layers, in order, on the calling thread."""
        if self.record.bytes_per_layer < checksum_module.PARALLEL_CHECKSUM_MIN_BYTES:
            for layer, view, expected_checksum in layers:
                checksum: Future[int] = Future()
                checksum.set_result(kv_checksum(view))
                self._write_verified(layer, view, expected_checksum, checksum, write_layer)
            return
        with ThreadPoolExecutor(1, thread_name_prefix="kv-verify",
                                initializer=named_initializer("kv-verify")) as pool:
            previous: tuple[int, memoryview, int, Future[int]] | None = None
            for layer, view, expected_checksum in layers:
                checksum = pool.submit(kv_checksum, view)
                if previous is not None:
                    self._write_verified(*previous, write_layer)
                previous = (layer, view, expected_checksum, checksum)
            if previous is not None:
                self._write_verified(*previous, write_layer)

    def _write_verified(
        self,
        layer: int,
        view: memoryview,
        expected_checksum: int,
        checksum: Future[int],
        write_layer: WriteLayer,
    ) -> None:
        actual = checksum.result()
        if actual != expected_checksum:
            raise ChecksumMismatch(
                f"request {self.record.request_id!r} layer {layer}: checksum "
                f"{actual:#018x} != sender's {expected_checksum:#018x}"
            )
        write_layer(layer, view)

    def send_ack(self) -> bool:
        """Tell the source to release: every layer is verified and written. A failure
        here does not undo that; the source's lease then frees its copy."""
        try:
            self._arm()
            send_control(self.sock, MsgType.ACK, {"request_id": self.record.request_id})
        except (OSError, TransferError):
            return False
        return True

    def await_done(self) -> bool:
        """True once the source confirmed its release. A lost confirmation is not an
        error: the KV is verified here and the source's lease frees its copy anyway."""
        try:
            done = self._recv(MsgType.DONE)
        except (OSError, TransferError):
            return False
        return done.get("released") is True
