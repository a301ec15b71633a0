"""zlogcollect: brokerless central logging for Python apps over ZeroMQ."""

from __future__ import annotations

from zlogcollect.handler import ZLogHandler, setup

__version__ = "0.1.0"

__all__ = ["ZLogHandler", "__version__", "setup"]
