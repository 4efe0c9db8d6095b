"""Typed failures of a KV handoff; the decode worker maps each to retry or error."""

from __future__ import annotations


class TransferError(Exception):
    """Base class: the KV did not arrive verified; nothing may be decoded from it."""

    code = "internal"


class HandshakeMismatch(TransferError):
    """Source and sink disagree on the model identity; no KV byte moved."""

    code = "handshake"


class ChecksumMismatch(TransferError):
    """A layer's bytes differ from what the sender checksummed."""

    code = "checksum"


class TransferTimeout(TransferError):
    """The transfer did not finish within its deadline."""

    code = "timeout"


class AuthError(TransferError):
    """The peer does not know the cluster secret (or we do not know theirs)."""

    code = "auth"


class NotFound(TransferError):
    """The source holds no KV for this request id (never registered or already released)."""

    code = "not_found"


class Expired(NotFound):
    """The source's lease on this request's KV ran out before the pull."""

    code = "expired"


class Busy(TransferError):
    """Another pull of the same request is in flight at the source."""

    code = "busy"


class ProtocolError(TransferError):
    """The peer sent something that is not a valid frame for this point of the protocol."""

    code = "protocol"


class ConnectionLost(TransferError):
    """The connection closed or failed before the transfer completed (partial transfer)."""

    code = "connection_lost"


_BY_CODE: dict[str, type[TransferError]] = {
    cls.code: cls
    for cls in (
        TransferError,
        HandshakeMismatch,
        ChecksumMismatch,
        TransferTimeout,
        AuthError,
        NotFound,
        Expired,
        Busy,
        ProtocolError,
        ConnectionLost,
    )
}


def error_from_code(code: object, message: object) -> TransferError:
    """The exception a peer's ERROR frame stands for (unknown codes -> TransferError)."""
    cls = _BY_CODE.get(code, TransferError) if isinstance(code, str) else TransferError
    return cls(f"source refused: {message}")
