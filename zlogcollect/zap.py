"""libzmq's ZAP handler for one context, served by a greenlet: every CURVE handshake is asked here.

The verdicts are :class:`access.Gate`'s. The handler must be bound on the
*same* context as the sockets it guards, *before* they bind: with no handler
libzmq 4.3 lets every CURVE key in (../shared/reference/FEASIBILITY.md,
section 1); the sockets also set ``ZAP_ENFORCE_DOMAIN`` where libzmq offers
it, so a missing handler refuses instead.

Written against RFC 27 (ZAP 1.0) rather than with ``zmq.auth``'s
``Authenticator``: that one is a coroutine (``async def``) in pyzmq 27 and
runs in a thread or an asyncio loop; this is a ROUTER drained with
``NOBLOCK`` by one greenlet, the collector's own pattern, and it counts each
refusal by reason and names the peer's address in a throttled warning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Final

import gevent
import zmq
import zmq.green

from zlogcollect.access import Gate, Verdict
from zlogcollect.wire import escape_text

__all__ = ["ZAP_ENDPOINT", "ZapServer", "guard"]

log = logging.getLogger(__name__)

ZAP_ENDPOINT: Final = "inproc://zeromq.zap.01"
_VERSION: Final = b"1.0"

Refused = Callable[[str, str, str], None]
"""Called with (domain, reason, peer address) for every refused handshake."""


def guard(sock: zmq.Socket[bytes], domain: str, secret: tuple[bytes, bytes] | None) -> None:
    """Make *sock* ask the ZAP handler of *domain*; with *secret* (public, secret Z85) a CURVE server."""
    if secret is not None:
        sock.curve_publickey, sock.curve_secretkey = secret
        sock.curve_server = True
    sock.zap_domain = domain.encode()
    try:
        # A socket whose handler is missing then refuses instead of accepting every key.
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
    except (AttributeError, zmq.ZMQError):  # pragma: no cover - libzmq built without the option
        pass


class ZapServer:
    """Answers the ZAP requests of every socket of *context*, by each socket's ZAP domain.

    Start it before any guarded socket binds; stop it after they are closed.
    """

    def __init__(
        self, context: zmq.Context[zmq.Socket[bytes]], gates: Mapping[str, Gate], refused: Refused
    ) -> None:
        self._context = context
        self.gates = dict(gates)
        self._refused = refused
        self._socket: zmq.Socket[bytes] | None = None
        self._greenlet: gevent.Greenlet[[], None] | None = None

    def start(self) -> None:
        """Bind the handler's endpoint (``inproc``, so only this context's sockets reach it) and serve."""
        sock = self._socket = self._context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(ZAP_ENDPOINT)
        self._greenlet = gevent.spawn(self._serve, sock)

    def _serve(self, sock: zmq.Socket[bytes]) -> None:
        poller = zmq.green.Poller()
        poller.register(sock, zmq.POLLIN)
        while True:
            poller.poll()
            for _ in range(1000):  # then let the receive loop have a turn
                try:
                    envelope = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                reply = self.answer(envelope)
                if reply is not None:
                    try:
                        sock.send_multipart(reply, zmq.NOBLOCK)
                    except zmq.ZMQError:  # pragma: no cover - the handshake's session went away
                        pass

    def answer(self, envelope: list[bytes]) -> list[bytes] | None:
        """The reply to one request as the ROUTER received it (``[id, b"", version, request_id, ...]``)."""
        try:
            delimiter = envelope.index(b"")
        except ValueError:
            return None
        head, request = envelope[: delimiter + 1], envelope[delimiter + 1 :]
        if len(request) < 6:
            return None  # not a ZAP request: libzmq never sends one this short
        version, request_id, domain, address, _identity, mechanism, *credentials = request
        text_domain = domain.decode("utf-8", "replace")
        peer = address.decode("utf-8", "replace")
        gate = self.gates.get(text_domain)
        try:
            if version != _VERSION:
                verdict = Verdict(False, reason="bad_zap_version")
            elif gate is None:
                verdict = Verdict(False, reason="unknown_domain")
            else:
                verdict = gate.decide(mechanism, peer, credentials)
        except Exception:
            log.exception("the ZAP handler failed; refusing the connection")
            return [*head, _VERSION, request_id, b"500", b"internal error", b"", b""]
        if verdict.allowed:
            return [*head, _VERSION, request_id, b"200", b"OK", verdict.user_id.encode(), b""]
        try:
            self._refused(text_domain, verdict.reason, escape_text(peer, 100))
        except Exception:
            log.exception("counting a refused connection failed")
        # 300 (temporary), not 400: after a 400 the client gives up that connection for good; after
        # a 300 it is left without an answer until its handshake times out (HANDSHAKE_IVL, 30 s by
        # default) and then reconnects. So a refused app retries twice a minute, and a key added to
        # the allow-list later (SIGHUP) gets in at its next try without restarting the app.
        return [*head, _VERSION, request_id, b"300", verdict.reason.encode(), b"", b""]

    def stop(self) -> None:
        """Stop serving and close the handler's socket (after the sockets it guards are closed)."""
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
