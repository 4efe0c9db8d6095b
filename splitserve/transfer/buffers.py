"""Flat byte views over the layer buffers the engine hands to the KV server."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from splitserve.transfer.errors import TransferError

# What a layer may be handed over as: anything exposing a contiguous buffer we can view.
LayerBuffer = memoryview | bytes | bytearray | np.ndarray


def checked_reader(
    read_layer: Callable[[int], LayerBuffer], bytes_per_layer: int
) -> Callable[[int], memoryview]:
    def read(layer: int) -> memoryview:
        view = byte_view(read_layer(layer))
        if view.nbytes != bytes_per_layer:
            raise TransferError(
                f"read_layer({layer}) returned {view.nbytes} bytes, expected {bytes_per_layer}"
            )
        return view

    return read


def byte_view(buffer: LayerBuffer) -> memoryview:
    """A flat byte view of a contiguous buffer (never a silent copy)."""
    view = buffer.data if isinstance(buffer, np.ndarray) else memoryview(buffer)
    if not view.c_contiguous:
        raise ValueError("KV layer buffers must be C-contiguous")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view
