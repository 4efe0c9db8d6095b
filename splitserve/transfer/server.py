"""KVServer: the prefill worker's end of the KV handoff (TCP, optionally shared memory)."""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Sequence

from splitserve.thread_names import name_this_thread
from splitserve.transfer.buffers import LayerBuffer, byte_view, checked_reader
from splitserve.transfer.errors import TransferError
from splitserve.transfer.faults import FaultInjection
from splitserve.transfer.handshake import DTYPE_ITEM_BYTES, ModelIdentity
from splitserve.transfer.record import RECORD_VERSION, HandoffRecord
from splitserve.transfer.registry import SHUTDOWN, UNREGISTERED, Entry, Registry, ReleaseCallback
from splitserve.transfer.shm import ShmExport, local_host_id, shm_supported
from splitserve.transfer.source_session import SessionContext, serve_pull
from splitserve.transfer.wire import tune_socket

logger = logging.getLogger(__name__)


class KVServer:
    """Serves registered requests' KV to authenticated sinks, one request per connection.

    Call order: construct (binds `host:port`, 127.0.0.1 by default; give `advertise_host`
    when binding a wildcard for other hosts; starts the accept, expiry and connection threads),
    `register` each finished prefill, hand the returned record to the router; `on_release`
    fires exactly once per registered request; `close()` releases what is left (reason
    "shutdown") and joins every thread. Buffers and `read_layer` are read from server
    threads until the request is released, so they must stay valid and unchanged until then.
    """

    def __init__(
        self,
        identity: ModelIdentity,
        secret: bytes | str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        advertise_host: str | None = None,
        worker_id: str = "",
        on_release: ReleaseCallback | None = None,
        shm_enabled: bool = True,
        shm_export_at_register: bool = False,
        io_timeout_s: float = 30.0,
        faults: FaultInjection | None = None,
    ) -> None:
        self.identity = identity
        self._secret = secret.encode() if isinstance(secret, str) else bytes(secret)
        if not self._secret:
            raise ValueError("the cluster secret must not be empty")
        if io_timeout_s <= 0:
            raise ValueError(f"io_timeout_s must be > 0, got {io_timeout_s}")
        self.worker_id = worker_id
        self._shm_host_id = local_host_id() if shm_enabled and shm_supported() else None
        self._shm_at_register = shm_export_at_register and self._shm_host_id is not None
        self._io_timeout_s = io_timeout_s
        self._faults = faults if faults is not None else FaultInjection.from_env()
        self._registry = Registry(on_release)
        self._stop = threading.Event()
        self._conn_lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._listener = socket.create_server((host, port))
        self._listener.settimeout(0.1)
        bound_host, bound_port = self._listener.getsockname()[:2]
        # Records must name an address other hosts can reach, not 0.0.0.0.
        public_host = advertise_host or bound_host
        bracketed = f"[{public_host}]" if ":" in public_host else public_host
        self.address = f"{bracketed}:{bound_port}"
        self._threads = [
            threading.Thread(target=self._accept_loop, name="kv-accept", daemon=True),
            threading.Thread(target=self._expiry_loop, name="kv-expiry", daemon=True),
        ]
        self._session_context = SessionContext(
            identity=identity,
            secret=self._secret,
            registry=self._registry,
            faults=self._faults,
            shm_offered=self._shm_host_id is not None,
            stop=self._stop,
        )
        for thread in self._threads:
            thread.start()

    # ---- engine-facing API -------------------------------------------------------------

    def register(
        self,
        request_id: str,
        *,
        block_ids: Sequence[int],
        num_tokens: int,
        expires_at: float,
        layers: Sequence[LayerBuffer] | None = None,
        read_layer: Callable[[int], LayerBuffer] | None = None,
    ) -> HandoffRecord:
        """Hold one request's KV until released; return the record the sink pulls with.

        Give either `layers` (one contiguous buffer per layer: the request's blocks in
        `block_ids` order) or `read_layer(layer)` returning that buffer on demand.
        """
        if (layers is None) == (read_layer is None):
            raise ValueError("give exactly one of layers or read_layer")
        shape = self.identity.block_shape
        item_bytes = DTYPE_ITEM_BYTES[self.identity.dtype]
        record = HandoffRecord(
            version=RECORD_VERSION,
            request_id=request_id,
            source_worker_id=self.worker_id,
            tcp_address=self.address,
            shm_host_id=self._shm_host_id,
            num_layers=self.identity.num_layers,
            block_ids=tuple(block_ids),
            num_tokens=num_tokens,
            bytes_per_layer=len(block_ids) * math.prod(shape) * item_bytes,
            dtype=self.identity.dtype,
            block_shape=shape,
            model_hash=self.identity.model_hash,
            expires_at=expires_at,
        )
        if layers is not None:
            if len(layers) != record.num_layers:
                raise ValueError(f"got {len(layers)} layers, the model has {record.num_layers}")
            views = [byte_view(buffer) for buffer in layers]
            for layer, view in enumerate(views):
                if view.nbytes != record.bytes_per_layer:
                    raise ValueError(
                        f"layer {layer} holds {view.nbytes} bytes, expected "
                        f"{record.bytes_per_layer}"
                    )
            reader: Callable[[int], memoryview] = views.__getitem__
        else:
            assert read_layer is not None
            reader = checked_reader(read_layer, record.bytes_per_layer)
        entry = Entry(request_id, record.num_layers, record.bytes_per_layer, reader, expires_at)
        if self._shm_at_register:
            entry.shm = ShmExport(record.num_layers, record.bytes_per_layer, reader)
        try:
            self._registry.add(entry)
        except ValueError:
            if entry.shm is not None:
                entry.shm.unlink()
            raise
        return record

    def unregister(self, request_id: str) -> bool:
        """Abort: release now (or when an in-flight pull ends). False if not held."""
        return self._registry.release(request_id, UNREGISTERED)

    @property
    def num_registered(self) -> int:
        return len(self._registry)

    def close(self) -> None:
        """Stop serving, release every held request ("shutdown"), join all threads."""
        if self._stop.is_set():
            return
        self._stop.set()
        with self._registry.changed:
            self._registry.changed.notify_all()
        for thread in self._threads:
            thread.join()
        self._listener.close()
        with self._conn_lock:
            connections = list(self._connections.items())
        for conn, _ in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for _, thread in connections:
            thread.join()
        self._registry.release_all(SHUTDOWN)

    def __enter__(self) -> KVServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- threads -----------------------------------------------------------------------

    def _accept_loop(self) -> None:
        name_this_thread()
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                raise
            thread = threading.Thread(target=self._serve, args=(conn,), name="kv-conn", daemon=True)
            with self._conn_lock:
                self._connections[conn] = thread
            thread.start()

    def _expiry_loop(self) -> None:
        name_this_thread()
        while not self._stop.is_set():
            next_deadline = self._registry.expire_due()
            wait_s = 1.0 if next_deadline is None else next_deadline - time.time()
            with self._registry.changed:
                if not self._stop.is_set():
                    self._registry.changed.wait(timeout=min(max(wait_s, 0.001), 1.0))

    def _serve(self, conn: socket.socket) -> None:
        name_this_thread()
        try:
            conn.settimeout(self._io_timeout_s)
            tune_socket(conn)
            serve_pull(conn, self._session_context)
        except (OSError, TransferError) as exc:
            logger.info("KV connection ended: %s", exc)
        except Exception:
            logger.exception("KV connection failed")
        finally:
            conn.close()
            with self._conn_lock:
                self._connections.pop(conn, None)
