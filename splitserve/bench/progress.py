"""A progress line on stderr while a run goes: tqdm when it is installed, else plain text."""

from __future__ import annotations

import sys
import time
from typing import Any

from splitserve.bench.records import RequestRecord


class Progress:
    """Call with each finished record; `close()` when the run ends."""

    def __init__(self, total: int | None, desc: str, enabled: bool = True) -> None:
        self._enabled = enabled
        self._done = 0
        self._failed = 0
        self._total = total
        self._desc = desc
        self._last_print = 0.0
        self._bar: Any = None
        if enabled:
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total, desc=desc, unit="req", file=sys.stderr,
                                 leave=False)
            except ImportError:
                self._bar = None

    def __call__(self, record: RequestRecord) -> None:
        self._done += 1
        self._failed += not record.success
        if not self._enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix(failed=self._failed, refresh=False)
            self._bar.update(1)
            return
        now = time.monotonic()
        if now - self._last_print >= 0.5 or self._done == self._total:
            self._last_print = now
            total = "?" if self._total is None else str(self._total)
            sys.stderr.write(f"\r{self._desc}: {self._done}/{total} done, {self._failed} failed")
            sys.stderr.flush()

    def close(self) -> None:
        if not self._enabled:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            sys.stderr.write("\n")
            sys.stderr.flush()
