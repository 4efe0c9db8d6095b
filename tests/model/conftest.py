from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from splitserve.model import load_model
from tests.model.tiny import VARIANTS, load_hf, make_tiny_checkpoint

ARCHS = sorted(VARIANTS)


class TinyModels:
    """Session cache: each variant is built, saved and loaded (ours and HF's) once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._dirs: dict[str, Path] = {}
        self._loaded: dict[str, tuple[Any, Any, Any]] = {}

    def path(self, arch: str) -> Path:
        if arch not in self._dirs:
            self._dirs[arch] = make_tiny_checkpoint(arch, self.root / arch)
        return self._dirs[arch]

    def get(self, arch: str) -> tuple[Any, Any, Any]:
        """(our config, our model, HF model)."""
        if arch not in self._loaded:
            config, model = load_model(self.path(arch))
            self._loaded[arch] = (config, model, load_hf(self.path(arch)))
        return self._loaded[arch]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    return TinyModels(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture(scope="package", autouse=True)
def single_thread_torch() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and on a shared busy machine the
    thread pool's spinning made these tests ~20x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
