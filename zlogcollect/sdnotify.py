"""systemd's readiness protocol (sd_notify(3)): a datagram to ``$NOTIFY_SOCKET``, when it is set.

A unit with ``Type=notify`` counts the service as started only on ``READY=1``;
``RELOADING=1`` and ``STOPPING=1`` show in ``systemctl status``. Standard library
only: the protocol is one datagram per message, so no dependency is needed.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("zlogcollect")

READY = "READY=1"
STOPPING = "STOPPING=1"


def reloading() -> str:
    """``RELOADING=1`` with the monotonic time systemd 253 and later expect beside it."""
    return f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"


class Notifier:
    """Sends sd_notify messages to the socket named in *environ* (``NOTIFY_SOCKET``); a no-op without it.

    A path starting with ``@`` is an abstract socket. A failure to send is
    logged once and never raised: the collector works without systemd.
    """

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        name = environ.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if name.startswith("@"):
            self.address = "\0" + name[1:]
        elif name.startswith("/"):
            self.address = name
        elif name:
            log.warning("NOTIFY_SOCKET=%r is not a Unix socket path; not notifying systemd", name[:200])
        self._warned = False

    def notify(self, message: str) -> bool:
        """Send *message* (``KEY=VALUE`` lines); True if it was sent."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall(message.encode("utf-8"))
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify systemd at NOTIFY_SOCKET (%s): %s", message.split("\n", 1)[0], exc)
            return False
        return True
