"""`splitserve demo-model`: prints the path, validates flags, keeps --help free of torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from splitserve import cli
from splitserve.demo import build as build_module


def test_demo_model_prints_the_cached_path(
    tiny_demo_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_rebuild(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("rebuilt")

    monkeypatch.setattr(build_module, "_build_into", no_rebuild)
    assert cli.main(["demo-model", "--out", str(tiny_demo_dir)]) == 0
    assert capsys.readouterr().out.strip() == str(tiny_demo_dir)


@pytest.mark.parametrize("seconds", ["-3", "abc", "inf", "nan"])
def test_bad_train_seconds_is_a_usage_error(
    seconds: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo-model", "--train-seconds", seconds])
    assert exc.value.code == 2
    assert "--train-seconds" in capsys.readouterr().err


def test_importing_the_verb_does_not_import_torch() -> None:
    code = (
        "import sys, splitserve.demo, splitserve.demo.cli; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], {"train_seconds": 180.0, "max_steps": 600, "num_threads": None}),
        (["--max-steps", "7"], {"train_seconds": 180.0, "max_steps": 7}),
        (["--max-steps", "7", "--train-seconds", "0"], {"train_seconds": None, "max_steps": 7}),
        (["--threads", "1", "--seed", "3"], {"num_threads": 1, "seed": 3}),
    ],
)
def test_flags_reach_the_builder(
    argv: list[str],
    expected: dict[str, object],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen: dict[str, object] = {}

    def fake_build(out_dir: Path, **kwargs: object) -> Path:
        seen.update(kwargs)
        return out_dir

    monkeypatch.setattr(build_module, "build_demo_model", fake_build)
    assert cli.main(["demo-model", "--out", str(tmp_path), *argv]) == 0
    assert {key: seen[key] for key in expected} == expected
    assert capsys.readouterr().out.strip() == str(tmp_path)


@pytest.mark.parametrize("flag", ["--max-steps", "--threads"])
def test_non_positive_counts_are_usage_errors(flag: str) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo-model", flag, "0"])
    assert exc.value.code == 2
