"""The writer's memory of message ids already written: a bounded ordered set and its journal lines.

Pure: the standard library only. ``collect --from-amqp`` drops a delivery whose
``message_id`` is in the window (a redelivery after a kill, a bridge's re-send)
and journals the ids of each batch right after its lines are written, so the
window survives a restart (:func:`parse_journal` reads the journal back).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Final

DEFAULT_CAPACITY: Final = 100_000
"""Ids remembered: far more than a prefetch window and a bridge's unconfirmed re-sends."""

MAX_ID: Final = 255
"""Longest id kept (an AMQP short string); a longer or multi-line one is never journalled."""


class SeenWindow:
    """The last *capacity* ids, oldest first: :meth:`add` says whether an id is new."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def add(self, message_id: str) -> bool:
        """Remember *message_id*; False if it was already there (a duplicate). The oldest goes first."""
        ids = self._ids
        if message_id in ids:
            return False
        ids[message_id] = None
        if len(ids) > self.capacity:
            ids.popitem(last=False)
        return True

    def discard(self, message_id: str) -> None:
        """Forget *message_id* (its line never reached the sink after all)."""
        self._ids.pop(message_id, None)

    def load(self, ids: Iterable[str]) -> None:
        """Remember *ids* in order (a journal read back); the newest *capacity* stay."""
        for message_id in ids:
            self._ids.pop(message_id, None)
            self._ids[message_id] = None
            if len(self._ids) > self.capacity:
                self._ids.popitem(last=False)

    def dump(self) -> str:
        """The window as journal text (one id a line, oldest first), for a compacted journal."""
        return journal_lines(self._ids)


def journalable(message_id: str) -> bool:
    """Whether *message_id* can be one journal line (not empty, no line break, at most :data:`MAX_ID`)."""
    return 0 < len(message_id) <= MAX_ID and "\n" not in message_id and "\r" not in message_id


def journal_lines(ids: Iterable[str]) -> str:
    """*ids* as journal text: one a line, each ending in a newline."""
    return "".join(f"{message_id}\n" for message_id in ids)


def parse_journal(text: str) -> list[str]:
    """The ids in journal *text*, oldest first; a last line cut short by a kill (no newline) is left out."""
    lines = text.split("\n")
    return [line for line in lines[:-1] if line]
