"""The app side's record → frames: topics (cached), the structured extension, size cuts.

Pure (stdlib, orjson and ``wire`` only). Every extension it builds is byte-identical
to ``wire.encode_extension`` of the same fields: the fast path for plain records
only caches the JSON of the per-call-site part, encoded by that same function.
"""

from __future__ import annotations

import logging
from operator import itemgetter
from typing import Any, Final

import orjson

from zlogcollect.helpers import BoundedCache
from zlogcollect.wire import (
    MAX_RECORD_BYTES,
    MAX_TOPIC_BYTES,
    STANDARD_LEVELS,
    TOPIC_DELIM,
    build_topic,
    encode_extension,
    level_word,
)

__all__ = [
    "DEFAULT_FORMATTER",
    "PLAIN_RECORD",
    "Encoder",
    "MessageFormatter",
    "cut",
    "extra_fields",
    "fit_topic",
]

# What a plain LogRecord carries; anything else on a record came from ``extra={...}``.
PLAIN_RECORD: Final = logging.LogRecord("", logging.INFO, "", 0, "", (), None)
_BASE_ATTRS: Final = len(PLAIN_RECORD.__dict__)
_STANDARD_ATTRS: Final = frozenset(PLAIN_RECORD.__dict__) | {"message", "asctime", "taskName"}

# The record attributes that make up a call site's part of the extension (with the
# thread's names), then the three a plain record has as None: one C call builds the
# cache key from the record's __dict__, and a key with a traceback is never stored.
_SITE_KEY: Final = itemgetter(
    "levelno",
    "levelname",
    "process",
    "processName",
    "threadName",
    "name",
    "pathname",
    "lineno",
    "funcName",
    "exc_info",
    "exc_text",
    "stack_info",
)
_PREFIX: Final = len(b'{"v":1,')  # what encode_extension puts before the first field
_FAST: Final = b'{"v":1,"created":%b,%b,"seq":%d}'
_NUMBER: Final = orjson.dumps  # a float as encode_extension writes it (NaN and infinities as null)
_LEVEL_TOPICS_MAX: Final = 1000  # topics per level name (custom levels are few; a bound all the same)
_SUBTOPICS_MAX: Final = 1000  # subtopics with variable parts must not grow the cache forever
_FRAGMENTS_MAX: Final = 2048  # call sites
_SITES_MAX: Final = 2048  # "sub::message" format strings
_SITES_CHARS: Final = 1 << 20  # and their characters: messages with variable parts come and go


class MessageFormatter(logging.Formatter):
    """``%(message)s`` plus traceback and stack, without the generic formatter's overhead."""

    def __init__(self) -> None:
        super().__init__("%(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """Return the message, followed by the traceback and stack when the record has them."""
        text = record.message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text = f"{text}\n{record.exc_text}"
        if record.stack_info:
            text = f"{text}\n{self.formatStack(record.stack_info)}"
        return text


DEFAULT_FORMATTER: Final = MessageFormatter()


def fit_topic(root: str, level: str, subtopic: str) -> bytes:
    """The topic, its subtopic (then its root) cut so it stays within the collector's limit."""
    topic = build_topic(root, level, subtopic).encode("utf-8", "replace")
    if len(topic) <= MAX_TOPIC_BYTES:
        return topic
    room = MAX_TOPIC_BYTES - len(level.encode()) - 2
    root_bytes = root.encode("utf-8", "replace")[: max(room // 2, room - len(subtopic.encode()))]
    root = root_bytes.decode("utf-8", "ignore")
    sub_room = room - len(root.encode())
    subtopic = subtopic.encode("utf-8", "replace")[: max(sub_room, 0)].decode("utf-8", "ignore")
    return build_topic(root.rstrip("."), level, subtopic.strip(".")).encode("utf-8", "replace")


def cut(text: bytes, limit: int) -> bytes:
    """*text* cut to at most *limit* bytes on a character boundary, with a note of what was cut."""
    kept = text[: max(limit - 120, 0)].decode("utf-8", "ignore").encode()
    note = f"\n[zlogcollect cut {len(text) - len(kept):,} bytes here: the record was over the size limit]"
    return kept + note.encode()


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's attributes that a plain LogRecord does not have (``extra={...}``)."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS}


class Encoder:
    """One publisher's topics and extensions: what the handler sends besides the text.

    ``topics`` (by level name), ``sub_topics`` (by level name and subtopic) and
    ``sites`` (by level name and a ``"sub::message"`` format string: its topic and
    message) are plain dict lookups for the hot path; :meth:`topic` and
    :meth:`site` fill them on a miss.
    *pub* is the publisher id every extension carries; :meth:`restart` sets a
    new one (after fork) and forgets what was encoded with the old one.

    Half of *max_record_bytes* is for the text (``max_body``), the rest for the
    topic and the extension (which repeats a traceback): together they stay
    under the collector's limit.
    """

    def __init__(self, root: str, host: str, pub: str, max_record_bytes: int = MAX_RECORD_BYTES) -> None:
        self.root = root
        self.host = host
        self.pub = pub
        self.max_body = max(int(max_record_bytes) // 2, 256)
        self.max_extension = max(int(max_record_bytes) // 2 - MAX_TOPIC_BYTES, 256)
        self.topics: BoundedCache[str, bytes] = BoundedCache(_LEVEL_TOPICS_MAX)
        self.sub_topics: BoundedCache[tuple[str, str], bytes] = BoundedCache(_SUBTOPICS_MAX)
        self.sites: BoundedCache[tuple[str, str], tuple[bytes, str]] = BoundedCache(_SITES_MAX, _SITES_CHARS)
        self._fragments: BoundedCache[tuple[Any, ...], bytes] = BoundedCache(_FRAGMENTS_MAX)

    def set_root(self, root: str) -> None:
        """Use a new root topic from now on."""
        self.root = root
        self.topics.clear()
        self.sub_topics.clear()
        self.sites.clear()

    def restart(self, pub: str) -> None:
        """Use a new publisher id from now on (a fork child's)."""
        self.pub = pub
        self._fragments.clear()

    def topic(self, levelname: str, subtopic: str) -> bytes:
        """The topic for a level and subtopic, cached.

        A level name a collector would not accept from the extension is sent as one
        it does (one word); a topic over the collector's limit is cut to fit.
        """
        level = level_word(levelname)
        if not subtopic:
            topic = self.topics.get(levelname)
            if topic is None:
                topic = self.topics.put(levelname, fit_topic(self.root, level, ""))
            return topic
        return self.sub_topics.put((levelname, subtopic), fit_topic(self.root, level, subtopic))

    def site(self, levelname: str, text: str) -> tuple[bytes, str]:
        """The topic and the message of a ``"sub::message"`` format string at a level, cached.

        As ``PUBHandler`` does, the part before the first ``::`` is the subtopic.
        """
        subtopic, rest = text.split(TOPIC_DELIM, 1)
        topic = self.sub_topics.get((levelname, subtopic)) or self.topic(levelname, subtopic)
        return self.sites.put((levelname, text), (topic, rest), len(text))

    def fields(self, record: logging.LogRecord, seq: int) -> dict[str, Any]:
        """The extension's fields for *record* as record number *seq* (``dropped`` not included)."""
        fields: dict[str, Any] = {"created": record.created, "levelno": record.levelno}
        levelname = record.levelname
        if levelname not in STANDARD_LEVELS:  # a custom level: the collector learns its name here
            fields["levelname"] = level_word(levelname)
        fields.update(
            {
                "host": self.host,
                "pid": record.process,
                "process": record.processName,
                "thread": record.threadName,
                "logger": record.name,
                "path": record.pathname,
                "line": record.lineno,
                "func": record.funcName,
            }
        )
        exc_text = record.exc_text
        if record.exc_info and not exc_text:  # a custom formatter that does not cache it
            exc_text = DEFAULT_FORMATTER.formatException(record.exc_info)
        exc = "\n".join(part for part in (exc_text, record.stack_info) if part)
        if exc:
            fields["exc"] = exc
        extra = extra_fields(record)
        if extra:
            fields["extra"] = extra
        fields["pub"] = self.pub
        fields["seq"] = seq
        return fields

    def fast_extension(self, record: logging.LogRecord, seq: int) -> bytes | None:
        """The extension of a plain record without building a dict, or None if not plain.

        Byte-identical to ``encode_extension(self.fields(record, seq))``: the
        per-call-site part is encoded once by that function and cached; per call
        only ``created`` (by orjson, as encode_extension writes it) and ``seq``.
        """
        created = record.created
        if created.__class__ is not float:
            return None
        attrs = record.__dict__
        added = len(attrs) - _BASE_ATTRS
        if added > 0:
            # Formatters add "message" and "asctime"; only more than that can be extra.
            added -= ("message" in attrs) + ("asctime" in attrs)
            if added > 0 and extra_fields(record):
                return None
        try:
            key = _SITE_KEY(attrs)
            fragment = self._fragments.get(key)
        except (KeyError, TypeError):  # an attribute deleted, or set to something unhashable
            return None
        if fragment is None:
            if key[9] or key[10] or key[11]:  # exc_info, exc_text, stack_info: not a plain record
                return None
            fragment = self._fragments.put(key, self._fragment(key))
        return _FAST % (_NUMBER(created), fragment, seq)

    def _fragment(self, key: tuple[Any, ...]) -> bytes:
        # The level is part of the call site's fragment, so a custom level costs
        # nothing per call once its fragment is cached.
        fields: dict[str, Any] = {"levelno": key[0]}
        if key[1] not in STANDARD_LEVELS:
            fields["levelname"] = level_word(key[1])
        fields.update(
            host=self.host,
            pid=key[2],
            process=key[3],
            thread=key[4],
            logger=key[5],
            path=key[6],
            line=key[7],
            func=key[8],
            pub=self.pub,
        )
        return encode_extension(fields)[_PREFIX:-1]

    def extension(self, fields: dict[str, Any], dropped: int = 0) -> bytes:
        """*fields* (plus *dropped* when not 0) as the third frame, cut to the collector's limit."""
        if dropped:
            fields["dropped"] = dropped
        try:
            extension = encode_extension(fields)
        except (TypeError, ValueError):
            # An extra value JSON rejects even with default=repr (a dict with tuple
            # keys, a cycle): send the repr of everything that is not a plain scalar.
            safe = (str, int, float, type(None))
            fields = {k: v if isinstance(v, safe) else repr(v) for k, v in fields.items()}
            extension = encode_extension(fields)
        if len(extension) <= self.max_extension:
            return extension
        # Too large for the collector: cut the traceback, then the extra fields.
        limit = self.max_extension
        if isinstance(fields.get("exc"), str):
            fields["exc"] = cut(fields["exc"].encode(), limit // 2).decode()
        if "extra" in fields and len(encode_extension(fields)) > limit:
            size = len(encode_extension(fields["extra"]))
            fields["extra"] = {"zlogcollect_cut": f"{size} bytes of extra fields, over the record limit"}
        extension = encode_extension(fields)
        if len(extension) > limit:  # long names everywhere: keep only what loss accounting needs
            kept = ("created", "levelno", "levelname", "pub", "seq", "dropped")
            extension = encode_extension({k: fields[k] for k in kept if k in fields})
        return extension
