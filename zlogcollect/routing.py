"""Topic patterns with AMQP wildcards, the route table, and file names safe from the network."""

from __future__ import annotations

import os
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from zlogcollect.wire import Record

RESERVED_NAMES: Final = frozenset({"errors", "_malformed", "_overflow"})
"""File stems the collector writes itself; a source with such a name is written elsewhere."""

MAX_NAME_LENGTH: Final = 100
"""Longest file stem a topic may produce (file systems allow 255 bytes, rotation adds ~20)."""

MAX_COMPONENT_BYTES: Final = 200
"""Longest file or directory name (in UTF-8) a template may produce: file systems allow 255
bytes, and a rotated, compressed backup on its way adds up to 27 (``.2026-11-24_15-09-31.gz.tmp``)."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")


class RouteError(ValueError):
    """A route given by the operator is not usable."""


def match_topic(pattern: str, topic: str) -> bool:
    """True if an AMQP-style topic pattern matches: ``*`` is one word, ``#`` zero or more."""
    return _match(pattern.split("."), topic.split("."))


def check_pattern(pattern: str, what: str = "pattern") -> None:
    """Raise :class:`RouteError` unless *pattern* is dotted words, ``*`` or ``#`` (no empty word)."""
    if not pattern or any(
        not word or (("*" in word or "#" in word) and word not in ("*", "#")) for word in pattern.split(".")
    ):
        raise RouteError(
            f"{what} {pattern!r} is not a dotted topic pattern "
            "(words, '*' for one word, '#' for zero or more; no empty word)"
        )


def _match(pattern: Sequence[str], words: Sequence[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        # Zero or more words: try every split point (patterns are short, so this stays cheap).
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head == "*" or head == words[0]) and _match(rest, words[1:])


def safe_name(name: str, fallback: str = "_") -> str:
    """Turn a name from the network into a single harmless file-name component.

    Only letters, digits and ``. _ @ + -`` survive (anything else becomes
    ``_``), a leading dot becomes ``_`` (no hidden files, no ``..``), the result
    is cut to :data:`MAX_NAME_LENGTH` characters, and a name the collector
    reserves for itself gets a trailing ``_``.
    """
    cleaned = _UNSAFE.sub("_", name)
    if cleaned.startswith("."):
        cleaned = "_" + cleaned[1:]
    cleaned = cleaned[:MAX_NAME_LENGTH] or fallback
    if cleaned.lower() in RESERVED_NAMES:
        cleaned += "_"
    return cleaned


NO_PEER: Final = "_nopeer"
"""What ``{peer}`` becomes for a record without a peer (no CURVE): never a file named ``None``."""

_FIELDS: Final = frozenset({"source", "level", "host", "pid", "peer"})
_ORIGIN_FIELDS: Final = frozenset({"host", "pid"})
_PER_RECORD_FIELDS: Final = _ORIGIN_FIELDS | {"peer"}


@dataclass(frozen=True, slots=True)
class Route:
    """Records whose topic matches ``pattern`` (and are at least ``min_level``) go to ``target``.

    ``target`` is a relative path template with ``{source}``, ``{level}``,
    ``{host}`` and ``{pid}`` (the last two from the structured extension, ``_``
    for records without them) and ``{peer}`` (the CURVE certificate's name,
    :data:`NO_PEER` for records without one), each sanitised by :func:`safe_name`.
    """

    pattern: str
    target: str
    min_level: int | None = None

    def __post_init__(self) -> None:
        validate_target(self.target)
        check_pattern(self.pattern, "route pattern")

    def matches(self, record: Record) -> bool:
        """True if this route takes *record*."""
        if self.min_level is not None and record.levelno < self.min_level:
            return False
        return self.pattern == "#" or match_topic(self.pattern, record.topic)

    def path_for(self, record: Record, default_source: str) -> str:
        """The relative file path for *record*, with every placeholder sanitised.

        A name that several placeholders make longer than :data:`MAX_COMPONENT_BYTES`
        (``{source}-{level}-{host}.log``, each up to 100 characters) is cut to it,
        its extension kept.
        """
        if not self.per_record:
            path = self.target.format(
                source=safe_name(record.source or default_source), level=safe_name(record.levelname)
            )
        else:
            host, pid = origin_names(record)
            path = self.target.format(
                source=safe_name(record.source or default_source),
                level=safe_name(record.levelname),
                host=host,
                pid=pid,
                peer=peer_name(record),
            )
        # Each character is at most 4 bytes: a short path cannot have a long name.
        return path if len(path) <= MAX_COMPONENT_BYTES // 4 else "/".join(map(_fit, path.split("/")))

    @property
    def per_record(self) -> bool:
        """True if the path depends on more than the topic (``{host}``, ``{pid}`` or ``{peer}``)."""
        return bool(template_fields(self.target, "file template") & _PER_RECORD_FIELDS)

    @property
    def uses_origin(self) -> bool:
        """True if the path uses ``{host}`` or ``{pid}``."""
        return bool(template_fields(self.target, "file template") & _ORIGIN_FIELDS)

    @property
    def uses_peer(self) -> bool:
        """True if the path uses ``{peer}``."""
        return "peer" in template_fields(self.target, "file template")


def peer_name(record: Record) -> str:
    """``{peer}`` of a file template: the peer's name sanitised like a source, :data:`NO_PEER` without one."""
    peer = record.peer
    return safe_name(peer) if peer else NO_PEER


def _fit(name: str) -> str:
    """*name* cut to :data:`MAX_COMPONENT_BYTES` bytes of UTF-8, its extension (``.log``) kept."""
    data = name.encode("utf-8", "surrogatepass")
    if len(data) <= MAX_COMPONENT_BYTES:
        return name
    stem, ext = os.path.splitext(name)
    if len(ext) > 16:  # no extension, only a dot in a long name
        stem, ext = name, ""
    budget = MAX_COMPONENT_BYTES - len(ext.encode("utf-8", "surrogatepass"))
    # "ignore": a character cut in two (or a lone surrogate of the operator's template) is left out.
    return stem.encode("utf-8", "surrogatepass")[:budget].decode("utf-8", "ignore") + ext


def origin_names(record: Record) -> tuple[str, str]:
    """``{host}`` and ``{pid}`` of a file template: sanitised like a source, ``_`` when missing."""
    host, pid = record.meta.get("host"), record.meta.get("pid")
    return (
        safe_name(host) if host.__class__ is str else "_",
        str(pid) if pid.__class__ is int and pid >= 0 else "_",
    )


def validate_target(target: str) -> None:
    """Reject file templates that could leave the log directory or do not format."""
    fields = template_fields(target, "file template")
    unknown = fields - _FIELDS
    if unknown:
        raise RouteError(
            f"file template {target!r} uses {', '.join(sorted(unknown))}; "
            "only {source}, {level}, {host}, {pid} and {peer} are available"
        )
    parts = target.split("/")
    if (
        not target
        or os.path.isabs(target)
        or any(part in ("", ".", "..") for part in parts)
        or "\x00" in target
    ):
        raise RouteError(f"file template {target!r} must be a relative path inside --dir")
    stem = os.path.splitext(parts[-1])[0]
    if not fields and stem.lower() in RESERVED_NAMES and target not in _RESERVED_TARGETS:
        raise RouteError(f"file template {target!r} is reserved for the collector itself")


ERRORS_FILE: Final = "errors.log"
MALFORMED_FILE: Final = "_malformed.log"
OVERFLOW_FILE: Final = "_overflow.log"
"""Where records go whose file would exceed the collector's limit on distinct files."""
PUBLISHERS_FILE: Final = "_publishers.json"
"""Per-publisher sequence numbers kept between runs (see ledger.StateFile)."""
JOURNAL_FILE: Final = "_publishers.journal"
"""What each written batch added to the per-publisher state since the last save (see ledger.StateFile)."""
STATS_FILE: Final = "_stats.json"
"""The counters as JSON (``--stats-file``'s default in collect mode)."""
LOCK_FILE: Final = "_zlogcollect.lock"
"""Held (flock) by the one process writing --dir, with its pid in it (see daemon.lock_directory)."""
_RESERVED_TARGETS: Final = frozenset({ERRORS_FILE})


def parse_route(spec: str) -> Route:
    """Parse ``PATTERN=FILE`` as given to ``--route``."""
    pattern, sep, target = spec.partition("=")
    if not sep:
        raise RouteError(f"route {spec!r} must look like PATTERN=FILE, e.g. 'app1.ERROR.#=app1-errors.log'")
    return Route(pattern.strip(), target.strip())


def default_routes(errors_file: str | None = ERRORS_FILE, errors_level: int = 40) -> list[Route]:
    """One file per source, plus every ERROR and worse from every source in *errors_file*."""
    routes = [Route("#", "{source}.log")]
    if errors_file:
        routes.append(Route("#", errors_file, min_level=errors_level))
    return routes


class Router:
    """Maps a record to the relative file paths it belongs in (duplicates removed)."""

    __slots__ = ("_default_source", "_literal", "_routes", "_uses_origin", "_uses_peer", "per_topic")

    def __init__(self, routes: Iterable[Route], default_source: str = "default") -> None:
        self._routes = tuple(routes)
        self._default_source = default_source
        # Files the operator named outright (and the quarantine): a path built from
        # a sender's names must never land in one of them.
        self._literal = {r.target for r in self._routes if not _has_fields(r.target)} | {
            MALFORMED_FILE,
            OVERFLOW_FILE,
            PUBLISHERS_FILE,
            JOURNAL_FILE,
            STATS_FILE,
            LOCK_FILE,
        }
        self.per_topic = not any(r.per_record for r in self._routes)
        """True when the paths depend only on the topic, so a caller may cache them per topic."""
        self._uses_origin = any(r.uses_origin for r in self._routes)
        self._uses_peer = any(r.uses_peer for r in self._routes)

    def cache_key(self, record: Record) -> object:
        """What the paths of *record* depend on: its topic, plus host, pid and peer if a route uses them."""
        if self.per_topic:
            return record.topic
        if not self._uses_peer:
            # The sanitised names, not the raw ones: a peer's megabyte host name
            # must not become a cache key.
            return (record.topic, *origin_names(record))
        # The peer as it is: names from the collector's allow-list, few and short.
        if not self._uses_origin:
            return (record.topic, record.peer)
        return (record.topic, record.peer, *origin_names(record))

    def route(self, record: Record) -> list[str]:
        """Every distinct relative path *record* should be written to, in route order."""
        paths: list[str] = []
        for route in self._routes:
            if route.matches(record):
                path = route.path_for(record, self._default_source)
                if path in self._literal and _has_fields(route.target):
                    stem, ext = os.path.splitext(path)
                    path = f"{stem}_{ext}"
                if path not in paths:
                    paths.append(path)
        return paths


def _has_fields(template: str) -> bool:
    return bool(template_fields(template, "template"))


def template_fields(template: str, what: str) -> set[str]:
    """The ``{names}`` a ``str.format`` template uses; :class:`RouteError` if it does not parse."""
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise RouteError(f"{what} {template!r}: {exc}") from None
