"""Same-host shared-memory segments holding one request's KV, layer after layer.

The source creates a segment (`multiprocessing.shared_memory`, mode 0600, random name),
copies the layers in and records their checksums; the segment name is only told to an
authenticated client. The source unlinks it when the request is released (ack, expiry,
unregister, server close): the registry owns that single path, so every exit unlinks.
If the source process dies without unlinking, multiprocessing's resource tracker does.

The sink maps the segment read-only straight from /dev/shm instead of through
`SharedMemory`: on Python < 3.13 attaching via `SharedMemory` registers the segment with
the sink's resource tracker, which would unlink it (or warn) at the sink's exit.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import secrets
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing import shared_memory

from splitserve.transfer.checksum import kv_checksum

SHM_DIR = "/dev/shm"
SHM_PREFIX = "sskv_"


def segment_prefix(pid: int | None = None) -> str:
    """Names carry the creating process id, so a leak points at its owner."""
    return f"{SHM_PREFIX}{os.getpid() if pid is None else pid}_"


def shm_supported() -> bool:
    return os.path.isdir(SHM_DIR)


def local_host_id() -> str:
    """Identifies the shared-memory namespace of this host: same id <=> same /dev/shm.

    Boot id + hostname + the /dev/shm mount's device and inode, so two containers on one
    machine with separate /dev/shm mounts do not mistake each other for local.
    """
    parts = [socket.gethostname()]
    try:
        with open("/proc/sys/kernel/random/boot_id") as boot_file:
            parts.append(boot_file.read().strip())
        stat = os.stat(SHM_DIR)
        parts.append(f"{stat.st_dev}:{stat.st_ino}")
    except OSError:
        return ""
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


class ShmExport:
    """A shared-memory copy of one request's layers (source side)."""

    def __init__(
        self, num_layers: int, bytes_per_layer: int, read_layer: Callable[[int], memoryview]
    ) -> None:
        self.bytes_per_layer = bytes_per_layer
        self.layer_offsets = [layer * bytes_per_layer for layer in range(num_layers)]
        segment = shared_memory.SharedMemory(
            name=segment_prefix() + secrets.token_hex(12),
            create=True,
            size=max(1, num_layers * bytes_per_layer),
        )
        self._segment: shared_memory.SharedMemory | None = segment
        self.name = segment.name
        self.checksums: list[int] = []
        try:
            buffer = segment.buf
            assert buffer is not None
            for layer, offset in enumerate(self.layer_offsets):
                source = read_layer(layer)
                target = buffer[offset : offset + bytes_per_layer]
                target[:] = source
                self.checksums.append(kv_checksum(target))
                target.release()
        except BaseException:
            self.unlink()
            raise

    def flip_byte(self, layer: int) -> None:
        """Fault injection: corrupt the exported copy after it was checksummed."""
        buffer = self._segment.buf if self._segment is not None else None
        if buffer is not None and self.bytes_per_layer:
            offset = self.layer_offsets[layer] + self.bytes_per_layer // 2
            buffer[offset] ^= 0xFF

    def unlink(self) -> None:
        """Remove the segment; idempotent."""
        segment, self._segment = self._segment, None
        if segment is not None:
            segment.close()
            segment.unlink()


@contextmanager
def mapped_segment(name: str) -> Iterator[memoryview]:
    """Map segment `name` read-only for the duration of the block (sink side)."""
    if not name.startswith(SHM_PREFIX) or "/" in name or len(name) > 64:
        raise ValueError(f"refusing shared-memory name {name!r}")
    fd = os.open(os.path.join(SHM_DIR, name), os.O_RDONLY)
    try:
        # MAP_POPULATE maps every page up front: one kernel pass instead of a fault per page.
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        mapping = mmap.mmap(fd, os.fstat(fd).st_size, flags=flags, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    whole = memoryview(mapping)
    try:
        yield whole
    finally:
        whole.release()
        try:
            mapping.close()
        except BufferError:
            # A layer view outlived the block; the mapping goes when the last view does.
            pass
