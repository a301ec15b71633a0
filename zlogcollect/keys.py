"""CURVE keys: ``zlogcollect keygen`` writes a certificate pair; the app side loads its keys (issue 13).

The files are pyzmq's own certificate format (``zmq.auth.create_certificates``):
``NAME.key`` holds the public key, ``NAME.key_secret`` the public and the secret
key. The secret file is created under umask 077, so it is mode 0600 from its
first byte; the public file is 0644. Existing files are never overwritten
unless asked (a secret key once handed out cannot be taken back).

:func:`server_public_key` and :func:`client_certificate` load what a CURVE
client (the handler, ``ship``, ``send``, ``tail``) needs, with one-line
:class:`KeyFileError` messages that never contain a secret key. zmq is
imported inside the functions, so importing this module stays light.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zlogcollect.exits import ExitStatus

__all__ = [
    "ClientCurve",
    "KeyFileError",
    "KeygenError",
    "NewKeys",
    "client_certificate",
    "client_curve",
    "keygen",
    "server_public_key",
]

_NAME = re.compile(r"[A-Za-z0-9_@+-][A-Za-z0-9._@+-]{0,99}")
"""A certificate name: one plain file-name word (it becomes the peer's name on the collector's lines)."""


class KeygenError(Exception):
    """Why no keys were written; the message is one line for stderr, *status* the exit code."""

    def __init__(self, message: str, status: ExitStatus) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class NewKeys:
    """What :func:`keygen` wrote."""

    public_key: str
    public_file: Path
    secret_file: Path


def keygen(name: str, directory: str, force: bool = False) -> NewKeys:
    """Write ``NAME.key`` and ``NAME.key_secret`` in *directory* (created, mode 0700, if missing)."""
    if not _NAME.fullmatch(name):
        raise KeygenError(
            f"name {name!r}: expected one file-name word of letters, digits and ._@+- (not starting with .)",
            ExitStatus.CONFIG,
        )
    folder = Path(directory)
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    existing = [str(path) for path in (public, secret) if path.exists() or path.is_symlink()]
    if existing and not force:
        raise KeygenError(
            f"{' and '.join(existing)} already exist; use --force to replace them", ExitStatus.CANTCREAT
        )
    import zmq.auth  # here, not at import: `zlogcollect --help` stays light

    old_mask = os.umask(0o077)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for path in (public, secret):
            if force and (path.exists() or path.is_symlink()):
                path.unlink()  # a planted link is replaced, never written through
        public_file, secret_file = zmq.auth.create_certificates(folder, name)
    except OSError as exc:
        raise KeygenError(
            f"cannot write keys in {directory}: {exc.strerror or exc}", ExitStatus.CANTCREAT
        ) from None
    finally:
        os.umask(old_mask)
    os.chmod(public_file, 0o644)
    os.chmod(secret_file, 0o600)
    key, _ = zmq.auth.load_certificate(public_file)
    return NewKeys(key.decode("ascii"), Path(public_file), Path(secret_file))


# --- loading keys for a CURVE client -------------------------------------------------------------

Z85_CHARS: frozenset[str] = frozenset(
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
)
"""ZeroMQ's Z85 alphabet; a CURVE key is 40 of these characters (32 bytes)."""
KEY_TEXT_LENGTH = 40
MAX_CERTIFICATE_BYTES = 64 * 1024
"""A certificate file is a few hundred bytes; anything larger is not one (and is not read whole)."""


class KeyFileError(ValueError):
    """A key or certificate that cannot be used; the message is one line and never holds a secret key."""


@dataclass(frozen=True)
class ClientCurve:
    """What a CURVE client socket needs: the server's public key and its own key pair (Z85 bytes).

    The secret is left out of ``repr()``, so printing the object never shows it.
    """

    server_key: bytes
    public_key: bytes
    secret_key: bytes = field(repr=False)

    def apply(self, socket: Any) -> None:
        """Make *socket* a CURVE client of the server; before ``connect()`` (or ``bind()``)."""
        socket.curve_serverkey = self.server_key
        socket.curve_publickey = self.public_key
        socket.curve_secretkey = self.secret_key


def _is_key_text(text: str) -> bool:
    """40 Z85 characters that decode to 32 bytes (a Z85 group above 2**32 - 1 does not)."""
    if len(text) != KEY_TEXT_LENGTH or not Z85_CHARS.issuperset(text):
        return False
    from zmq.utils import z85

    try:
        return len(z85.decode(text)) == 32
    except Exception:  # noqa: BLE001 - a group too large for 32 bits (struct.error): no key
        return False


def _shown(path: str) -> str:
    """*path* for a one-line message: as it is when printable, else quoted with escapes."""
    return path if path.isprintable() else repr(path)


def _read_certificate(path: str) -> tuple[bytes, bytes | None]:
    """The (public, secret-or-None) keys of a certificate file, both checked; KeyFileError naming *path*."""
    name = _shown(path)
    try:
        info = os.stat(path)
    except OSError as exc:
        raise KeyFileError(f"{name}: {exc.strerror or 'cannot be read'}") from None
    if stat.S_ISDIR(info.st_mode):
        raise KeyFileError(f"{name}: is a directory, not a certificate file")
    if not stat.S_ISREG(info.st_mode):  # a FIFO or a device would block or never end
        raise KeyFileError(f"{name}: not a regular file, so not a certificate file")
    if info.st_size > MAX_CERTIFICATE_BYTES:
        raise KeyFileError(
            f"{name}: larger than {MAX_CERTIFICATE_BYTES // 1024} KiB, so not a certificate file"
            " (zlogcollect keygen writes them)"
        )
    import zmq.auth

    try:
        public, secret = zmq.auth.load_certificate(path)
    except OSError as exc:
        raise KeyFileError(f"{name}: {exc.strerror or 'cannot be read'}") from None
    except ValueError:  # no public-key line
        raise KeyFileError(
            f"{name}: no public-key line, so not a CURVE certificate (zlogcollect keygen writes them)"
        ) from None
    if not _is_key_text(public.decode("ascii", "replace")):
        raise KeyFileError(f"{name}: its public key is not {KEY_TEXT_LENGTH} Z85 characters")
    if secret is not None:
        # Never show the secret, not even a part of it: say only what is wrong with it.
        if not _is_key_text(secret.decode("ascii", "replace")):
            raise KeyFileError(f"{name}: its secret key is not {KEY_TEXT_LENGTH} Z85 characters")
        if zmq.curve_public(secret) != public:
            raise KeyFileError(f"{name}: its public key does not belong to its secret key")
    return public, secret


def _looks_like_a_path(value: str) -> bool:
    """Whether a value that names no existing file may be shown in an error (it cannot be a key)."""
    return value.endswith((".key", ".key_secret")) or not Z85_CHARS.issuperset(value)


def server_public_key(value: str | os.PathLike[str] | bytes) -> bytes:
    """The server's public key (Z85 bytes) from a ``.key`` file, a ``.key_secret`` file or the Z85 text.

    A file of that name wins over a value that is also 40 Z85 characters.
    Raises :class:`KeyFileError` (a ValueError) with one line otherwise.
    """
    if isinstance(value, bytes):
        text = value.decode("ascii", "replace")
        if _is_key_text(text):
            return text.encode("ascii")
        raise KeyFileError(f"{len(value)} bytes given, not a {KEY_TEXT_LENGTH}-character Z85 key")
    path = os.fspath(value)
    if not path:
        raise KeyFileError(f"empty (give a .key file or the {KEY_TEXT_LENGTH}-character Z85 key)")
    if _is_key_text(path) and not os.path.lexists(path):
        return path.encode("ascii")
    if not os.path.lexists(path) and not _looks_like_a_path(path):
        # Perhaps a key with a typo, perhaps a secret one: never echo it.
        raise KeyFileError(
            f"a value of {len(path)} characters that is neither an existing file"
            f" nor a {KEY_TEXT_LENGTH}-character Z85 key"
        )
    public, _ = _read_certificate(path)
    return public


def client_certificate(path: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """The client's (public, secret) keys, Z85 bytes, from its ``.key_secret`` file.

    A ``.key`` file (public key only) is refused: the client proves its
    identity with the secret. Raises :class:`KeyFileError` with one line.
    """
    name = os.fspath(path)
    if not name:
        raise KeyFileError("empty (give the client's .key_secret file)")
    public, secret = _read_certificate(name)
    if secret is None:
        raise KeyFileError(
            f"{_shown(name)}: holds no secret key (a public .key file); the client needs its .key_secret file"
        )
    return public, secret


def client_curve(
    server_key: str | os.PathLike[str] | bytes | None,
    client_cert: str | os.PathLike[str] | None,
    names: tuple[str, str] = ("curve_server_key", "curve_client_cert"),
) -> ClientCurve | None:
    """Both keys loaded, or None when neither is given; one alone is a :class:`KeyFileError`.

    *names* are how the caller spells the two settings in the message (flags or keywords).
    """
    if server_key is None and client_cert is None:
        return None
    if server_key is None or client_cert is None:
        given, missing = names if server_key is not None else names[::-1]
        raise KeyFileError(f"{given} needs {missing} too: CURVE takes both or neither")
    try:
        server = server_public_key(server_key)
    except KeyFileError as exc:
        raise KeyFileError(f"{names[0]}: {exc}") from None
    try:
        public, secret = client_certificate(client_cert)
    except KeyFileError as exc:
        raise KeyFileError(f"{names[1]}: {exc}") from None
    return ClientCurve(server, public, secret)
