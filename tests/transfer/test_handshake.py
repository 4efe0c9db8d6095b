from __future__ import annotations

import pytest

from splitserve.transfer import HandshakeMismatch, ModelIdentity, check_compatible, model_hash_of

BASE = ModelIdentity("a1b2", "bfloat16", block_size=16, num_layers=2, num_kv_heads=4, head_dim=64)


def test_identical_identities_pass():
    check_compatible(BASE, ModelIdentity(**BASE.to_dict()))


def test_refusal_lists_every_mismatching_field():
    other = ModelIdentity(
        "c3d4", "float32", block_size=16, num_layers=3, num_kv_heads=4, head_dim=64
    )
    with pytest.raises(HandshakeMismatch) as info:
        check_compatible(other, BASE)
    assert str(info.value) == (
        "KV handshake refused (decode != prefill): model_hash c3d4 != a1b2; "
        "dtype float32 != bfloat16; num_layers 3 != 2"
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dtype": "int8"}, "dtype"),
        ({"block_size": 0}, "block_size"),
        ({"head_dim": True}, "head_dim"),
        ({"model_hash": ""}, "model_hash"),
    ],
)
def test_invalid_identity_is_a_value_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        ModelIdentity(**{**BASE.to_dict(), **overrides})


def test_from_dict_is_strict():
    with pytest.raises(ValueError, match="unknown fields"):
        ModelIdentity.from_dict({**BASE.to_dict(), "extra": 1})
    with pytest.raises(ValueError, match="missing fields"):
        ModelIdentity.from_dict({"model_hash": "x"})
    assert ModelIdentity.from_dict(BASE.to_dict()) == BASE


def test_block_geometry():
    assert BASE.block_shape == (2, 16, 4, 64)
    assert BASE.bytes_per_block == 2 * 16 * 4 * 64 * 2


def test_model_hash_depends_on_config_and_tensor_shapes_only():
    config = {"hidden_size": 64, "num_hidden_layers": 2}
    shapes = {"embed.weight": (100, 64), "lm_head.weight": (100, 64)}
    same = model_hash_of(dict(reversed(config.items())), dict(reversed(shapes.items())))
    assert model_hash_of(config, shapes) == same
    assert model_hash_of({**config, "hidden_size": 65}, shapes) != same
    assert model_hash_of(config, {**shapes, "lm_head.weight": (101, 64)}) != same
