"""The web viewer's pure part: the filters its URLs and the server share (issue 14).

A record travels to the page as the very object a ``--json`` line holds
(:func:`formatting.json_fields`: ``time``, ``created``, ``source``,
``levelname``, ``levelno``, ``subtopic``, ``message``, ``host``, ``pid``,
``peer``, ...), so the live stream (``/events``), the search over the files
(``/search``) and a ``--json`` file all speak one shape. :class:`Filter` is
what ``?level=&source=&q=`` mean, applied on the server (a browser on a slow
link never receives what it would hide) and by the page alike.

No sockets, no gevent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from zlogcollect.wire import DEFAULT_LEVELS, Levels

__all__ = ["MAX_QUERY_CHARS", "Filter", "FilterError", "searchable_text"]

MAX_QUERY_CHARS: Final = 200
"""Longest ``q``: a filter is typed by a person; a longer one is refused (400)."""
MAX_SOURCES: Final = 100
"""Most ``source`` values in one filter."""


class FilterError(ValueError):
    """A query parameter that cannot be a filter; the message is one line for a 400 answer."""


def searchable_text(view: Mapping[str, Any]) -> str:
    """What ``q`` is matched against: source, peer, host/pid, subtopic and message of one record."""
    parts = [
        str(view.get("source") or ""),
        str(view.get("peer") or ""),
        f"{view.get('host') or ''}:{view.get('pid') or ''}",
        str(view.get("subtopic") or ""),
        str(view.get("message") or ""),
    ]
    exc = view.get("exc")
    if exc:
        parts.append(str(exc))
    return "\n".join(parts)


@dataclass(frozen=True)
class Filter:
    """``level`` (the minimum, a name or a number), ``source`` (any of), ``q`` (text).

    ``q`` is a case-insensitive substring, or a regular expression written
    ``/.../`` (``/.../i`` for case-insensitive); a leading ``!`` inverts it
    (records that do *not* match). The empty filter takes everything.
    """

    min_level: int = 0
    sources: frozenset[str] = frozenset()
    query: str = ""
    pattern: re.Pattern[str] | None = field(default=None, compare=False)
    invert: bool = False

    @classmethod
    def parse(
        cls,
        level: str = "",
        sources: Iterable[str] = (),
        q: str = "",
        levels: Levels = DEFAULT_LEVELS,
    ) -> Filter:
        """The filter the query parameters describe; :class:`FilterError` says what is wrong."""
        min_level = 0
        level = level.strip()
        if level:
            if level.lstrip("-").isdigit():
                min_level = int(level)
            else:
                found = levels.lookup(level.upper())
                if found is None:
                    raise FilterError(f"level {level[:50]!r}: not a level name or number")
                min_level = found[1]
        chosen = frozenset(source for source in sources if source)
        if len(chosen) > MAX_SOURCES:
            raise FilterError(f"source: at most {MAX_SOURCES} sources in one filter")
        if len(q) > MAX_QUERY_CHARS:
            raise FilterError(f"q: at most {MAX_QUERY_CHARS} characters")
        invert = q.startswith("!")
        text = q[1:] if invert else q
        pattern = None
        if text:
            regex = re.fullmatch(r"/(.*)/(i?)", text, re.S)
            try:
                if regex is not None:
                    pattern = re.compile(regex.group(1), re.IGNORECASE if regex.group(2) else 0)
                else:
                    pattern = re.compile(re.escape(text), re.IGNORECASE)
            except re.error as exc:
                raise FilterError(f"q: not a regular expression: {exc}") from None
        return cls(min_level, chosen, q, pattern, invert and pattern is not None)

    @classmethod
    def from_query(cls, params: Mapping[str, list[str]], levels: Levels = DEFAULT_LEVELS) -> Filter:
        """From parsed query parameters (``urllib.parse.parse_qs``): ``level``, ``source`` (repeatable or
        comma-separated), ``q``."""
        sources = [name for value in params.get("source", []) for name in value.split(",")]
        return cls.parse((params.get("level") or [""])[-1], sources, (params.get("q") or [""])[-1], levels)

    @property
    def empty(self) -> bool:
        return not (self.min_level or self.sources or self.pattern)

    def matches(self, view: Mapping[str, Any]) -> bool:
        """Whether one record (a ``--json`` line's object) passes."""
        if self.min_level:
            levelno = view.get("levelno")
            if not isinstance(levelno, int) or levelno < self.min_level:
                return False
        if self.sources and view.get("source") not in self.sources:
            return False
        if self.pattern is not None:
            found = self.pattern.search(searchable_text(view)) is not None
            return found is not self.invert
        return True
