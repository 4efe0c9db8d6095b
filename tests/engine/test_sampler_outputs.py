import json

import pytest
import torch

from splitserve.engine.outputs import CompletionOutput, RequestOutput, TokenLogprobs
from splitserve.engine.sampler import sample
from splitserve.engine.sampling_params import SamplingParams


def test_token_logprobs_json_round_trip_from_a_real_sample() -> None:
    logits = torch.randn(1, 50, generator=torch.Generator().manual_seed(0))
    lp = sample(logits, [SamplingParams(temperature=0, logprobs=3)], [0]).logprobs[0]
    assert lp is not None
    assert TokenLogprobs.from_dict(json.loads(json.dumps(lp.to_dict()))) == lp


def test_token_logprobs_from_dict_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="keys"):
        TokenLogprobs.from_dict({"token_id": 1, "logprob": -0.5})
    with pytest.raises(ValueError, match="same length"):
        TokenLogprobs.from_dict(
            {
                "token_id": 1,
                "logprob": -0.5,
                "rank": 1,
                "top_token_ids": [1, 2],
                "top_logprobs": [-0.5],
            }
        )


def test_request_output_is_json_ready() -> None:
    lp = TokenLogprobs(5, -0.25, 1, (5, 7), (-0.25, -2.0))
    completion = CompletionOutput(0, "hi", [5], "stop", "\n", [lp], -0.25)
    out = RequestOutput("r1", "say hi", [1, 2], [completion], finished=True)
    data = json.loads(json.dumps(out.to_dict()))
    assert data["outputs"][0]["logprobs"][0] == lp.to_dict()
    assert data["outputs"][0]["finish_reason"] == "stop" and data["finished"] is True
    assert completion.finished()
    assert not CompletionOutput(0, "", [], None).finished()
