"""One CURVE certificate file read and checked: pyzmq's ``zmq.auth`` format, as ``zlogcollect keygen`` writes it.

Shared by the app side's client keys (:mod:`zlogcollect.keys`) and the collector's
own certificate and allow-list (:mod:`zlogcollect.access`); each wraps
:class:`CertificateError` in its own error, with the file named the way its
setting is spelled. zmq is imported when a file is read, so importing this
module loads no libzmq.
"""

from __future__ import annotations

import os
import stat
from typing import Final

__all__ = [
    "KEY_TEXT_LENGTH",
    "MAX_CERTIFICATE_BYTES",
    "Z85_CHARS",
    "CertificateError",
    "is_key_text",
    "read_certificate",
]

Z85_CHARS: Final[frozenset[str]] = frozenset(
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
)
"""ZeroMQ's Z85 alphabet; a CURVE key is 40 of these characters (32 bytes)."""
KEY_TEXT_LENGTH: Final = 40
MAX_CERTIFICATE_BYTES: Final = 64 * 1024
"""A certificate file is a few hundred bytes; anything larger is not one (and is not read whole)."""


class CertificateError(ValueError):
    """What is wrong with a certificate file, in one line that names neither the file nor a key."""


def is_key_text(text: str) -> bool:
    """40 Z85 characters that decode to 32 bytes (a Z85 group above 2**32 - 1 does not)."""
    if len(text) != KEY_TEXT_LENGTH or not Z85_CHARS.issuperset(text):
        return False
    from zmq.utils import z85

    try:
        return len(z85.decode(text)) == 32
    except Exception:  # noqa: BLE001 - a group too large for 32 bits (struct.error): no key
        return False


def read_certificate(path: str) -> tuple[bytes, bytes | None]:
    """The Z85 public key and secret key (None in a ``.key`` file) of the certificate at *path*, both checked.

    Only a regular file of at most :data:`MAX_CERTIFICATE_BYTES` is read (a FIFO or a
    device would block or never end); a secret key must belong to the public key
    beside it. Raises :class:`CertificateError`.
    """
    try:
        info = os.stat(path)
    except OSError as exc:
        raise CertificateError(exc.strerror or "cannot be read") from None
    if stat.S_ISDIR(info.st_mode):
        raise CertificateError("is a directory, not a certificate file")
    if not stat.S_ISREG(info.st_mode):
        raise CertificateError("not a regular file, so not a certificate file")
    if info.st_size > MAX_CERTIFICATE_BYTES:
        raise CertificateError(
            f"larger than {MAX_CERTIFICATE_BYTES // 1024} KiB, so not a certificate file"
            " (zlogcollect keygen writes them)"
        )
    import zmq
    import zmq.auth

    try:
        public, secret = zmq.auth.load_certificate(path)
    except OSError as exc:
        raise CertificateError(exc.strerror or "cannot be read") from None
    except ValueError:  # no public-key line
        raise CertificateError(
            "no public-key line, so not a CURVE certificate (zlogcollect keygen writes them)"
        ) from None
    if not is_key_text(public.decode("ascii", "replace")):
        raise CertificateError(f"its public key is not {KEY_TEXT_LENGTH} Z85 characters")
    if secret is not None:
        # Never show the secret, not even a part of it: say only what is wrong with it.
        if not is_key_text(secret.decode("ascii", "replace")):
            raise CertificateError(f"its secret key is not {KEY_TEXT_LENGTH} Z85 characters")
        if zmq.curve_public(secret) != public:
            raise CertificateError("its public key does not belong to its secret key")
    return public, secret
