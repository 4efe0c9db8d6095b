"""Whatever arrives from the network, decoding fails only with ValueError / ProtocolError."""

from __future__ import annotations

import socket

from hypothesis import given, settings
from hypothesis import strategies as st

from splitserve.transfer import HandoffRecord, ProtocolError, TransferError
from splitserve.transfer.wire import MsgType, recv_control

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
RECORD_FIELDS = [
    "version",
    "request_id",
    "source_worker_id",
    "tcp_address",
    "shm_host_id",
    "num_layers",
    "block_ids",
    "num_tokens",
    "bytes_per_layer",
    "dtype",
    "block_shape",
    "model_hash",
    "expires_at",
]


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(RECORD_FIELDS) | st.text(max_size=6), JSON_VALUES))
def test_record_decoding_rejects_junk_with_value_error(data):
    try:
        HandoffRecord.from_dict(data)
    except ValueError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64))
def test_frame_parsing_rejects_junk_with_protocol_errors(raw):
    left, right = socket.socketpair()
    with left, right:
        left.sendall(raw)
        left.shutdown(socket.SHUT_WR)
        try:
            recv_control(right, MsgType.HELLO)
        except (ProtocolError, TransferError):
            pass
