from __future__ import annotations

import json

import pytest

from splitserve.transfer import HandoffRecord, ModelIdentity
from splitserve.transfer.record import parse_address

IDENTITY = ModelIdentity(
    "a1b2", "bfloat16", block_size=16, num_layers=2, num_kv_heads=4, head_dim=64
)


def make_record(**overrides: object) -> HandoffRecord:
    fields: dict[str, object] = dict(
        version=1,
        request_id="req-1",
        source_worker_id="prefill-0",
        tcp_address="127.0.0.1:5000",
        shm_host_id="host",
        num_layers=2,
        block_ids=(4, 9),
        num_tokens=20,
        bytes_per_layer=2 * IDENTITY.bytes_per_block,
        dtype="bfloat16",
        block_shape=IDENTITY.block_shape,
        model_hash="a1b2",
        expires_at=1.9e9,
    )
    fields.update(overrides)
    return HandoffRecord(**fields)  # type: ignore[arg-type]


def test_json_roundtrip_is_lossless_and_plain_json():
    record = make_record()
    text = record.to_json()
    assert json.loads(text)["block_ids"] == [4, 9]
    assert HandoffRecord.from_json(text) == record
    assert record.num_bytes == 2 * 2 * 2 * 16 * 4 * 64 * 2


def test_unknown_and_missing_fields_are_rejected_by_name():
    data = make_record().to_dict()
    with pytest.raises(ValueError, match=r"unknown fields \['surprise'\]"):
        HandoffRecord.from_dict({**data, "surprise": 1})
    del data["expires_at"]
    with pytest.raises(ValueError, match=r"missing fields \['expires_at'\]"):
        HandoffRecord.from_dict(data)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"version": 2}, "version"),
        ({"request_id": ""}, "request_id"),
        ({"request_id": "x" * 300}, "request_id"),
        ({"block_ids": ()}, "block_ids is empty"),
        ({"block_ids": (1, -2), "bytes_per_layer": 2 * IDENTITY.bytes_per_block}, "block id"),
        ({"num_tokens": 0}, "num_tokens"),
        ({"num_layers": 0}, "num_layers"),
        ({"bytes_per_layer": 123}, "bytes_per_layer 123"),
        ({"dtype": "int4"}, "dtype"),
        ({"tcp_address": "localhost"}, "host:port"),
        ({"tcp_address": "localhost:0"}, "port"),
        ({"expires_at": float("nan")}, "expires_at"),
        ({"expires_at": True}, "expires_at"),
        ({"num_tokens": 3.0}, "num_tokens"),
    ],
)
def test_invalid_records_raise_value_error_naming_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_record(**overrides)


def test_non_json_and_non_object_input_is_a_value_error():
    with pytest.raises(ValueError, match="not valid JSON"):
        HandoffRecord.from_json("{not json")
    with pytest.raises(ValueError, match="JSON object"):
        HandoffRecord.from_json("[1, 2]")
    data = make_record().to_dict()
    with pytest.raises(ValueError, match="block_ids must be a list"):
        HandoffRecord.from_dict({**data, "block_ids": "1,2"})


def test_mismatches_against_a_sink_identity():
    record = make_record()
    assert record.mismatches(IDENTITY) == []
    other = ModelIdentity("zz", "float16", block_size=8, num_layers=2, num_kv_heads=4, head_dim=64)
    assert record.mismatches(other) == [
        "model_hash zz != a1b2",
        "dtype float16 != bfloat16",
        "block_shape [2, 8, 4, 64] != [2, 16, 4, 64]",
    ]


def test_parse_address_handles_ipv6_brackets():
    assert parse_address("[::1]:8000") == ("::1", 8000)
    assert parse_address("10.0.0.2:65535") == ("10.0.0.2", 65535)
