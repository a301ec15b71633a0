"""The app side's socket: context and XPUB creation, subscription detection, fork reset, close with linger.

Plain pyzmq only: the handler lives in apps, so this module never imports
gevent (a ``zmq.green`` context passed in by the app is used as it is).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Final, Protocol

import zmq

__all__ = ["CurveClient", "Publisher"]

_NOBLOCK: Final = zmq.NOBLOCK

# zmq objects a fork child inherited from its parent. The child must neither use nor
# close them (libzmq contexts do not survive fork), and letting the garbage collector
# destroy them would print ResourceWarnings, so the child keeps them until it exits.
_INHERITED: list[object] = []


class CurveClient(Protocol):
    """CURVE keys for a client socket (``keys.ClientCurve``): set on each socket before it connects."""

    def apply(self, socket: Any) -> None:
        """Set the server's public key and the client's key pair on *socket*."""


class Publisher:
    """One handler's socket and context, and whether a collector is subscribed.

    Given endpoints, it owns an XPUB socket (connected, or bound with *bind*) and,
    unless *context* is given, its context; given a socket, it only uses it.
    With *curve*, every socket it opens (a fork child's too) is a CURVE client.
    An XPUB socket hears subscriptions (``detects``); for any other socket a
    subscriber is assumed (``subscribed`` stays True). ``joins`` counts every
    subscription event :meth:`poll` read: the handler's own XPUB is verbose, so
    a collector that reconnects is counted again (the replay window's cue).

    Attributes the handler's hot path reads directly: ``socket`` and
    ``send_frame`` (an unbound send that skips the pyzmq wrapper where it can).
    """

    def __init__(
        self,
        target: Sequence[str] | zmq.Socket[Any],
        context: zmq.Context[Any] | None = None,
        *,
        bind: bool = False,
        sndhwm: int = 100_000,
        curve: CurveClient | None = None,
    ) -> None:
        self.subscriptions: set[bytes] = set()
        self._curve = curve
        self._bind = bind
        self._sndhwm = int(sndhwm)
        if isinstance(target, zmq.Socket):
            if curve is not None:
                raise ValueError(
                    "CURVE keys apply to the handler's own socket: set them on a socket you pass"
                )
            self.endpoints: tuple[str, ...] = ()
            self.owns_socket = False
            self.owns_context = False
            self._adopt(target)
            return
        self.endpoints = tuple(target)
        if not self.endpoints:
            raise ValueError("ZLogHandler needs at least one endpoint")
        self.owns_socket = True
        self.owns_context = context is None
        self._context_type: type[zmq.Context[Any]] = zmq.Context if context is None else type(context)
        self.ctx = context if context is not None else zmq.Context()
        try:
            self.open()
        except BaseException:
            if self.owns_context:
                self.ctx.term()
            raise

    def _adopt(self, sock: zmq.Socket[Any]) -> None:
        self.socket = sock
        self.joins = 0
        self.ctx = sock.context
        # Only an XPUB hears subscriptions; for any other socket assume someone listens.
        self.detects = sock.type == zmq.XPUB
        self.subscribed = not self.detects
        # The pyzmq wrapper's send() costs about 1 µs per frame in Python code that a
        # plain socket does not need; a zmq.green socket does need its own send().
        plain = type(sock) is zmq.Socket
        self.send_frame: Any = zmq.backend.Socket.send if plain else type(sock).send

    def open(self) -> None:
        """Create the XPUB socket on the endpoints (a fork child's first record calls it again)."""
        sock: zmq.Socket[Any] = self.ctx.socket(zmq.XPUB)
        try:
            sock.set(zmq.SNDHWM, self._sndhwm)
            # Beyond the HWM, send() then fails with EAGAIN instead of dropping in
            # silence, which is how drops get counted.
            sock.set(zmq.XPUB_NODROP, 1)
            # Every subscription, not just the first to a prefix: a collector that
            # comes back on the same connection subscribes again, and that is heard.
            sock.set(zmq.XPUB_VERBOSE, 1)
            if self._curve is not None:
                self._curve.apply(sock)  # before connect: the handshake starts with it
            for endpoint in self.endpoints:
                if self._bind:
                    sock.bind(endpoint)
                else:
                    sock.connect(endpoint)
        except BaseException:
            sock.close(linger=0)
            raise
        self._adopt(sock)

    def poll(self) -> bool:
        """Read the subscription events waiting on an XPUB; return whether anyone is subscribed.

        The one place that reads them: every subscription event adds one to ``joins``.
        """
        sock = self.socket
        while True:
            try:
                event = sock.recv(_NOBLOCK)
            except zmq.Again:
                break
            # XPUB reports the last unsubscription from a prefix only (VERBOSE or not),
            # so a set mirrors whether anyone is subscribed exactly.
            if event[:1] == b"\x01":
                self.joins += 1
                self.subscriptions.add(event[1:])
            elif event[:1] == b"\x00":
                self.subscriptions.discard(event[1:])
        self.subscribed = bool(self.subscriptions)
        return self.subscribed

    def wait(self, deadline: float) -> bool:
        """Wait until a collector subscribes or the monotonic *deadline* passes; return whether one did."""
        if not self.detects:
            return self.subscribed
        self.poll()
        while not self.subscribed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.socket.poll(max(int(remaining * 1000), 1), zmq.POLLIN)
            self.poll()
        return self.subscribed

    def after_fork(self) -> bool:
        """In a fork child: keep the parent's socket and context unused, take a new context.

        Returns whether a socket can be opened anew (:meth:`open`); a socket handed
        in by the app cannot be rebuilt, its endpoints are unknown.
        """
        _INHERITED.append((self.socket, self.ctx))
        self.subscriptions = set()
        self.detects = False  # nothing may poll the parent's socket; open() sets it anew
        self.subscribed = False
        if not self.owns_socket:
            return False
        if self.owns_context:
            self.ctx = zmq.Context()
        else:
            self.ctx = self._context_type()
            self.owns_context = True
        return True

    def close(self, linger: float) -> bool:
        """Close an owned socket letting queued records leave for *linger* seconds, then its context.

        Returns True when ``term()`` used up the whole linger with a collector
        subscribed: ZeroMQ then discarded what was still queued, uncounted.
        """
        if not self.owns_socket:
            return False
        linger_ms = max(int(linger * 1000), 0)
        self.socket.close(linger=linger_ms)
        if not self.owns_context:
            return False
        # term() returns once queued records are on the wire, or after the linger.
        started = time.monotonic()
        self.ctx.term()
        return bool(self.subscribed and linger_ms and time.monotonic() - started >= linger_ms / 1000 - 0.01)
