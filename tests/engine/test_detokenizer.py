import random

import pytest

from splitserve.engine.detokenizer import Finish, IncrementalDetokenizer, check_stop
from splitserve.engine.sampling_params import SamplingParams
from tests.engine.tok_fixture import (
    TRAIN_TEXT,
    byte_bpe_tokenizer,
    eos_id,
    metaspace_bpe_tokenizer,
)

MULTIBYTE_TEXT = "Café 你好，世界。🙂 launch 🚀 naïve 👍🏽 こんにちは ❤️ end"
PROMPT = "Once upon a time"


def _ids(text: str) -> list[int]:
    return byte_bpe_tokenizer().encode(text).ids


def _stream(
    params: SamplingParams, output_ids: list[int], eos_token_ids: tuple[int, ...] = ()
) -> tuple[IncrementalDetokenizer, list[str]]:
    """Feed `output_ids` after PROMPT; checks `text` == deltas so far after every step."""
    detok = IncrementalDetokenizer(
        byte_bpe_tokenizer(), _ids(PROMPT), params, eos_token_ids=eos_token_ids
    )
    deltas = []
    for token_id in output_ids:
        deltas.append(detok.append(token_id))
        sent = "".join(deltas)
        assert detok.text == sent
        if detok.finished:
            break
    return detok, deltas


def test_fixture_really_splits_multibyte_characters() -> None:
    tok = byte_bpe_tokenizer()
    pieces = [tok.decode([t]) for t in _ids(MULTIBYTE_TEXT)]
    assert sum("\ufffd" in p for p in pieces) >= 5


def test_multibyte_stream_has_no_replacement_char_and_matches_decode() -> None:
    ids = _ids(MULTIBYTE_TEXT)
    detok, deltas = _stream(SamplingParams(max_tokens=len(ids)), ids)
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == byte_bpe_tokenizer().decode(ids) == MULTIBYTE_TEXT
    assert detok.finish_reason == "length" and detok.stop_reason is None
    assert detok.token_ids == ids


@pytest.mark.parametrize("num_prompt_tokens", [1, 3, 8])
def test_sentencepiece_style_leading_spaces_survive_streaming(num_prompt_tokens: int) -> None:
    tok = metaspace_bpe_tokenizer()
    ids = tok.encode("Once upon a time there was a little robot").ids
    prompt_ids, output_ids = ids[:num_prompt_tokens], ids[num_prompt_tokens:]
    detok = IncrementalDetokenizer(tok, prompt_ids, SamplingParams(max_tokens=len(output_ids)))
    text = "".join(detok.append(t) for t in output_ids)
    assert text == tok.decode(ids)[len(tok.decode(prompt_ids)) :]
    assert text.endswith(" little robot")  # token-by-token decoding loses every space
    assert "".join(tok.decode([t]) for t in output_ids) != text


def test_incomplete_character_at_finish_is_flushed_like_decode() -> None:
    ids = _ids("ok 🚀")[:-1]  # cut inside the emoji's bytes
    detok, deltas = _stream(SamplingParams(max_tokens=len(ids)), ids)
    assert detok.finished
    assert "".join(deltas) == byte_bpe_tokenizer().decode(ids)
    assert "".join(deltas).endswith("\ufffd")


@pytest.mark.parametrize("include", [False, True])
def test_stop_string_spanning_tokens_cuts_exactly(include: bool) -> None:
    text = " there was a little robot who loved to read books"
    stop = "little robot"
    ids = _ids(text)
    tok = byte_bpe_tokenizer()
    assert all(stop not in tok.decode([t]) for t in ids)  # the stop spans several tokens
    params = SamplingParams(max_tokens=100, stop=[stop, "zzz"], include_stop_str_in_output=include)
    detok, deltas = _stream(params, ids)
    expected = text[: text.index(stop) + (len(stop) if include else 0)]
    assert detok.text == "".join(deltas) == expected
    assert detok.finish_reason == "stop" and detok.stop_reason == stop
    assert len(detok.token_ids) < len(ids)  # stopped at the token completing the match


def test_partial_stop_match_is_held_back_then_released() -> None:
    text = " the lazy dog. The end of the story"
    ids = _ids(text)
    stop = "The endless"  # "The end" looks like its beginning but the match never completes
    detok, deltas = _stream(SamplingParams(max_tokens=len(ids), stop=[stop]), ids)
    sent = ""
    decoded = ""
    max_held = 0
    for i, delta in enumerate(deltas):
        sent += delta
        decoded = byte_bpe_tokenizer().decode(ids[: i + 1])
        assert decoded.startswith(sent)
        max_held = max(max_held, len(decoded) - len(sent))
        assert len(decoded) - len(sent) < len(stop)
    assert max_held >= len("The end")  # it really was held
    assert detok.finish_reason == "length"
    assert sent == text


def test_earliest_of_several_stop_strings_wins() -> None:
    text = " Stop here. STOP! The model"
    params = SamplingParams(max_tokens=50, stop=["STOP!", "here"])
    detok, deltas = _stream(params, _ids(text))
    assert "".join(deltas) == " Stop "
    assert detok.stop_reason == "here"


def _random_piece(rng: random.Random, corpus: str, max_chars: int) -> str:
    start = rng.randrange(len(corpus) - max_chars)
    return corpus[start : start + rng.randrange(1, max_chars)]


CORPUS = " ".join(TRAIN_TEXT[:10]) + " " + MULTIBYTE_TEXT


def test_random_streams_cut_at_the_single_stop_string() -> None:
    tok = byte_bpe_tokenizer()
    rng = random.Random(0)
    for case in range(150):
        ids = tok.encode(_random_piece(rng, CORPUS, 80)).ids
        full = tok.decode(ids)
        a = rng.randrange(len(full))
        stop = full[a : a + rng.randrange(1, 6)] if case % 3 else "\u2603never"
        include = case % 2 == 0
        params = SamplingParams(
            max_tokens=len(ids), stop=[stop], include_stop_str_in_output=include
        )
        detok, deltas = _stream(params, ids)  # checks no retraction at every step
        sent = "".join(deltas)
        if stop in full:
            cut = full.index(stop) + (len(stop) if include else 0)
            assert detok.finish_reason == "stop" and detok.stop_reason == stop
            assert sent == full[:cut], (full, stop)
        else:
            assert detok.finish_reason == "length" and sent == full
        assert "\ufffd" not in sent


def test_random_streams_with_several_stops_keep_their_invariants() -> None:
    tok = byte_bpe_tokenizer()
    rng = random.Random(1)
    num_stopped = 0
    for case in range(150):
        ids = tok.encode(_random_piece(rng, CORPUS, 80)).ids
        full = tok.decode(ids)
        stops = [_random_piece(rng, CORPUS, 5) for _ in range(rng.randrange(1, 4))]
        include = case % 2 == 0
        params = SamplingParams(max_tokens=len(ids), stop=stops, include_stop_str_in_output=include)
        detok, deltas = _stream(params, ids)
        sent = "".join(deltas)
        assert full.startswith(sent)
        if detok.finish_reason == "length":
            assert sent == full and not any(s in full for s in stops)
            continue
        num_stopped += 1
        matched = detok.stop_reason
        assert isinstance(matched, str) and matched in stops
        before = sent[: len(sent) - len(matched)] if include else sent
        assert full[len(before) :].startswith(matched)
        assert not any(s in before for s in stops)  # no earlier match was skipped
    assert 30 < num_stopped < 150  # both outcomes were exercised


def test_eos_and_stop_token_ids() -> None:
    tok = byte_bpe_tokenizer()
    eos = eos_id(tok)
    body = _ids(" the end")
    detok, deltas = _stream(
        SamplingParams(max_tokens=50), body + [eos] + body, eos_token_ids=(eos,)
    )
    assert detok.finish_reason == "stop" and detok.stop_reason is None
    assert detok.token_ids == body + [eos]
    assert "".join(deltas) == " the end"

    stop_id = body[-1]
    detok, deltas = _stream(SamplingParams(max_tokens=50, stop_token_ids=[stop_id]), body)
    assert detok.finish == Finish("stop", stop_id)
    assert "".join(deltas) == tok.decode(body[:-1])

    detok, deltas = _stream(
        SamplingParams(max_tokens=50, stop_token_ids=[stop_id], include_stop_str_in_output=True),
        body,
    )
    assert "".join(deltas) == " the end"

    ids = body + [eos] + body
    detok, deltas = _stream(
        SamplingParams(max_tokens=len(ids), ignore_eos=True), ids, eos_token_ids=(eos,)
    )
    assert detok.finish_reason == "length"
    assert "".join(deltas) == " the end the end"  # EOS is special: skipped in text


def test_special_tokens_kept_when_asked() -> None:
    tok = byte_bpe_tokenizer()
    eos = eos_id(tok)
    ids = _ids(" a") + [eos] + _ids(" b")
    params = SamplingParams(max_tokens=len(ids), skip_special_tokens=False)
    _, deltas = _stream(params, ids)
    assert "".join(deltas) == " a<|endoftext|> b"


def test_min_tokens_defers_stops() -> None:
    tok = byte_bpe_tokenizer()
    eos = eos_id(tok)
    ids = _ids(" end") + [eos] + _ids(" more end") + [eos]
    params = SamplingParams(max_tokens=50, min_tokens=5, stop=["end"])  # " end" + EOS = 4
    detok, deltas = _stream(params, ids, eos_token_ids=(eos,))
    assert detok.finish == Finish("stop", "end")
    assert "".join(deltas) == " end more "


@pytest.mark.parametrize("stop", [[], ["世界。🙂 la"], ["robot"]])
def test_resume_mid_sequence_continues_exactly(stop: list[str]) -> None:
    ids = _ids(MULTIBYTE_TEXT + " little robot")
    params = SamplingParams(max_tokens=len(ids), stop=stop)
    tok = byte_bpe_tokenizer()
    full, full_deltas = _stream(params, ids)
    for k in range(1, len(full.token_ids)):
        resumed = IncrementalDetokenizer(tok, _ids(PROMPT), params, output_token_ids=ids[:k])
        assert resumed.text == "".join(full_deltas[:k])
        rest = [resumed.append(t) for t in full.token_ids[k:]]
        assert rest == full_deltas[k:]
        assert resumed.finish == full.finish


def test_append_after_finish_is_an_error() -> None:
    detok, _ = _stream(SamplingParams(max_tokens=1), _ids(" a b"))
    assert detok.finished
    with pytest.raises(ValueError, match="finished"):
        detok.append(5)


def test_check_stop_order_and_limits() -> None:
    p = SamplingParams(max_tokens=3, stop_token_ids=[7])
    assert check_stop([], p, {2}) is None
    assert check_stop([1], p, {2}) is None
    assert check_stop([1, 2], p, {2}) == Finish("stop", None)
    assert check_stop([1, 7], p, {2}) == Finish("stop", 7)
    assert check_stop([1, 1, 1], p, {2}) == Finish("length", None)
    assert check_stop([1, 1, 2], p, {2}) == Finish("stop", None)  # stop beats length
    assert check_stop([1, 2], SamplingParams(ignore_eos=True), {2}) is None
    assert check_stop([2], SamplingParams(min_tokens=2), {2}) is None
    assert check_stop([1], SamplingParams(), {2}, num_prompt_tokens=9, max_model_len=10) == (
        Finish("length", None)
    )
