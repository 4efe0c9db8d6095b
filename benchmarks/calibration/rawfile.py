"""The calibration's files: the raw measurement (read, merged from pieces, written
compactly, gzipped when the name ends in .gz) and the shared CPU lock its measuring phases
hold."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import gzip
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.calibration.setup import Setup


@contextlib.contextmanager
def cpu_lock(path: str | None) -> Iterator[None]:
    if path is None:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def load_json(path: str | Path) -> Any:
    """A JSON file, plain or gzipped (by its .gz suffix)."""
    path = Path(path)
    data = path.read_bytes()
    return json.loads(gzip.decompress(data) if path.suffix == ".gz" else data)


def dump_json(path: str | Path, value: Any,
              default: Callable[[Any], Any] | None = None) -> None:
    """Write compact JSON, gzipped if the name ends in .gz (mtime 0: the same content
    gives the same bytes); `default` serialises what JSON cannot (numpy scalars)."""
    path = Path(path)
    text = (json.dumps(value, default=default or json_default) + "\n").encode()
    path.write_bytes(gzip.compress(text, 9, mtime=0) if path.suffix == ".gz" else text)


def read_raw(path: str | Path) -> dict[str, Any]:
    """A raw measurement file, plain JSON or gzipped (`*_raw.json.gz`: the committed raw
    files are ~7x smaller so)."""
    raw = load_json(path)
    if not isinstance(raw, dict) or "topologies" not in raw or "setup" not in raw:
        raise ValueError(f"{path} is not a calibration raw file (no setup / topologies)")
    return raw


def write_raw(path: str | Path, raw: dict[str, Any]) -> None:
    """Write a raw file compactly (floats to 1 us), gzipped if the name ends in .gz."""
    dump_json(path, rounded(raw))


def raw_path_for(out: str | Path) -> Path:
    """The raw file written beside an analysed result `out`: <stem>_raw.json.gz."""
    out = Path(out)
    return out.with_name(out.stem + "_raw.json.gz")


def merge_raw(raws: list[dict[str, Any]]) -> dict[str, Any]:
    """One raw file from several measured in pieces (e.g. one topology each, the later
    ones with `--profile-from` the first): the first one's profile, every topology."""
    first = raws[0]
    for other in raws[1:]:
        if other["profile"] != first["profile"]:
            raise ValueError("raw files to merge must share one profile (use --profile-from)")
        mine = {k: v for k, v in other["setup"].items() if k != "topologies"}
        if mine != {k: v for k, v in first["setup"].items() if k != "topologies"}:
            raise ValueError("raw files to merge must share one setup (topologies aside)")
    topologies = [t for raw in raws for t in raw["topologies"]]
    names = [t["topology"] for t in topologies]
    if len(set(names)) != len(names):
        raise ValueError(f"a topology appears in more than one raw file: {names}")
    setup = {**first["setup"], "topologies": names}
    return {**first, "setup": setup, "topologies": topologies,
            "command": " && ".join(raw.get("command", "") for raw in raws),
            "measured_at": max(raw.get("measured_at") or "" for raw in raws)}


def setup_from_dict(data: dict[str, Any]) -> Setup:
    """The Setup a raw file was measured with (JSON lists back to tuples)."""
    fields = {f.name for f in dataclasses.fields(Setup)}
    given: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                             for k, v in data.items() if k in fields}
    return Setup(**given)


def rounded(value: Any, digits: int = 6) -> Any:
    """`value` with every float rounded to `digits` decimals (1 us: the raw file holds
    ~20 times per request; full float repr doubles its size for no information)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


def json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")
