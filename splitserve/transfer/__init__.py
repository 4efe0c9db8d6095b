"""KV handoff between a prefill worker (KVServer) and a decode worker (pull_kv).

numpy and the standard library only: no torch, no engine. See `wire.py` for the protocol.

Prefill worker (one server per worker, started at boot)::

    server = KVServer(identity, secret, host="127.0.0.1", port=0, worker_id="prefill-0",
                      on_release=lambda request_id, reason: engine.release(request_id))
    record = server.register(request_id, block_ids=seq.block_ids, num_tokens=num_prompt_tokens,
                             expires_at=time.time() + lease_s,
                             read_layer=lambda layer: export_blocks(kv_caches, layer, ids))
    emit({"type": "handoff", "record": record.to_dict()})
    ...                        # on abort: server.unregister(request_id); at exit: server.close()

Decode worker (blocks reserved first; run in a thread)::

    record = HandoffRecord.from_dict(body["handoff"])       # ValueError -> HTTP 400
    stats = pull_kv(record, secret, identity,
                    write_layer=lambda layer, view: import_blocks(kv_caches, layer, ids, view),
                    timeout_s=30)                           # TransferError -> retry / error
    # VERIFIED: every layer matched the sender's checksum; the source has released.

`on_release(request_id, reason)` fires exactly once per registered request, with reason
"ack", "expired", "unregistered" or "shutdown", never while a pull is reading its buffers.
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
