"""Bad input to the offline engine raises ValueError naming the problem; nothing leaks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from splitserve.engine.llm import LLM
from splitserve.engine.sampling_params import SamplingParams
from tests.helpers.checkpoints import make_model_dir


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> LLM:
    model = make_model_dir("llama", tmp_path_factory.mktemp("m"), max_position_embeddings=256)
    return LLM(str(model), dtype="float32", num_blocks=32)


@pytest.mark.parametrize(("prompt", "params", "message"), [
    ("", SamplingParams(), "empty"),
    ([], SamplingParams(), "empty"),
    ("word " * 400, SamplingParams(max_tokens=4), "max model length"),
    ("hello", SamplingParams(max_tokens=300), "max model length"),
    ([1, 2, 99999], SamplingParams(), "out of range"),
    ([1, "2"], SamplingParams(), "integers"),
    ([1, 2.0], SamplingParams(), "integers"),
    ({"prompt_token_ids": [1, None]}, SamplingParams(), "integers"),
    ({"prompt": [1, 2]}, SamplingParams(), "must be text"),
    ({"prompt": "a", "prompt_token_ids": [1]}, SamplingParams(), "exactly one of"),
    ({"text": "a"}, SamplingParams(), "exactly one of"),
    (7, SamplingParams(), "a prompt is text"),
])
def test_bad_prompts_raise_value_error(llm: LLM, prompt, params, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        llm.generate([prompt], params)
    assert llm.engine.stats()["num_used_blocks"] == 0
    assert not llm.engine.has_work()


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"temperature": -0.5}, "temperature"), ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"), ({"min_p": 2.0}, "min_p"), ({"max_tokens": 0}, "max_tokens"),
    ({"n": 2}, "n"), ({"logprobs": 1000}, "logprobs"), ({"stop": [""]}, "stop"),
])
def test_invalid_sampling_values_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kwargs)


def test_a_bad_prompt_in_a_batch_queues_nothing(llm: LLM) -> None:
    with pytest.raises(ValueError):
        llm.generate(["fine", ""], SamplingParams(max_tokens=2))
    assert not llm.engine.has_work() and llm.engine.stats()["num_waiting"] == 0
    out = llm.generate(["fine"], SamplingParams(max_tokens=2, ignore_eos=True))
    assert len(out[0].outputs[0].token_ids) == 2


def test_vllm_style_prompt_dicts_match_plain_prompts(llm: LLM) -> None:
    params = SamplingParams(max_tokens=3, ignore_eos=True, temperature=0.0)
    ids = llm.tokenizer.encode("hello there")
    plain = llm.generate(["hello there", ids], params)
    dicts = llm.generate([{"prompt": "hello there"}, {"prompt_token_ids": ids}], params)
    assert [o.outputs[0].token_ids for o in dicts] == [o.outputs[0].token_ids for o in plain]
    assert dicts[0].prompt == "hello there" and dicts[1].prompt_token_ids == ids
    single = llm.generate({"prompt_token_ids": ids}, params)
    assert single[0].outputs[0].token_ids == plain[1].outputs[0].token_ids


def test_unknown_engine_argument_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown engine argument"):
        LLM(str(tmp_path), no_such_option=1)


def test_generate_cli_prints_the_completion(tmp_path: Path) -> None:
    model = make_model_dir("llama", tmp_path / "m", max_position_embeddings=256)
    proc = subprocess.run(
        [sys.executable, "-m", "splitserve.cli", "generate", str(model), "--prompt",
         "The function returns", "--max-tokens", "5", "--num-blocks", "32"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "The function returns" in proc.stdout and "tokens/s" in proc.stdout
