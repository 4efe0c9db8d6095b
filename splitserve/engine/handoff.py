"""P/D handoff lifecycle: one small state machine per request on each side (pure).

Prefill side:  PREFILLING -> HELD(lease until T) -> RELEASED
    RELEASED happens exactly once, on the first of: decode's ack, abort, lease expiry
    (or the engine finishing the request on its first token). Later release attempts are
    no-ops that return False, so an ack racing an expiry frees nothing twice.

Decode side:   RESERVED -> RECEIVING -> VERIFIED -> DECODING -> FINISHED
    any non-terminal state -> ABORTED or FAILED (a transfer that failed, timed out or
    did not verify; or an engine error while decoding)
    Nothing decodes before VERIFIED (the scheduler only activates a VERIFIED request).

The machines hold no blocks; the scheduler moves its sequences along them and frees
blocks only when a transition that ends the lifecycle succeeds. An illegal transition
raises IllegalTransition: it is a bug or a peer breaking the protocol, never ignored.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class IllegalTransition(RuntimeError):
    """A handoff event arrived in a state that does not allow it."""


class PrefillState(enum.Enum):
    PREFILLING = "prefilling"
    HELD = "held"
    RELEASED = "released"


class ReleaseReason(enum.Enum):
    ACKED = "acked"  # the decode worker confirmed it has the KV
    ABORTED = "aborted"
    EXPIRED = "expired"  # the lease ran out before any ack
    FINISHED = "finished"  # the request ended on its first token; nothing to hand off


class DecodeState(enum.Enum):
    RESERVED = "reserved"
    RECEIVING = "receiving"
    VERIFIED = "verified"
    DECODING = "decoding"
    FINISHED = "finished"
    ABORTED = "aborted"
    FAILED = "failed"


_DECODE_NEXT: dict[DecodeState, frozenset[DecodeState]] = {
    DecodeState.RESERVED: frozenset(
        {DecodeState.RECEIVING, DecodeState.ABORTED, DecodeState.FAILED}
    ),
    DecodeState.RECEIVING: frozenset(
        {DecodeState.VERIFIED, DecodeState.ABORTED, DecodeState.FAILED}
    ),
    DecodeState.VERIFIED: frozenset(
        {DecodeState.DECODING, DecodeState.ABORTED, DecodeState.FAILED}
    ),
    # FAILED from DECODING: the engine itself failed mid-decode (e.g. a model error).
    DecodeState.DECODING: frozenset(
        {DecodeState.FINISHED, DecodeState.ABORTED, DecodeState.FAILED}
    ),
    DecodeState.FINISHED: frozenset(),
    DecodeState.ABORTED: frozenset(),
    DecodeState.FAILED: frozenset(),
}

DECODE_TERMINAL = frozenset({DecodeState.FINISHED, DecodeState.ABORTED, DecodeState.FAILED})


@dataclass
class PrefillHandoff:
    """Prefill-side lifecycle of one prefill-only request."""

    request_id: str
    state: PrefillState = PrefillState.PREFILLING
    lease_deadline_s: float | None = None
    release_reason: ReleaseReason | None = None

    def hold(self, now_s: float, lease_s: float) -> None:
        """Prompt computed and first token sampled: pin the KV until now_s + lease_s."""
        if self.state is not PrefillState.PREFILLING:
            raise IllegalTransition(f"{self.request_id}: hold in state {self.state.value}")
        if not lease_s > 0:
            raise ValueError(f"lease_s must be > 0, got {lease_s}")
        self.state = PrefillState.HELD
        self.lease_deadline_s = now_s + lease_s

    def release(self, reason: ReleaseReason) -> bool:
        """Move to RELEASED; True only the first time (the caller frees blocks then).

        An ack or an expiry needs HELD: acking a request still prefilling is a protocol
        error. Abort and finish are accepted while prefilling too.
        """
        if self.state is PrefillState.RELEASED:
            return False
        needs_held = reason in (ReleaseReason.ACKED, ReleaseReason.EXPIRED)
        if needs_held and self.state is not PrefillState.HELD:
            raise IllegalTransition(
                f"{self.request_id}: {reason.value} in state {self.state.value}"
            )
        self.state = PrefillState.RELEASED
        self.release_reason = reason
        return True

    def is_expired(self, now_s: float) -> bool:
        deadline = self.lease_deadline_s
        return self.state is PrefillState.HELD and deadline is not None and now_s >= deadline


@dataclass
class DecodeHandoff:
    """Decode-side lifecycle of one request whose prompt KV comes from a prefill worker."""

    request_id: str
    state: DecodeState = DecodeState.RESERVED

    @property
    def is_terminal(self) -> bool:
        return self.state in DECODE_TERMINAL

    def advance(self, new_state: DecodeState) -> None:
        if new_state not in _DECODE_NEXT[self.state]:
            raise IllegalTransition(
                f"{self.request_id}: {self.state.value} -> {new_state.value} is not allowed"
            )
        self.state = new_state

    def abort(self) -> bool:
        """ABORTED from any live state; False (no-op) once terminal. Idempotent."""
        if self.is_terminal:
            return False
        self.advance(DecodeState.ABORTED)
        return True
