"""Torch-free tokenizer wrapper over a HF checkpoint folder.

Reads `tokenizer.json` (the `tokenizers` library does the work), `tokenizer_config.json`
(special tokens, `add_bos_token` / `add_eos_token`, chat template, `model_max_length`) and,
if present, `generation_config.json` (`eos_token_id`). Encoding, decoding and chat templates
match `transformers.AutoTokenizer` on the same folder; the router uses this so that it
never loads torch or transformers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer as _HFTokenizer
from tokenizers import processors

_SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")


def _token_content(value: object, key: str) -> str | None:
    """A special token is a string or an AddedToken dict (`{"content": ..., ...}`)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"tokenizer_config.json: {key} must be a string or AddedToken dict, got {value!r}")


def _select_chat_template(raw: object) -> str | None:
    """HF stores one template as a string, or several as `[{"name", "template"}]`."""
    if raw is None or isinstance(raw, str):
        return raw
    if isinstance(raw, list):
        named = {item["name"]: item["template"] for item in raw if isinstance(item, dict)}
        if "default" in named:
            return str(named["default"])
        raise ValueError(f"chat_template list has no 'default' entry (names: {sorted(named)})")
    raise ValueError(f"chat_template must be a string or a list of named templates, got {raw!r}")


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson escapes HTML characters; chat templates expect plain JSON.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _compile_template(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(source)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


@dataclass
class Tokenizer:
    """Encode / decode / chat template for one checkpoint. Build with `load_tokenizer`."""

    backend: _HFTokenizer
    special_tokens: dict[str, str]
    chat_template: str | None
    eos_token_ids: list[int]
    bos_token_id: int | None
    model_max_length: int | None

    def __post_init__(self) -> None:
        self._template: jinja2.Template | None = (
            _compile_template(self.chat_template) if self.chat_template else None
        )

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can produce, added tokens included."""
        return int(self.backend.get_vocab_size(with_added_tokens=True))

    @property
    def bos_token(self) -> str | None:
        return self.special_tokens.get("bos_token")

    @property
    def eos_token(self) -> str | None:
        return self.special_tokens.get("eos_token")

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.backend.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return str(self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def id_to_token(self, token_id: int) -> str | None:
        token = self.backend.id_to_token(token_id)
        return None if token is None else str(token)

    def apply_chat_template(
        self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True
    ) -> str:
        """Render `messages` with the checkpoint's template, as HF does (no tokenization).

        The rendered text already holds any BOS the template writes, so encode it with
        `add_special_tokens=False`.
        """
        if self._template is None:
            raise ValueError("this checkpoint has no chat_template in tokenizer_config.json")
        if not messages:
            raise ValueError("cannot apply the chat template to an empty conversation")
        # HF drops keys whose value is None before rendering.
        chat = [{k: v for k, v in m.items() if v is not None} for m in messages]
        return self._template.render(
            messages=chat,
            tools=None,
            documents=None,
            add_generation_prompt=add_generation_prompt,
            **self.special_tokens,
        )


def _token_id(backend: _HFTokenizer, token: str | None) -> int | None:
    if token is None:
        return None
    token_id = backend.token_to_id(token)
    return None if token_id is None else int(token_id)


def _maybe_override_post_processor(
    backend: _HFTokenizer, config: dict[str, Any], special: dict[str, str]
) -> None:
    """HF rewrites the post-processor when `add_bos_token`/`add_eos_token` are set explicitly
    (or when tokenizer.json has none); otherwise tokenizer.json's own post-processor rules."""
    explicit = "add_bos_token" in config or "add_eos_token" in config
    if not explicit and backend.post_processor is not None:
        return
    add_bos = bool(config.get("add_bos_token", False)) and "bos_token" in special
    add_eos = bool(config.get("add_eos_token", False)) and "eos_token" in special
    bos, eos = special.get("bos_token", ""), special.get("eos_token", "")
    single = f"{bos + ':0 ' if add_bos else ''}$A:0{' ' + eos + ':0' if add_eos else ''}"
    pair = f"{single}{' ' + bos + ':1' if add_bos else ''} $B:1{' ' + eos + ':1' if add_eos else ''}"
    tokens: list[tuple[str, int]] = []
    for flag, name in ((add_bos, bos), (add_eos, eos)):
        if flag:
            token_id = _token_id(backend, name)
            if token_id is None:
                raise ValueError(f"special token {name!r} is not in the vocabulary")
            tokens.append((name, token_id))
    backend.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=tokens
    )


def _eos_ids(backend: _HFTokenizer, eos: str | None, generation: dict[str, Any]) -> list[int]:
    raw = generation.get("eos_token_id")
    if isinstance(raw, int):
        return [raw]
    if isinstance(raw, list) and all(isinstance(x, int) for x in raw):
        return list(raw)
    if raw is not None:
        raise ValueError(f"generation_config.json: eos_token_id must be int or list, got {raw!r}")
    eos_id = _token_id(backend, eos)
    return [] if eos_id is None else [eos_id]


def load_tokenizer(model_dir: str | Path) -> Tokenizer:
    """Load the tokenizer of a HF checkpoint folder; ValueError names what is missing."""
    root = Path(model_dir)
    tokenizer_file = root / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise ValueError(f"{root}: no tokenizer.json (only fast tokenizers are supported)")
    backend = _HFTokenizer.from_file(str(tokenizer_file))
    config = _read_json(root / "tokenizer_config.json")
    generation = _read_json(root / "generation_config.json")
    special: dict[str, str] = {}
    for key in _SPECIAL_TOKEN_KEYS:
        content = _token_content(config.get(key), key)
        if content is not None:
            special[key] = content
    _maybe_override_post_processor(backend, config, special)
    max_len = config.get("model_max_length")
    template = _select_chat_template(config.get("chat_template"))
    if template is None and (root / "chat_template.jinja").is_file():
        # transformers >= 4.50 saves the template beside the config.
        template = (root / "chat_template.jinja").read_text(encoding="utf-8")
    return Tokenizer(
        backend=backend,
        special_tokens=special,
        chat_template=template,
        eos_token_ids=_eos_ids(backend, special.get("eos_token"), generation),
        bos_token_id=_token_id(backend, special.get("bos_token")),
        # HF writes a huge sentinel (1e30) when the length is unknown.
        model_max_length=int(max_len) if isinstance(max_len, int) and max_len < 10**9 else None,
    )

