"""Incremental detokenization with stop handling, safe for multi-byte characters.

Text is produced with the prefix-offset / read-offset technique: each step decodes the short
window `ids[prefix_offset:]` and the window `ids[prefix_offset:read_offset]` that was already
emitted, and emits only what the longer one adds. Decoding a window (not single tokens) keeps
decoders that depend on the neighbouring token (leading-space rules) right, and a window
whose text ends in U+FFFD is an incomplete UTF-8 character (byte-level BPE split it), so
nothing is emitted until a later token completes it.

Stop strings are searched in the produced text. While streaming, the longest tail of the text
that is a proper prefix of some stop string is held back, so a client never receives text
that a later match cuts away; the held text is released as soon as it cannot start a match,
and at finish. Concatenating every delta gives exactly the final `text`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from tokenizers import Tokenizer

from splitserve.engine.sampling_params import SamplingParams

# How many prompt tokens the first window reaches back: enough context for decoders whose
# output depends on the previous token (vLLM uses the same number).
INITIAL_WINDOW_TOKENS = 5
_REPLACEMENT_CHAR = "\ufffd"


@dataclass(frozen=True)
class Finish:
    """Why a request ended: reason "stop" or "length"; stop_reason is the stop string or
    stop token id that matched (None for EOS and length)."""

    reason: str
    stop_reason: int | str | None = None


def check_stop(
    output_token_ids: Sequence[int],
    params: SamplingParams,
    eos_token_ids: Collection[int],
    num_prompt_tokens: int = 0,
    max_model_len: int | None = None,
) -> Finish | None:
    """Token-level stop check after the last token of `output_token_ids` was appended.

    Order: below `min_tokens` only the length limits apply; then EOS (unless ignore_eos)
    and `stop_token_ids` give "stop"; then `max_tokens` or prompt + output reaching
    `max_model_len` give "length". Stop strings are the detokenizer's job (they need text).
    """
    num_output = len(output_token_ids)
    if num_output == 0:
        return None
    if num_output >= params.min_tokens:
        last = output_token_ids[-1]
        if not params.ignore_eos and last in eos_token_ids:
            return Finish("stop", None)
        if last in params.stop_token_ids:
            return Finish("stop", last)
    if num_output >= params.max_tokens:
        return Finish("length", None)
    if max_model_len is not None and num_prompt_tokens + num_output >= max_model_len:
        return Finish("length", None)
    return None


def _held_back_len(text: str, stops: Sequence[str]) -> int:
    """Length of the longest tail of `text` that is a proper prefix of a stop string."""
    if not text:
        return 0
    last_char = text[-1]
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), best, -1):
            if stop[k - 1] == last_char and text.endswith(stop[:k]):
                best = k
                break
    return best


class IncrementalDetokenizer:
    """Turns one request's output tokens into text deltas, and decides when it stops.

    Call `append(token_id)` once per generated token, in order; it returns the text the
    client may receive now (possibly ""). After a call that finishes the request
    (`finished` is True) the returned delta already contains every held-back character;
    appending more is an error. `output_token_ids` resumes mid-sequence: the tokens are
    replayed silently, so a decode worker continues exactly where the prefill worker's
    deltas stopped.

    The token that triggers EOS / a stop token id stays in `token_ids` but its text is left
    out unless `include_stop_str_in_output`. `text` is the text delivered so far (the final
    output once finished).
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        prompt_token_ids: Sequence[int],
        params: SamplingParams,
        output_token_ids: Sequence[int] = (),
        eos_token_ids: Collection[int] = (),
        max_model_len: int | None = None,
    ) -> None:
        self._tokenizer = tokenizer
        self._params = params
        self._eos_token_ids = frozenset(eos_token_ids)
        self._max_model_len = max_model_len
        self._num_prompt_tokens = len(prompt_token_ids)
        # Decode window: ids[prefix_offset:read_offset] is already emitted text (context),
        # ids[read_offset:] is not yet emitted. Starts as the prompt's tail.
        self._ids: list[int] = list(prompt_token_ids[-INITIAL_WINDOW_TOKENS:])
        self._prefix_offset = 0
        self._read_offset = len(self._ids)
        self._produced = ""  # all stable text so far (before any cut)
        self._num_sent_chars = 0
        self.token_ids: list[int] = []
        self.finish: Finish | None = None
        for token_id in output_token_ids:
            if self.finish is not None:
                raise ValueError("output_token_ids continue past the end of the request")
            self.append(token_id)

    @property
    def finished(self) -> bool:
        return self.finish is not None

    @property
    def finish_reason(self) -> str | None:
        return self.finish.reason if self.finish is not None else None

    @property
    def stop_reason(self) -> int | str | None:
        return self.finish.stop_reason if self.finish is not None else None

    @property
    def text(self) -> str:
        return self._produced[: self._num_sent_chars]

    def append(self, token_id: int) -> str:
        """Add one generated token; return the new text the client may be sent."""
        if self.finish is not None:
            raise ValueError("append() after the request finished")
        self.token_ids.append(token_id)
        finish = check_stop(
            self.token_ids,
            self._params,
            self._eos_token_ids,
            self._num_prompt_tokens,
            self._max_model_len,
        )
        stopped_by_token = finish is not None and finish.reason == "stop"
        if not stopped_by_token or self._params.include_stop_str_in_output:
            self._ids.append(token_id)
        num_old_chars = len(self._produced)
        self._produced += self._decode_new(final=finish is not None)
        if self._params.stop and len(self.token_ids) >= self._params.min_tokens:
            string_finish = self._find_stop_string(num_old_chars)
            if string_finish is not None:
                finish = string_finish
        if finish is not None:
            self.finish = finish
            end = len(self._produced)
        elif self._params.stop and not self._params.include_stop_str_in_output:
            end = len(self._produced) - _held_back_len(self._produced, self._params.stop)
        else:
            end = len(self._produced)
        end = max(end, self._num_sent_chars)
        delta = self._produced[self._num_sent_chars : end]
        self._num_sent_chars = end
        return delta

    def _decode_new(self, final: bool) -> str:
        """Stable text added by ids[read_offset:]; with `final`, also an incomplete tail."""
        if self._read_offset >= len(self._ids):
            return ""
        skip = self._params.skip_special_tokens
        prefix_text = self._tokenizer.decode(
            self._ids[self._prefix_offset : self._read_offset], skip_special_tokens=skip
        )
        new_text = self._tokenizer.decode(
            self._ids[self._prefix_offset :], skip_special_tokens=skip
        )
        if len(new_text) <= len(prefix_text) or (
            new_text.endswith(_REPLACEMENT_CHAR) and not final
        ):
            return ""
        # The window now starts at the old read offset; drop what lies before it so the id
        # list stays a few tokens long however long the output grows.
        del self._ids[: self._read_offset]
        self._prefix_offset = 0
        self._read_offset = len(self._ids)
        return new_text[len(prefix_text) :]

    def _find_stop_string(self, num_old_chars: int) -> Finish | None:
        """Earliest stop-string match that ends in the newly produced text; cuts `_produced`.

        Only matches ending after `num_old_chars` count: older ones were seen (or skipped
        under min_tokens) before, and cutting there would retract text already sent.
        """
        best_pos = -1
        best_stop = ""
        for stop in self._params.stop:
            pos = self._produced.find(stop, max(0, num_old_chars - len(stop) + 1))
            if pos != -1 and (best_pos == -1 or pos < best_pos):
                best_pos, best_stop = pos, stop
        if best_pos == -1:
            return None
        end = best_pos + len(best_stop) if self._params.include_stop_str_in_output else best_pos
        self._produced = self._produced[:end]
        return Finish("stop", best_stop)
