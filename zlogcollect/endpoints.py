"""Binding a ZeroMQ socket to its endpoints, with one-line errors (the collector's SUB, ``--publish``'s XPUB)."""

from __future__ import annotations

from collections.abc import Sequence

import zmq

from zlogcollect.helpers import ipc_in_use


class BindError(Exception):
    """An endpoint could not be bound; the message is one line for stderr."""


def bind_all(sock: zmq.Socket[bytes], endpoints: Sequence[str], what: str = "") -> list[str]:
    """Bind *sock* to every endpoint; return them as bound (a ``:0`` or ``*`` port resolved).

    A live ``ipc://`` path is refused: libzmq would unlink it and silently take
    the endpoint from the process listening there. *what* names the socket in
    the message (``publish``). Raises :class:`BindError` at the first failure;
    the caller closes the socket.
    """
    suffix = f" ({what})" if what else ""
    bound: list[str] = []
    for endpoint in endpoints:
        if endpoint.startswith("ipc://") and ipc_in_use(endpoint[len("ipc://") :]):
            raise BindError(
                f"cannot bind {endpoint}{suffix}: Address already in use (another process listens there)"
            )
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise BindError(f"cannot bind {endpoint}{suffix}: {exc.strerror}") from None
        bound.append(sock.getsockopt_string(zmq.LAST_ENDPOINT))
    return bound
