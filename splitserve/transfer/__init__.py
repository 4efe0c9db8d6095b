"""KV handoff between a prefill worker (KVServer) and a decode worker (pull_kv).

numpy and the standard library only: no torch, no engine. See `wire.py` for the protocol.
"""

from splitserve.transfer.checksum import CHECKSUM_NAME, kv_checksum
from splitserve.transfer.client import TransferStats, WriteLayer, pull_kv
from splitserve.transfer.errors import (
    AuthError,
    Busy,
    ChecksumMismatch,
    ConnectionLost,
    Expired,
    HandshakeMismatch,
    NotFound,
    ProtocolError,
    TransferError,
    TransferTimeout,
)
from splitserve.transfer.faults import CORRUPT_ENV, FaultInjection
from splitserve.transfer.handshake import (
    ModelIdentity,
    check_compatible,
    identity_mismatches,
    model_hash_of,
)
from splitserve.transfer.record import RECORD_VERSION, HandoffRecord
from splitserve.transfer.registry import ACK, EXPIRED, SHUTDOWN, UNREGISTERED
from splitserve.transfer.server import KVServer

__all__ = [
    "ACK",
    "CHECKSUM_NAME",
    "CORRUPT_ENV",
    "EXPIRED",
    "RECORD_VERSION",
    "SHUTDOWN",
    "UNREGISTERED",
    "AuthError",
    "Busy",
    "ChecksumMismatch",
    "ConnectionLost",
    "Expired",
    "FaultInjection",
    "HandoffRecord",
    "HandshakeMismatch",
    "KVServer",
    "ModelIdentity",
    "NotFound",
    "ProtocolError",
    "TransferError",
    "TransferStats",
    "TransferTimeout",
    "WriteLayer",
    "check_compatible",
    "identity_mismatches",
    "kv_checksum",
    "model_hash_of",
    "pull_kv",
]
