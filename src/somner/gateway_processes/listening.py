"""Listening sockets, which several gateway processes may share (SO_REUSEPORT), and the check that a port is
free."""

from __future__ import annotations

import socket


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn chooses it for a host string


def listening_socket(host: str, port: int, *, shared: bool, backlog: int = 2048) -> socket.socket:
    """A non-blocking socket listening on `host:port`. `shared`: other processes of this user may also listen on
    it, and the kernel spreads new connections over all of them. Raises OSError (e.g. the port is taken)."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def port_taken(host: str, port: int) -> str | None:
    """Why `host:port` cannot be ours, or None when nothing listens there.

    The probe binds without SO_REUSEPORT, so it also fails on a port that another `somner serve --workers` (whose
    sockets would otherwise accept ours into their group) listens on. SO_REUSEADDR keeps a port whose earlier
    connections linger in TIME_WAIT usable, as uvicorn's own bind does.
    """
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None
