import json

import pytest

from splitserve.engine.sampling_params import (
    MAX_LOGPROBS,
    MAX_STOP_STR_LEN,
    MAX_STOP_STRINGS,
    SamplingParams,
)


def test_defaults_match_vllm_shape() -> None:
    p = SamplingParams()
    assert (p.n, p.temperature, p.top_p, p.top_k, p.min_p) == (1, 1.0, 1.0, 0, 0.0)
    assert (p.max_tokens, p.min_tokens, p.seed, p.logprobs) == (16, 0, None, None)
    assert p.stop == () and p.stop_token_ids == ()
    assert not p.ignore_eos and not p.include_stop_str_in_output and p.skip_special_tokens
    assert not p.greedy
    assert SamplingParams(temperature=0).greedy


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n": 2}, "n"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"min_p": -0.1}, "min_p"),
        ({"min_p": 1.1}, "min_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"min_tokens": -1}, "min_tokens"),
        ({"min_tokens": 20, "max_tokens": 10}, "min_tokens"),
        ({"seed": 2**64}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"stop": [""]}, "stop"),
        ({"stop": [3]}, "stop"),
        ({"stop": ["x"] * (MAX_STOP_STRINGS + 1)}, "stop"),
        ({"stop": ["x" * (MAX_STOP_STR_LEN + 1)]}, "stop"),
        ({"stop_token_ids": [-1]}, "stop_token_ids"),
        ({"stop_token_ids": ["a"]}, "stop_token_ids"),
        ({"stop_token_ids": 5}, "stop_token_ids"),
        ({"logprobs": MAX_LOGPROBS + 1}, "logprobs"),
        ({"logprobs": -1}, "logprobs"),
        ({"ignore_eos": 1}, "ignore_eos"),
        ({"skip_special_tokens": "yes"}, "skip_special_tokens"),
    ],
)
def test_invalid_values_raise_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kwargs)


def test_accepted_edge_values() -> None:
    SamplingParams(top_k=-1, top_p=1.0, min_p=1.0, temperature=0.0, logprobs=0, seed=-5)
    SamplingParams(stop="###", max_tokens=1, min_tokens=1, logprobs=MAX_LOGPROBS)
    assert SamplingParams(stop="###").stop == ("###",)


def test_json_round_trip_is_exact() -> None:
    p = SamplingParams(
        temperature=0.7,
        top_p=0.9,
        top_k=40,
        min_p=0.05,
        seed=1234,
        max_tokens=64,
        min_tokens=2,
        stop=["\n\n", "END"],
        stop_token_ids=[7, 9],
        ignore_eos=True,
        logprobs=5,
        include_stop_str_in_output=True,
        skip_special_tokens=False,
    )
    wire = json.dumps(p.to_dict())
    back = SamplingParams.from_dict(json.loads(wire))
    assert back == p
    assert hash(back) == hash(p)


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="frequency_penalty"):
        SamplingParams.from_dict({"temperature": 0.5, "frequency_penalty": 1.0})
    with pytest.raises(ValueError, match="JSON object"):
        SamplingParams.from_dict([1, 2])  # type: ignore[arg-type]


def test_from_dict_validates_values() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        SamplingParams.from_dict({"max_tokens": 0})


def test_is_frozen() -> None:
    p = SamplingParams()
    with pytest.raises(AttributeError):
        p.temperature = 0.5  # type: ignore[misc]
