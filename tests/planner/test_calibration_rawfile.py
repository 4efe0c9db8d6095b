"""The calibration's raw files: gzipped or plain, read back as written."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.calibration.rawfile import raw_path_for, read_raw, write_raw

RAW = {"setup": {"rates": [2.0]}, "profile": {"x": 1},
       "topologies": [{"topology": "1P1D", "runs": [{"ttft_s": 0.1234567891,
                                                    "n": np.int64(3)}]}]}


@pytest.mark.parametrize("name", ["m_raw.json.gz", "m_raw.json"])
def test_raw_file_round_trips_rounded_to_the_microsecond(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    write_raw(path, RAW)
    back = read_raw(path)
    assert back["topologies"][0]["runs"][0] == {"ttft_s": 0.123457, "n": 3}
    assert back["setup"] == {"rates": [2.0]}
    is_gzip = path.read_bytes()[:2] == b"\x1f\x8b"
    assert is_gzip == name.endswith(".gz")


def test_gzipped_raw_is_deterministic_and_readable_by_gzip(tmp_path: Path) -> None:
    a, b = tmp_path / "a_raw.json.gz", tmp_path / "b_raw.json.gz"
    write_raw(a, RAW)
    write_raw(b, RAW)
    assert a.read_bytes() == b.read_bytes()  # no timestamp in the header: same bytes
    assert json.loads(gzip.decompress(a.read_bytes()))["profile"] == {"x": 1}


def test_a_file_that_is_not_a_raw_measurement_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_text(json.dumps({"rows": []}))
    with pytest.raises(ValueError, match="not a calibration raw file"):
        read_raw(path)


def test_the_raw_file_sits_beside_the_result() -> None:
    assert raw_path_for("out/planner_calibration_m9.json") == Path(
        "out/planner_calibration_m9_raw.json.gz")
