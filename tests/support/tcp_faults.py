"""A broker that misbehaves on demand: a real TCP endpoint on 127.0.0.1 in front of the real Redis.

Used by ``tests/service/test_broker_faults.py`` and ``bench/hung_broker_probe.py``.

Modes: ``"hung"`` accepts connections and never answers — what a wedged Redis, or a half-open
path through a firewall, looks like to a client (connect succeeds, every command waits); ``"up"``
forwards bytes both ways to the real Redis. Switching closes every open connection, as a broker
restart would, so clients reconnect into the new mode.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Literal

Mode = Literal["hung", "up"]


class SwitchableBroker:
    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 6379), mode: Mode = "hung"):
        self.upstream = upstream
        self._mode: Mode = mode
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept_loop, name="broker-fault", daemon=True).start()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def mode(self) -> Mode:
        return self._mode

    def set_mode(self, mode: Mode) -> None:
        with self._lock:
            self._mode = mode
            self._close_all()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            self._close_all()

    def __enter__(self) -> SwitchableBroker:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _close_all(self) -> None:
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._open.clear()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # the listener was closed
            with self._lock:
                self._open.add(client)
                if self._mode == "hung":
                    continue  # hold it open, read nothing, answer nothing
                try:
                    server = socket.create_connection(self.upstream, timeout=5)
                except OSError:
                    self._open.discard(client)
                    client.close()
                    continue
                server.settimeout(None)
                self._open.add(server)
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(source, target), daemon=True).start()


def _pump(source: socket.socket, target: socket.socket) -> None:
    """Copy bytes until either side closes, then close both."""
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    for sock in (source, target):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
