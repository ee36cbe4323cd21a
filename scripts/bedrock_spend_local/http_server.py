"""The threaded HTTP server both local servers (API Gateway, Bedrock emulator) run on."""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

logger = logging.getLogger(__name__)


class TrackingHTTPServer(ThreadingHTTPServer):
    """Keeps the open connections so a stop can wake handler threads idling on keep-alive."""

    daemon_threads = True
    name = "server"
    # Many clients (tests and benchmarks use 32) connect at once; the default backlog is 5.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        # Small request/response pairs on keep-alive connections otherwise wait for the
        # peer's delayed ACK (about 40 ms on Linux) before each answer goes out.
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection, address

    def track(self, connection: socket.socket, active: bool) -> None:
        with self._connections_lock:
            (self._connections.add if active else self._connections.discard)(connection)

    def close_connections(self) -> None:
        """Wake handler threads waiting on idle keep-alive connections so they end."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # the client went away
        logger.exception("%s request from %s failed", self.name, client_address)
