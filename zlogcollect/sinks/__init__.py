"""Where records go once routed: files (and, with the amqp extra, RabbitMQ); what a sink must offer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from zlogcollect.wire import Record


class Sink(Protocol):
    """What the collector needs from a sink; the file sink is the first of them."""

    def write(self, record: Record) -> None: ...
    def quarantine(self, reason: str, detail: str, frames: Sequence[bytes]) -> None: ...
    def flush(self) -> None: ...
    def reopen(self) -> None: ...
    def close(self) -> None: ...
