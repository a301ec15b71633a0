"""Who may connect: the CURVE allow-list, the address allow-list, and the ZAP verdict (issue 13).

Pure: no sockets and no gevent. ``zap.ZapServer`` asks :meth:`Gate.decide` for
every handshake and sends its verdict back to libzmq; the collector reads the
certificate name it returned as the ZAP User-Id of each message (the peer).

The files are pyzmq's certificate format (``zmq.auth``, written by
``zlogcollect keygen``), read and checked by :mod:`zlogcollect.certfile` as the
app side's keys are; ``zmq.auth`` and ``zmq.utils.z85`` are imported when a
file is read, so importing this module loads no libzmq.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from zlogcollect.certfile import CertificateError, read_certificate

__all__ = [
    "AccessError",
    "AllowList",
    "Gate",
    "Policy",
    "Verdict",
    "address_allowed",
    "load_allow_list",
    "load_secret_certificate",
    "parse_networks",
    "peer_name",
]

KEY_SUFFIX: Final = ".key"
RECEIVE_DOMAIN: Final = "zlogcollect"
"""The ZAP domain of the collector's receive socket."""
PUBLISH_DOMAIN: Final = "zlogcollect-publish"
"""The ZAP domain of ``--publish``'s socket (its own allow-list)."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# The reasons a handshake is refused, as counted (``Stats.refused``) and shown on /metrics.
UNKNOWN_KEY: Final = "unknown_key"
"""A CURVE client whose public key is in no ``*.key`` file of the allow-list directory."""
NO_CURVE: Final = "no_curve"
"""A client without CURVE (a plain ``PUBHandler``): libzmq refuses the mechanism mismatch itself."""
IP_NOT_ALLOWED: Final = "ip_not_allowed"
"""A TCP peer whose address is in none of the ``--allow-ip`` networks."""
BAD_HANDSHAKE: Final = "bad_handshake"
"""A handshake that failed before any verdict: a client with the wrong server key, or garbage."""
BAD_MECHANISM: Final = "bad_mechanism"
"""A mechanism the socket does not offer (PLAIN, or NULL where CURVE is required)."""


class AccessError(ValueError):
    """A key file or allow-list that cannot be used; the message is one line and never holds a secret."""


@dataclass(frozen=True)
class AllowList:
    """The public keys of a directory's ``*.key`` files, each with its certificate name (the file stem)."""

    directory: str
    names: Mapping[bytes, str] = field(default_factory=dict)
    """Raw 32-byte public key to the certificate's name (``app1`` for ``app1.key``)."""
    duplicates: tuple[str, ...] = ()
    """Files whose key an earlier file (in name order) already holds: that earlier name is used."""

    def __len__(self) -> int:
        return len(self.names)


def _certificate(path: str, what: str) -> tuple[bytes, bytes | None]:
    """The Z85 public key and secret key (or None) of one certificate file, checked."""
    try:
        return read_certificate(path)
    except CertificateError as exc:
        raise AccessError(f"{what} {path!r}: {exc}") from None


def load_secret_certificate(path: str, what: str = "curve_secret") -> tuple[bytes, bytes]:
    """The Z85 public and secret key of a ``.key_secret`` file; :class:`AccessError` says what is wrong."""
    public, secret = _certificate(path, what)
    if secret is None:
        raise AccessError(
            f"{what} {path!r}: holds no secret key (a public .key file? give the .key_secret file)"
        )
    return public, secret


def load_allow_list(directory: str, what: str = "allow_keys") -> AllowList:
    """Every ``*.key`` file in *directory* (not below it); :class:`AccessError` if none can be used.

    A file that is not a readable certificate fails the whole load: a typo must
    not silently lock an app out (or, at a SIGHUP, the previous list is kept).
    """
    from zmq.utils import z85

    try:
        entries = sorted(os.listdir(directory))
    except OSError as exc:
        raise AccessError(f"{what} {directory!r}: {exc.strerror or exc}") from None
    names: dict[bytes, str] = {}
    duplicates: list[str] = []
    for entry in entries:
        if not entry.endswith(KEY_SUFFIX) or entry.startswith(".") or entry == KEY_SUFFIX:
            continue
        public, _ = _certificate(os.path.join(directory, entry), what)
        key = z85.decode(public)  # 40 Z85 characters: checked by _certificate
        if key in names:
            duplicates.append(entry)
            continue
        names[key] = peer_name(entry[: -len(KEY_SUFFIX)])
    if not names:
        raise AccessError(
            f"{what} {directory!r}: no *.key public key files in it"
            " (make one per app with: zlogcollect keygen NAME --dir DIR, and copy NAME.key here)"
        )
    return AllowList(directory, names, tuple(duplicates))


def peer_name(stem: str) -> str:
    """The peer's name for a certificate file's stem, as every line and file name will show it.

    A file name can hold anything but ``/`` and NUL: control characters, a tab
    and a newline are written as escapes (``\\x1b``, ``\\n``) once, here, so
    no line can be split or a terminal driven by a name, whatever uses it.
    """
    return stem if stem.isprintable() else repr(stem)[1:-1]


def parse_networks(specs: Iterable[str], what: str = "allow_ip") -> tuple[Network, ...]:
    """``--allow-ip`` values (``10.0.0.0/8``, ``192.0.2.7``, ``::1``) as networks; :class:`AccessError` if not."""
    networks = []
    for spec in specs:
        try:
            networks.append(ipaddress.ip_network(spec.strip(), strict=False))
        except ValueError:
            raise AccessError(
                f"{what} = {spec!r}: expected an address or a network in CIDR form, e.g. 10.0.0.0/8"
            ) from None
    return tuple(networks)


def address_allowed(address: str, networks: tuple[Network, ...]) -> bool:
    """Whether a ZAP peer address is allowed; no networks allow everything.

    ``ipc://`` and ``inproc://`` peers have no address (their access is the
    file system's): they are allowed. An IPv4 peer on an IPv6 socket
    (``::ffff:10.1.2.3``) is matched as the IPv4 address it is.
    """
    if not networks or not address:
        return True
    try:
        ip = ipaddress.ip_address(address.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


@dataclass(frozen=True)
class Verdict:
    """The answer to one ZAP request: *user_id* is the peer's name when allowed, *reason* why not."""

    allowed: bool
    user_id: str = ""
    reason: str = ""


class Gate:
    """The policy of one socket: a CURVE allow-list (or None: no CURVE) and address networks.

    :meth:`reload` swaps the allow-list (SIGHUP); connections made before keep going.
    """

    def __init__(self, allow: AllowList | None, networks: tuple[Network, ...] = ()) -> None:
        self.allow = allow
        self.networks = networks

    def reload(self, allow: AllowList) -> None:
        self.allow = allow

    def decide(self, mechanism: bytes, address: str, credentials: list[bytes]) -> Verdict:
        """Whether a handshake may complete, and as whom."""
        if not address_allowed(address, self.networks):
            return Verdict(False, reason=IP_NOT_ALLOWED)
        allow = self.allow
        if mechanism == b"CURVE":
            if allow is None:  # pragma: no cover - a socket without curve_server never asks for CURVE
                return Verdict(False, reason=BAD_MECHANISM)
            name = allow.names.get(credentials[0]) if credentials else None
            if name is None:
                return Verdict(False, reason=UNKNOWN_KEY)
            return Verdict(True, user_id=name)
        if mechanism == b"NULL" and allow is None:
            return Verdict(True)
        return Verdict(False, reason=NO_CURVE if mechanism == b"NULL" else BAD_MECHANISM)


@dataclass(frozen=True)
class Policy:
    """How one socket is guarded: its :class:`Gate`, and its CURVE certificate (None: no CURVE, only
    ``--allow-ip``), as (public, secret) Z85 keys."""

    gate: Gate
    secret: tuple[bytes, bytes] | None = field(default=None, repr=False)  # never in a repr or a traceback

    @property
    def curve(self) -> bool:
        return self.secret is not None
