"""``--http``'s optional access control: a bearer token or basic-auth credentials (issue 14).

The secrets come from the environment (``ZLOGCOLLECT_HTTP_TOKEN``,
``ZLOGCOLLECT_HTTP_USER`` + ``ZLOGCOLLECT_HTTP_PASSWORD``) or from a file
(``--http-auth-file``: ``token=SECRET`` and/or ``user=NAME`` + ``password=SECRET``
lines), never from the command line, where ``ps`` shows them. Every compare is
constant-time (:func:`hmac.compare_digest`); no message, repr or counter ever
holds a secret.

Pure: the standard library only.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

__all__ = ["ENV_PASSWORD", "ENV_TOKEN", "ENV_USER", "Auth", "AuthError", "load_auth"]

ENV_TOKEN: Final = "ZLOGCOLLECT_HTTP_TOKEN"
ENV_USER: Final = "ZLOGCOLLECT_HTTP_USER"
ENV_PASSWORD: Final = "ZLOGCOLLECT_HTTP_PASSWORD"
REALM: Final = "zlogcollect"
MAX_FILE_BYTES: Final = 64 * 1024
MAX_HEADER_CHARS: Final = 4096
_KEYS: Final = ("token", "user", "password")


class AuthError(ValueError):
    """Credentials that cannot be used; one line that never holds a secret."""


@dataclass(frozen=True)
class Auth:
    """The credentials one request must carry: a bearer token, a user and password, or either."""

    token: bytes | None = field(default=None, repr=False)
    user: bytes | None = field(default=None, repr=False)
    password: bytes | None = field(default=None, repr=False)
    origin: str = ""
    """Where they came from (the file's path or "the environment"), for the ready line."""

    @property
    def basic(self) -> bool:
        return self.user is not None

    @property
    def kinds(self) -> str:
        """``token``, ``basic`` or ``token or basic``: what a client may send."""
        return " or ".join(
            kind for kind, on in (("token", self.token is not None), ("basic", self.basic)) if on
        )

    def challenges(self) -> list[tuple[str, str]]:
        """The ``WWW-Authenticate`` headers of a 401: Basic (so a browser asks) when basic is on."""
        headers = []
        if self.basic:
            headers.append(("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"'))
        if self.token is not None:
            headers.append(("WWW-Authenticate", f'Bearer realm="{REALM}"'))
        return headers

    def allows(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header's value carries the credentials."""
        if not authorization or len(authorization) > MAX_HEADER_CHARS:
            return False
        scheme, _, value = authorization.strip().partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "bearer" and self.token is not None:
            return hmac.compare_digest(value.encode("utf-8", "surrogateescape"), self.token)
        if scheme == "basic" and self.user is not None and self.password is not None:
            try:
                decoded = base64.b64decode(value.encode("ascii"), validate=True)
            except (binascii.Error, UnicodeEncodeError, ValueError):
                return False
            user, sep, password = decoded.partition(b":")
            # Both compares always run: the time taken says nothing about which part was wrong.
            same_user = hmac.compare_digest(user, self.user)
            same_password = hmac.compare_digest(password, self.password)
            return bool(sep) and same_user and same_password
        return False


def _check(what: str, value: str, where: str, allow_space: bool = False) -> bytes:
    if not value:
        raise AuthError(f"{where}: {what} is empty")
    if any(ord(char) < 32 or ord(char) == 127 for char in value) or (not allow_space and " " in value):
        kind = "control characters" if allow_space else "spaces or control characters"
        raise AuthError(f"{where}: {what} holds {kind}")
    if what == "user" and ":" in value:
        raise AuthError(f"{where}: user holds ':', which basic auth cannot carry")
    return value.encode("utf-8", "surrogateescape")


def _build(values: Mapping[str, str], where: str) -> Auth:
    token = values.get("token")
    user, password = values.get("user"), values.get("password")
    if (user is None) != (password is None):
        given, missing = ("user", "password") if user is not None else ("password", "user")
        raise AuthError(f"{where}: {given} is given without {missing}")
    return Auth(
        _check("token", token, where) if token is not None else None,
        _check("user", user, where, allow_space=True) if user is not None else None,
        _check("password", password, where, allow_space=True) if password is not None else None,
        where,
    )


def read_auth_file(path: str) -> Auth:
    """``token=SECRET`` and/or ``user=NAME`` + ``password=SECRET`` lines; ``#`` comments and blank
    lines are skipped. :class:`AuthError` names the line, never its content."""
    where = f"http_auth_file = {path!r}"
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise AuthError(f"{where}: cannot read it: {exc.strerror or type(exc).__name__}") from None
    if not stat.S_ISREG(mode):
        raise AuthError(f"{where}: not a regular file")
    if len(data) > MAX_FILE_BYTES:
        raise AuthError(f"{where}: larger than {MAX_FILE_BYTES // 1024} KiB; expected a few key=value lines")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AuthError(f"{where}: not UTF-8 (byte {exc.start})") from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition("=")
        key = key.strip().lower()
        if not sep or key not in _KEYS:
            raise AuthError(f"{where}: line {number}: expected token=, user= or password=")
        if key in values:
            raise AuthError(f"{where}: line {number}: {key} is given twice")
        values[key] = value.strip()
    if not values:
        raise AuthError(f"{where}: holds no token= nor user= and password= line")
    return _build(values, where)


def world_readable(path: str) -> bool:
    """Whether others than the owner and group may read *path* (worth a warning)."""
    try:
        return bool(os.stat(path).st_mode & stat.S_IROTH)
    except OSError:
        return False


def load_auth(path: str, environ: Mapping[str, str]) -> Auth | None:
    """The credentials from *path* (``--http-auth-file``) or from *environ*; None when neither
    gives any (auth off). Both at once is refused: one place holds the secrets."""
    names = dict(zip(_KEYS, (ENV_TOKEN, ENV_USER, ENV_PASSWORD), strict=True))
    env = {key: environ[name] for key, name in names.items() if name in environ}
    if path and env:
        given = ", ".join(name for name in (ENV_TOKEN, ENV_USER, ENV_PASSWORD) if name in environ)
        raise AuthError(f"http_auth_file is given and so is {given}: give the credentials in one place")
    if path:
        return read_auth_file(path)
    if env:
        return _build(env, "the environment")
    return None
