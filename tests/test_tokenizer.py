"""splitserve.tokenizer against transformers.AutoTokenizer on locally built tokenizer folders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from splitserve.tokenizer import load_tokenizer
from tests.router.tokenizer_fixtures import build_chatml_like, build_llama3_like

TEXTS = [
    "The quick brown fox",
    "  leading spaces and trailing  ",
    "Caf\u00e9 \u65e5\u672c\u8a9e \U0001f600 unseen-words zxqv",
    "special <|eot_id|> inside <|im_end|> text",
    "",
]

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello there! \u00e9"},
    {"role": "assistant", "content": "Hi."},
    {"role": "user", "content": "How do I split prefill and decode?"},
]


@pytest.fixture(scope="module", params=["llama3", "chatml"])
def tokenizer_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "llama3":
        return build_llama3_like(root)
    return build_chatml_like(root)


def _hf(tokenizer_dir: Path):  # type: ignore[no-untyped-def]
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir))


def test_encode_decode_match_transformers(tokenizer_dir: Path) -> None:
    ours, ref = load_tokenizer(tokenizer_dir), _hf(tokenizer_dir)
    for text in TEXTS:
        for add_special in (True, False):
            ids = ours.encode(text, add_special_tokens=add_special)
            assert ids == ref.encode(text, add_special_tokens=add_special), (text, add_special)
            for skip in (True, False):
                assert ours.decode(ids, skip_special_tokens=skip) == ref.decode(
                    ids, skip_special_tokens=skip
                )


def test_chat_template_matches_transformers(tokenizer_dir: Path) -> None:
    ours, ref = load_tokenizer(tokenizer_dir), _hf(tokenizer_dir)
    for convo in (MESSAGES, MESSAGES[1:2]):
        for gen_prompt in (True, False):
            expected = ref.apply_chat_template(
                convo, tokenize=False, add_generation_prompt=gen_prompt
            )
            assert ours.apply_chat_template(convo, add_generation_prompt=gen_prompt) == expected
    rendered = ours.apply_chat_template(MESSAGES)
    assert ours.encode(rendered, add_special_tokens=False) == ref.apply_chat_template(
        MESSAGES, tokenize=True, add_generation_prompt=True, return_dict=False
    )


def test_special_ids_match_transformers(tokenizer_dir: Path) -> None:
    ours, ref = load_tokenizer(tokenizer_dir), _hf(tokenizer_dir)
    assert ours.bos_token_id == ref.bos_token_id
    assert ref.eos_token_id in ours.eos_token_ids
    assert ours.vocab_size == len(ref)


def test_generation_config_eos_list_is_used(tmp_path: Path) -> None:
    tok = load_tokenizer(build_llama3_like(tmp_path))
    expected = [tok.backend.token_to_id("<|end_of_text|>"), tok.backend.token_to_id("<|eot_id|>")]
    assert tok.eos_token_ids == expected


def test_template_raise_exception_surfaces(tmp_path: Path) -> None:
    tok = load_tokenizer(build_llama3_like(tmp_path))
    with pytest.raises(Exception, match="unknown role tool"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}])


def test_template_sandbox_blocks_attribute_escape(tmp_path: Path) -> None:
    import jinja2

    from splitserve.tokenizer import Tokenizer

    tok = load_tokenizer(build_llama3_like(tmp_path))
    evil = Tokenizer(
        backend=tok.backend,
        special_tokens=tok.special_tokens,
        chat_template="{{ messages.__class__.__mro__ }}",
        eos_token_ids=tok.eos_token_ids,
        bos_token_id=tok.bos_token_id,
        model_max_length=None,
    )
    with pytest.raises(jinja2.exceptions.SecurityError):
        evil.apply_chat_template(MESSAGES)


def test_missing_tokenizer_json_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tokenizer.json"):
        load_tokenizer(tmp_path)


def test_tokenizer_module_does_not_import_torch() -> None:
    code = "import sys, splitserve.tokenizer; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
