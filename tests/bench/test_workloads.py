"""Length distributions, presets and exact-length prompts from a real (tiny) tokenizer."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest

from splitserve.bench.workloads import (
    PRESETS,
    LengthDist,
    LengthPolicy,
    PromptBuilder,
    get_workload,
    load_tokenizer,
    parse_dist,
    sample_lengths,
)


@pytest.mark.parametrize(
    ("name", "mean_in", "mean_out"),
    [("chat", 755, 200), ("code", 171, 98), ("summarize", 1738, 91)],
)
def test_preset_means_match_their_documentation(name: str, mean_in: int, mean_out: int) -> None:
    pairs = sample_lengths(get_workload(name), 20000, seed=1, policy=LengthPolicy())
    assert statistics.mean(p.input_len for p in pairs) == pytest.approx(mean_in, rel=0.06)
    assert statistics.mean(p.output_len for p in pairs) == pytest.approx(mean_out, rel=0.06)


def test_mixed_long_is_mostly_chat_with_some_very_long_prompts() -> None:
    pairs = sample_lengths(PRESETS["mixed-long"], 20000, seed=2, policy=LengthPolicy())
    longs = [p for p in pairs if p.is_long]
    assert len(longs) / len(pairs) == pytest.approx(0.05, abs=0.01)
    assert min(p.input_len for p in longs) >= 8000
    shorts = [p.input_len for p in pairs if not p.is_long]
    assert statistics.median(shorts) < 1000


def test_same_seed_same_lengths_and_scale_divides() -> None:
    w = PRESETS["chat"]
    raw = sample_lengths(w, 500, seed=7, policy=LengthPolicy())
    assert raw == sample_lengths(w, 500, seed=7, policy=LengthPolicy())
    assert raw != sample_lengths(w, 500, seed=8, policy=LengthPolicy())
    scaled = sample_lengths(w, 500, seed=7, policy=LengthPolicy(scale=8))
    for a, b in zip(raw, scaled, strict=True):
        assert b.input_len == max(1, math.ceil(a.input_len / 8))
        assert b.output_len == max(1, math.ceil(a.output_len / 8))


def test_lengths_clipped_to_max_model_len() -> None:
    pairs = sample_lengths(PRESETS["mixed-long"], 2000, seed=3, policy=LengthPolicy(
        max_model_len=1024))
    assert max(p.input_len + p.output_len for p in pairs) == 1024
    assert all(p.input_len >= 1 and p.output_len >= 1 for p in pairs)


def test_distributions_and_their_validation() -> None:
    import random

    rng = random.Random(0)
    assert {LengthDist("fixed", 17).sample(rng) for _ in range(10)} == {17}
    uni = [LengthDist("uniform", 15, 10, 20).sample(rng) for _ in range(2000)]
    assert min(uni) == 10 and max(uni) == 20
    assert parse_dist("fixed:64") == LengthDist("fixed", 64, 1, 64)
    assert parse_dist("uniform:8:32").min_len == 8
    assert parse_dist("lognormal:100:0.5:400").sigma == 0.5
    with pytest.raises(ValueError, match="kind"):
        LengthDist("normal", 10)
    with pytest.raises(ValueError, match="bad length distribution"):
        parse_dist("fixed")
    with pytest.raises(ValueError, match="unknown workload"):
        get_workload("nope")
    with pytest.raises(ValueError, match="divisor"):
        LengthPolicy(scale=0.5)


def test_token_id_prompts_have_exact_length_and_no_special_tokens(tokenizer_dir: Path) -> None:
    tok = load_tokenizer(str(tokenizer_dir))
    specials = set(tok.get_added_tokens_decoder())
    assert specials  # <s>, </s>
    builder = PromptBuilder(tok, seed=0)
    for n in (1, 7, 300, 2000):
        ids = builder.token_ids(n)
        assert len(ids) == n
        assert not specials & set(ids)
        assert all(0 <= i < tok.get_vocab_size() for i in ids)
    assert PromptBuilder(tok, seed=5).token_ids(50) == PromptBuilder(tok, seed=5).token_ids(50)


def test_text_prompts_reencode_to_the_requested_length(tokenizer_dir: Path) -> None:
    tok = load_tokenizer(str(tokenizer_dir / "tokenizer.json"))
    builder = PromptBuilder(tok, seed=1)
    exact = 0
    for n in range(5, 400, 13):
        text, real_len = builder.text(n)
        assert real_len == len(tok.encode(text, add_special_tokens=False).ids)
        exact += real_len == n
    assert exact == len(range(5, 400, 13))


def test_missing_tokenizer_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no tokenizer.json"):
        load_tokenizer(str(tmp_path))


def test_text_fallback_reports_the_real_length_without_whole_word_tokens(tmp_path: Path) -> None:
    """A byte-level tokenizer with no merges has no whole-word tokens: the fallback must
    still return text whose recorded length is what the tokenizer really gives."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok.train_from_iterator(["ab cd"], trainers.BpeTrainer(
        vocab_size=len(alphabet), initial_alphabet=alphabet))
    builder = PromptBuilder(tok, seed=3)
    assert builder._word_pieces() == []
    for n in (1, 10, 57):
        text, real_len = builder.text(n)
        assert real_len == len(tok.encode(text, add_special_tokens=False).ids)
        assert abs(real_len - n) <= max(2, n // 10)
