"""Who the collector runs as and what it creates: the root policy, dropping to ``--user``, file modes.

The decisions are pure functions (modes, which endpoints other hosts can reach,
what to do as root) that unit tests call directly; the few system calls (name
lookups, ``setuid``) are separate functions the daemon calls. Standard library only.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from zlogcollect.exits import ExitStatus

FILE_MODE: Final = 0o640
"""Log files (and rotated and compressed backups): owner read-write, group read."""
DIR_MODE: Final = 0o750
"""Directories the collector creates: owner all, group enter and list."""
STATE_MODE_MAX: Final = 0o640
"""The collector's state files (``_publishers.json``, the counters) are never more open than this."""

_OCTAL = re.compile(r"(?:0o|0O)?[0-7]{1,4}")
_IFF_LOOPBACK: Final = 0x8  # linux/if.h


def parse_mode(text: str) -> int:
    """An octal mode as written in a config or on the command line: ``0640``, ``640`` or ``0o640``."""
    text = text.strip()
    if not _OCTAL.fullmatch(text):
        raise ValueError("expected an octal mode such as 0640")
    return int(text.removeprefix("0o").removeprefix("0O"), 8)


def _mode_problem(text: str, needed: int, what: str) -> str | None:
    try:
        mode = parse_mode(text)
    except ValueError as exc:
        return str(exc)
    if mode & ~0o777:
        return "only permission bits (at most 0777) are allowed, no setuid, setgid or sticky bit"
    if mode & needed != needed:
        return f"the owner (the collector) must keep {what}: at least {needed:04o}"
    return None


def file_mode_problem(text: str) -> str | None:
    """What is wrong with *text* as ``--file-mode``, or None.

    The owner needs read and write: files are reopened read-write (to repair a
    line cut by a crash) and read again to be compressed.
    """
    return _mode_problem(text, 0o600, "read and write permission on its files")


def dir_mode_problem(text: str) -> str | None:
    """What is wrong with *text* as ``--dir-mode``, or None.

    The owner needs all three: enter and create files, and list (to prune old backups).
    """
    return _mode_problem(text, 0o700, "read, write and search permission on its directories")


def state_mode(file_mode: int) -> int:
    """The mode of the collector's own state files: the log files' mode, never more than 0640."""
    return file_mode & STATE_MODE_MAX


# Which endpoints other hosts can reach.


def bind_host(endpoint: str) -> str | None:
    """The host part of a ``tcp://HOST:PORT`` endpoint; None for a transport other hosts cannot reach.

    ``ipc://`` and ``inproc://`` are local to the machine; any other transport
    (``pgm``, ``epgm``, ``vmci``) is returned whole, as a host no lookup calls loopback.
    """
    if endpoint.startswith(("ipc://", "inproc://")):
        return None
    if not endpoint.startswith("tcp://"):
        return endpoint
    host = endpoint[len("tcp://") :].rpartition(":")[0]
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def exposed(
    binds: Iterable[str], http_host: str | None, is_loopback: Callable[[str], bool], http: str = ""
) -> list[str]:
    """The endpoints among *binds* (and the ``--http`` host, given as *http*) that other hosts can reach.

    *is_loopback* decides a host (an address, ``*``, an interface or host name);
    anything it cannot prove is loopback counts as reachable.
    """
    found = []
    for endpoint in binds:
        host = bind_host(endpoint)
        if host is not None and not is_loopback(host):
            found.append(endpoint)
    if http_host is not None and not is_loopback(http_host):
        found.append(f"--http {http or http_host}")
    return found


def _address_is_loopback(text: str) -> bool | None:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def host_is_loopback(host: str) -> bool:
    """True only if *host* (as libzmq or the HTTP server would bind it) is a loopback address.

    An address literal is decided by itself; an interface name by its
    IFF_LOOPBACK flag; a host name by every address it resolves to. ``*``, an
    unknown name or a failed lookup are not loopback.
    """
    if not host or host == "*":
        return False
    literal = _address_is_loopback(host)
    if literal is not None:
        return literal
    if host in {name for _index, name in socket.if_nameindex()}:
        try:
            with open(f"/sys/class/net/{host}/flags", encoding="ascii") as handle:
                return bool(int(handle.read(), 16) & _IFF_LOOPBACK)
        except (OSError, ValueError):
            return False
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(_address_is_loopback(str(address)) for address in addresses)


# The root policy.


class PolicyError(Exception):
    """Start-up refused by the root policy; *status* is the exit code (77 refused, 78 a wrong setting)."""

    def __init__(self, message: str, status: ExitStatus) -> None:
        super().__init__(message)
        self.status = status


ROOT_WARNING: Final = (
    "running as root (every endpoint is loopback or ipc, so this is allowed); better run as a"
    " service user: User= in the systemd unit, or --user NAME to drop to it after binding"
)


def root_policy(euid: int, reachable: list[str], user: str, allow_root: bool) -> str | None:
    """The verdict for starting as *euid*: None, or a warning to print; :class:`PolicyError` to refuse.

    As root, an endpoint other hosts can reach (*reachable*) is refused unless
    the process drops to *user* after binding or *allow_root* says root is
    wanted; loopback and ipc only start with a warning. ``--user`` needs root.
    """
    if euid != 0:
        if user:
            raise PolicyError(
                f"user = {user!r}: dropping to another user needs root, and this runs as uid {euid};"
                " start it as root or leave --user out",
                ExitStatus.CONFIG,
            )
        return None
    if user or allow_root:
        return None
    if reachable:
        raise PolicyError(
            f"refusing to run as root with {', '.join(reachable)} reachable from other hosts: give"
            " --user NAME to drop to that user after binding, or --allow-root to run as root anyway",
            ExitStatus.NOPERM,
        )
    return ROOT_WARNING


@dataclass(frozen=True)
class ServiceUser:
    """The account ``--user`` names: the process drops to it after binding."""

    name: str
    uid: int
    gid: int


def lookup_user(spec: str) -> ServiceUser:
    """The account *spec* names (a user name or a numeric uid); :class:`PolicyError` if there is
    none, or if it is root (dropping to root would be no drop at all)."""
    shown = repr(spec[:64]) + ("..." if len(spec) > 64 else "")
    try:
        entry = pwd.getpwuid(int(spec)) if spec.isascii() and spec.isdigit() else pwd.getpwnam(spec)
    except (KeyError, OverflowError, ValueError):  # ValueError: a NUL in the name
        raise PolicyError(f"user = {shown}: no such user on this host", ExitStatus.CONFIG) from None
    if entry.pw_uid == 0:
        raise PolicyError(
            f"user = {shown}: that is root; name an unprivileged user (or give --allow-root instead)",
            ExitStatus.CONFIG,
        )
    return ServiceUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def drop_to(user: ServiceUser) -> None:
    """Become *user* for good: its primary group, its supplementary groups, then its uid (real, effective, saved)."""
    os.initgroups(user.name, user.gid)
    os.setresgid(user.gid, user.gid, user.gid)
    os.setresuid(user.uid, user.uid, user.uid)
    if os.getresuid() != (user.uid,) * 3 or os.getresgid() != (user.gid,) * 3:  # pragma: no cover
        raise PolicyError(f"user = {user.name!r}: could not drop to uid {user.uid}", ExitStatus.CONFIG)
