"""``zlogcollect keygen``: a CURVE certificate pair for a collector or an app (issue 13, part 1).

The files are pyzmq's own certificate format (``zmq.auth.create_certificates``):
``NAME.key`` holds the public key, ``NAME.key_secret`` the public and the secret
key. The secret file is created under umask 077, so it is mode 0600 from its
first byte; the public file is 0644. Existing files are never overwritten
unless asked (a secret key once handed out cannot be taken back).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from zlogcollect.exits import ExitStatus

__all__ = ["KeygenError", "NewKeys", "keygen"]

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
