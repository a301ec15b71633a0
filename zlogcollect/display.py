"""`zlogcollect tail`'s pure part: which records a view selects, and the text it prints for each.

No sockets: :mod:`zlogcollect.tail` feeds it parsed records. The lines are the
files' lines (the same :func:`formatting.text_formatter` or
:func:`formatting.json_formatter`), optionally coloured by level.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from zlogcollect import formatting
from zlogcollect.routing import RouteError, check_pattern, match_topic
from zlogcollect.wire import MAX_PEER_CHARS, PEER_KEY, Levels, Record, escape_controls

__all__ = ["COLORS", "RESET", "View", "ViewError", "colored", "take_peer"]

RESET: Final = "\x1b[0m"
COLORS: Final = ((50, "\x1b[1;31m"), (40, "\x1b[31m"), (30, "\x1b[33m"), (20, ""), (-(2**63), "\x1b[2m"))
"""Colour by level number, first threshold reached: CRITICAL bold red, ERROR red, WARNING yellow,
INFO plain, DEBUG and below dim. Custom levels take the colour of the standard level below them."""

MAX_CACHED_TOPICS: Final = 10_000
"""Topics whose match is remembered; the cache starts over past it."""


class ViewError(ValueError):
    """An option of `tail` that cannot be used; the message is one line naming it."""


def colored(text: str, levelno: int) -> str:
    """*text* (one or more lines) in its level's colour, reset at the end of every line.

    Records never carry an escape character of their own (the parser escapes
    control characters), so the only colour codes on the terminal are these.
    """
    code = next(code for threshold, code in COLORS if levelno >= threshold)
    if not code:
        return text
    if "\n" not in text:
        return f"{code}{text}{RESET}"
    return "\n".join(f"{code}{line}{RESET}" for line in text.split("\n"))


def take_peer(record: Record) -> str | None:
    """The record's verified peer: :attr:`Record.peer`, else a ``peer`` string in its meta, moved there.

    ``tail``'s parser (``trust_peer=True``) already puts the collector's ``peer``
    on the record; a ``peer`` left in the meta (a record built by other code) is
    taken the same way, so the formatters, which read only :attr:`Record.peer`,
    show it.
    """
    peer = record.peer
    if peer is None:
        meta = record.meta
        claimed = meta.get(PEER_KEY)
        if claimed.__class__ is str and 0 < len(claimed) <= MAX_PEER_CHARS:
            del meta[PEER_KEY]
            peer = record.peer = escape_controls(claimed)
    return peer


@dataclass
class View:
    """What `tail` shows: the records whose topic matches a pattern (all when none), as the files' lines.

    With the default format, a record that has a peer (the collector runs with
    CURVE) is shown in :data:`formatting.DEFAULT_PEER_FORMAT`, with the peer
    column, as the collector's files show it; one without keeps the six columns.

    Raises :class:`ViewError` for a pattern with an empty word, a ``--format``
    that cannot format, or a ``--level`` that is not one word.
    """

    patterns: Sequence[str] = ()
    fmt: str = formatting.DEFAULT_FORMAT
    json: bool = False
    utc: bool = False
    color: bool = False
    custom_levels: Mapping[str, int] = field(default_factory=dict)
    render: Callable[[Record], str] = field(init=False, repr=False)
    render_peer: Callable[[Record], str] | None = field(init=False, repr=False, default=None)
    """The default format with the peer column, for records with a peer (None for any other format)."""
    levels: Levels = field(init=False, repr=False)
    _matches: dict[str, bool] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        for pattern in self.patterns:
            try:
                check_pattern(pattern)
            except RouteError as exc:
                raise ViewError(str(exc)) from None
        try:
            self.levels = Levels(self.custom_levels)
        except ValueError as exc:
            raise ViewError(f"level: {exc}") from None
        if self.json:
            self.render = formatting.json_formatter(self.utc)
        else:
            try:
                self.render = formatting.text_formatter(self.fmt, self.utc)
            except formatting.FormatError as exc:
                raise ViewError(f"format: {exc}") from None
            if self.fmt == formatting.DEFAULT_FORMAT:
                self.render_peer = formatting.text_formatter(formatting.DEFAULT_PEER_FORMAT, self.utc)

    def selects(self, topic: str) -> bool:
        """True if *topic* matches one of the patterns (every topic when there are none)."""
        if not self.patterns:
            return True
        found = self._matches.get(topic)
        if found is None:
            if len(self._matches) >= MAX_CACHED_TOPICS:
                self._matches.clear()
            found = self._matches[topic] = any(match_topic(p, topic) for p in self.patterns)
        return found

    def line(self, record: Record) -> str:
        """The text for *record*, newline included: the file's line (and continuation lines), coloured if asked."""
        render = self.render_peer
        if take_peer(record) is None or render is None:
            render = self.render
        text = render(record)
        if self.color:
            return colored(text[:-1] if text.endswith("\n") else text, record.levelno) + "\n"
        return text
