"""Exit statuses of the `zlogcollect` command; light, so the CLI uses them without loading zmq or gevent."""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    """Exit codes, after sysexits.h where one fits."""

    SUCCESS = 0
    USAGE = 2  # click's own status for a usage error (unknown flag, malformed value)
    NOINPUT = 66  # an input file (`ship FILE`) does not exist or cannot be read
    UNAVAILABLE = 69  # an endpoint cannot be bound
    CANTCREAT = 73  # the log directory cannot be written
    TEMPFAIL = 75  # `send`/`ship`: no collector took the records in time; try again later
    NOPERM = 77  # the root policy refused: as root, an endpoint other hosts reach, no --user or --allow-root
    CONFIG = 78  # a setting is wrong
