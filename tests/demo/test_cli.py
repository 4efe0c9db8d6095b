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


@pytest.mark.parametrize("seconds", ["0", "-3", "abc", "inf"])
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
