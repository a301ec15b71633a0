"""zlogcollect: brokerless central logging for Python apps over ZeroMQ.

``ZLogHandler`` and ``setup`` are loaded on first use (PEP 562), so importing a
pure module such as ``zlogcollect.wire`` or ``zlogcollect.config`` does not
import zmq.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zlogcollect._version import __version__

if TYPE_CHECKING:
    from zlogcollect.handler import ZLogHandler, setup

__all__ = ["ZLogHandler", "__version__", "setup"]

_LAZY = frozenset({"ZLogHandler", "setup"})


if not TYPE_CHECKING:
    # Hidden from type checkers, which would otherwise take any attribute of the
    # package as valid; they see the TYPE_CHECKING import above instead.

    def __getattr__(name: str) -> Any:
        if name in _LAZY:
            from zlogcollect import handler

            value = getattr(handler, name)
            globals()[name] = value
            return value
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY)
