"""Whether a server of the project can listen on a port: a taken one is named before it starts."""

from __future__ import annotations

import socket


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now (like servers do, ignoring connections closed
    moments ago)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True
