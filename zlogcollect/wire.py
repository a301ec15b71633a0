"""The wire format both sides share: levels, the topic grammar, frames to records."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeGuard

import orjson

from zlogcollect.helpers import BoundedCache

TOPIC_DELIM: Final = "::"
"""Separates a subtopic from the message in a log call: ``log.error("db::timeout")``."""

EXTENSION_VERSION: Final = 1
"""Version of the optional third frame (the structured extension), see docs/WIRE.md."""

MAX_RECORD_BYTES: Final = 1024 * 1024
"""Default largest topic + body + extension a record may have before it is quarantined."""

STANDARD_LEVELS: Final[Mapping[str, int]] = {
    "NOTSET": 0,
    "DEBUG": 10,
    "INFO": 20,
    "WARNING": 30,
    "ERROR": 40,
    "CRITICAL": 50,
}

LEVEL_ALIASES: Final[Mapping[str, str]] = {"WARN": "WARNING", "FATAL": "CRITICAL"}
"""Names `logging` accepts as synonyms; records are stored under the canonical name."""

MAX_TOPIC_BYTES: Final = 1024
"""Longest topic frame accepted; a longer one is malformed (``topic_too_long``)."""

MAX_LEARNED_LEVELS: Final = 1000
"""Custom level names (with their numbers) a parser remembers from extensions, for hints."""

MAX_HOST_CHARS: Final = 255
"""Longest ``host`` accepted in an extension (a DNS name is at most 253)."""

MAX_INT: Final = 2**63 - 1
"""Largest ``seq`` and ``dropped`` accepted: what a 64-bit counter can hold."""

MAX_GOOD_PUBS: Final = 10_000
"""Valid publisher ids a parser remembers (it starts over when full): each is at most 64 characters."""

MAX_PID: Final = 2**32 - 1
MAX_LINE: Final = 2**31 - 1
MIN_LEVELNO, MAX_LEVELNO = -(2**31), 2**31 - 1

_PUB_TOKEN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # handlers send 16 hex digits
_pub_ok = _PUB_TOKEN.fullmatch
_LEVEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,31}")  # one word, no dots, at most 32 characters


def level_word(name: str) -> str:
    """*name* as a level name a collector accepts from the extension (see docs/WIRE.md).

    Standard names, ``Level N`` and one-word names of at most 32 characters stay
    as they are; anything else (a space, a ``|``, a dot, 40 characters) has
    each other character replaced by ``_`` and is cut to 32.
    """
    if name in STANDARD_LEVELS or _LEVEL_NAME.fullmatch(name) or _NUMBERED_LEVEL.fullmatch(name):
        return name
    word = re.sub(r"[^A-Za-z0-9_-]", "_", name)
    if not word or not (word[0].isalpha() or word[0] == "_"):
        word = "_" + word
    return word[:32]


_LEVEL_LIKE = re.compile(r"[A-Z][A-Z0-9_]{1,31}")  # what an unknown level in a topic usually looks like

_MAX_MARK_EXTENSION: Final = 64 * 1024  # largest extension still read from a too_large record

_STOCK_NO_EXC: Final = " - None"  # stock PUBHandler's ERROR format: "... - %(exc_info)s"
_NUMBERED_LEVEL = re.compile(r"Level (-?\d{1,9})")  # what logging names an unnamed level


class MalformedRecord(ValueError):
    """A frame set that cannot become a record; ``reason`` is a short counter key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.mark: SequenceMark | None = None
        """The record's publisher and sequence number, when its extension had them."""


class UnknownLevel(MalformedRecord):
    """``no_level`` for a topic with a component that looks like a level nobody configured."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__("no_level", detail)
        self.level = name


class Levels:
    """The level names a collector recognises in topics, standard plus custom ones."""

    __slots__ = ("_by_name",)

    def __init__(self, custom: Mapping[str, int] | None = None) -> None:
        by_name = dict(STANDARD_LEVELS)
        for name, number in (custom or {}).items():
            if not name or "." in name or name != name.strip():
                raise ValueError(f"level name {name!r} must be one word without dots")
            by_name[name] = int(number)
        self._by_name = by_name

    def lookup(self, token: str) -> tuple[str, int] | None:
        """Return ``(canonical name, number)`` if *token* names a level, else None."""
        number = self._by_name.get(token)
        if number is not None:
            return token, number
        alias = LEVEL_ALIASES.get(token)
        if alias is not None:
            return alias, self._by_name[alias]
        match = _NUMBERED_LEVEL.fullmatch(token)
        if match is not None:
            return token, int(match.group(1))
        return None

    @property
    def names(self) -> list[str]:
        """Every configured level name, standard ones included."""
        return list(self._by_name)


DEFAULT_LEVELS: Final = Levels()


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed topic ``[ROOT.]LEVEL[.SUBTOPIC]``; root and subtopic may contain dots."""

    root: str
    level: str
    subtopic: str = ""


def build_topic(root: str, level: str, subtopic: str = "") -> str:
    """Join the parts the way ``zmq.log.handlers.PUBHandler`` does."""
    return ".".join(part for part in (root, level, subtopic) if part)


def parse_topic(topic: str, levels: Levels = DEFAULT_LEVELS) -> tuple[Topic, int]:
    """Split a topic at the first component that names a level.

    Returns the topic and the level number; raises :class:`MalformedRecord`
    when the topic is empty or no component names a level.
    """
    if not topic:
        raise MalformedRecord("empty_topic", "the topic frame is empty")
    parts = topic.split(".")
    for index, token in enumerate(parts):
        found = levels.lookup(token)
        if found is not None:
            name, number = found
            return Topic(".".join(parts[:index]), name, ".".join(parts[index + 1 :])), number
    raise MalformedRecord("no_level", "no component of the topic names a log level")


@dataclass(slots=True, init=False)
class Record:
    """One log record as the collector sees it, whatever sent it."""

    source: str
    levelname: str
    levelno: int
    subtopic: str
    message: str
    received: float
    created: float | None
    meta: dict[str, Any]
    """Fields of the structured extension (host, pid, logger, ...), empty for stock senders."""
    topic: str
    """The canonical topic (``WARN`` spelled ``WARNING``); filled in from the parts if not given."""
    peer: str | None = field(default=None, init=False)
    """The name of the CURVE certificate the record came with, as the collector verified it
    (``app1`` for ``app1.key``); None without CURVE. Never taken from what a client sends
    (see :data:`PEER_KEY`). Not an ``__init__`` parameter: the collector assigns it only with
    CURVE on. The class has ``__slots__``, so ``__init__`` sets the None (one store)."""

    def __init__(  # written out: the generated one calls __post_init__, a third of a record's cost
        self,
        source: str,
        levelname: str,
        levelno: int,
        subtopic: str,
        message: str,
        received: float,
        created: float | None = None,
        meta: dict[str, Any] | None = None,
        topic: str = "",
    ) -> None:
        self.source = source
        self.levelname = levelname
        self.levelno = levelno
        self.subtopic = subtopic
        self.message = message
        self.received = received
        self.created = created
        self.meta = {} if meta is None else meta
        self.topic = topic or build_topic(source, levelname, subtopic)
        self.peer = None

    @property
    def time(self) -> float:
        """When the event happened: the sender's stamp when it sent one, else the receive time."""
        return self.created if self.created is not None else self.received


PEER_KEY: Final = "peer"
"""The extension key reserved for the collector-verified peer name (docs/WIRE.md).

A client cannot set it: the collector's parser moves a ``peer`` a client sent to
:data:`CLAIMED_PEER`. Only the republished stream (``--publish``) carries it, put
there by the collector (:func:`extension_with_peer`) and read by ``tail``
(``Parser(trust_peer=True)``)."""

CLAIMED_PEER: Final = "claimed_peer"
"""Where a ``peer`` key a client sent in its extension is kept (in ``Record.meta``): shown, never trusted."""

CLAIMED_SOURCE: Final = "claimed_source"
"""With ``--source-from-peer``: the source the record's topic claimed, when it was not the peer's name."""

MAX_PEER_CHARS: Final = 255
"""Longest peer name a trusting parser accepts (a certificate's file name; file systems allow 255 bytes)."""


def with_peer_source(record: Record, peer: str) -> Record:
    """*record* as ``--source-from-peer`` makes it: the peer's name is its peer and its source.

    The topic is rebuilt with the peer as its root (routes, files and the
    republished stream follow it), so a key can only ever write into its own
    files, whatever topic it claims. The source the topic claimed is kept in
    ``meta["claimed_source"]`` when it differs from the peer's name (so
    ``--json`` lines show an impersonation attempt); when it is the peer's own
    name, no key is added (and one a client sent is removed). Control
    characters in *peer* are escaped as in a topic. Returns *record*, changed
    in place.
    """
    peer = escape_controls(peer)
    record.peer = peer
    claimed = record.source
    meta = record.meta
    if claimed == peer:
        if CLAIMED_SOURCE in meta:
            del meta[CLAIMED_SOURCE]
        return record
    meta[CLAIMED_SOURCE] = claimed
    topic = record.topic
    if not claimed and peer:
        record.topic = f"{peer}.{topic}"
    elif claimed and peer and topic.startswith(claimed) and topic[len(claimed) : len(claimed) + 1] == ".":
        record.topic = peer + topic[len(claimed) :]  # the canonical topic: the root is its first part
    else:
        record.topic = build_topic(peer, record.levelname, record.subtopic)
    record.source = peer
    return record


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
"""Characters that act on a terminal or break a line (NUL, CR, ESC, C1, the Unicode line separators);
tab and newline are text (a newline starts a continuation line). NUL makes a topic or text
malformed; in the extension's strings (exc, \\u0000 in JSON) it is escaped like the rest."""


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return "\\r" if code == 13 else f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """*text* with control characters written as escapes (``\\x1b``, ``\\r``, ``\\u2028``).

    As rsyslog does on receive: a line read with ``tail`` or ``less`` must not
    move the cursor, clear the screen, or hide a forged line behind a CR.
    """
    if text.isprintable():  # the common case, checked in C
        return text
    return _CONTROL.sub(_escaped, text)


def _decode(frame: bytes, what: str) -> str:
    try:
        text = frame.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedRecord("bad_utf8", f"{what} is not valid UTF-8 at byte {exc.start}") from exc
    if "\x00" in text:
        raise MalformedRecord("nul_byte", f"{what} contains a NUL byte")
    # A topic is one line: a newline in it would split the source or subtopic column of
    # a line (and the continuation prefix, which repeats the source) into a line of its own.
    return escape_controls(text).replace("\n", "\\n")


_JSON_DECODE = json.JSONDecoder().decode  # json.loads(bytes) also sniffs the encoding per call
_orjson_loads = orjson.loads


MAX_EXTENSION_DEPTH: Final = 32
"""Deepest nesting of objects and arrays an extension may have (``extra`` values included)."""


def _depth(value: object) -> int:
    """How deeply *value* nests lists and dicts, without recursion."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Iterable[object] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_EXTENSION_DEPTH:
            break
        stack.extend((child, level + 1) for child in children)
    return deepest


def decode_extension(frame: bytes) -> dict[str, Any]:
    """Parse the optional third frame; raises :class:`MalformedRecord` if it is not one.

    orjson reads it (about 3.6x faster than the stdlib here); what orjson refuses
    but the stdlib's encoder can produce (lone surrogates such as a path decoded
    with surrogateescape, NaN) is read again by :mod:`json`, so every extension
    an older handler sent still parses as before. A number beyond 64 bits reads
    as a float (docs/WIRE.md).
    """
    try:
        data = _orjson_loads(frame)
    except ValueError:
        try:
            data = _JSON_DECODE(frame.decode())
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            # RecursionError: a few kB of nested brackets, which a hostile peer can send.
            raise MalformedRecord("bad_extension", "the third frame is not JSON") from exc
    # Python 3.13's decoder no longer stops deep nesting with a RecursionError, and
    # every later consumer (JSON lines, the AMQP body) would have to: limit it here.
    # Looking for brackets first keeps the walk off the path of ordinary records (one object,
    # no list); ``in`` and ``find`` use memchr, ten times cheaper than counting.
    if (
        (b"[" in frame or frame.find(b"{", 1) != -1)
        and frame.count(b"[") + frame.count(b"{") > MAX_EXTENSION_DEPTH
        and _depth(data) > MAX_EXTENSION_DEPTH
    ):
        raise MalformedRecord(
            "bad_extension", f"the third frame nests deeper than {MAX_EXTENSION_DEPTH} levels"
        )
    if not isinstance(data, dict) or data.get("v") != EXTENSION_VERSION:
        raise MalformedRecord(
            "bad_extension", f"the third frame is not a version {EXTENSION_VERSION} extension"
        )
    return data


# orjson writes compact JSON in insertion order, as UTF-8 (non-ASCII unescaped), NaN and
# infinities as null. Non-str keys (int, float, bool, None) become strings, as json did;
# datetimes and dataclasses go to _json_default (their repr, as before) instead of
# orjson's own rendering.
_ORJSON_OPTIONS: Final = (
    orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)
_ORJSON_DUMPS: Final = orjson.dumps
_JSON_SAFE_DEPTH: Final = 64  # deeper than a collector accepts (MAX_EXTENSION_DEPTH) anyway
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1  # the integers orjson writes as numbers


def _json_default(value: object) -> object:
    """What json.dumps(default=repr) made of a value orjson does not take natively."""
    if isinstance(value, float):  # a float subclass: its number
        return float(value)
    if isinstance(value, tuple):  # a namedtuple or other tuple subclass: an array
        return list(value)
    return repr(value)


def _json_safe(value: Any, depth: int = 0) -> Any:
    """*value* with what orjson refuses made JSON: big ints and keys as their repr, lone surrogates escaped.

    Containers deeper than ``_JSON_SAFE_DEPTH`` (or cyclic) are left as they are:
    orjson still refuses them, and the encoder then sends the field's repr.
    """
    cls = value.__class__
    if cls is str or isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:  # lone surrogates (a surrogateescape'd path): \udc80 as text
            return value.encode("utf-8", "backslashreplace").decode()
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value if _INT64_MIN <= value <= _UINT64_MAX else repr(value)
    if depth >= _JSON_SAFE_DEPTH:
        return value
    if isinstance(value, dict):
        return {_json_key(k): _json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v, depth + 1) for v in value]
    return value


def _json_key(key: object) -> object:
    if isinstance(key, (str, int, float)) or key is None:  # what OPT_NON_STR_KEYS writes (bool is an int)
        return _json_safe(key)
    return repr(key)


def encode_extension(fields: Mapping[str, Any]) -> bytes:
    """Serialise extension fields as the third frame (compact JSON, UTF-8, version tagged).

    NaN and infinities are written as ``null`` (in ``extra``: as the words ``"NaN"``,
    ``"Infinity"``, ``"-Infinity"``); integers beyond 64 bits, keys JSON
    cannot hold and objects JSON has no type for as their ``repr``; lone
    surrogates as ``\\udXXX`` text. Raises ``TypeError`` (orjson's
    ``JSONEncodeError``) only for what is nested too deep or cyclic.
    """
    data = {"v": EXTENSION_VERSION, **fields}
    try:
        out: bytes = _ORJSON_DUMPS(data, default=_json_default, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        # Rare (a huge int, a surrogate, a tuple key): made safe, then tried once more.
        data = _json_safe(data)
        out = _ORJSON_DUMPS(data, default=_json_default, option=_ORJSON_OPTIONS)
    if b"null" in out and _non_finite(data.get("extra")):
        # orjson writes NaN as null; in extra fields the value says something (a ratio
        # that is NaN), so it goes as the word the collector's JSON lines always showed.
        data["extra"] = _finite_words(data["extra"])
        out = _ORJSON_DUMPS(data, default=_json_default, option=_ORJSON_OPTIONS)
    return out


_NON_FINITE_WORDS: Final = {math.inf: "Infinity", -math.inf: "-Infinity"}


def _non_finite(value: object, depth: int = 0) -> bool:
    """True if *value* holds a NaN or an infinity (in dicts and lists up to the safe depth)."""
    if value.__class__ is float or isinstance(value, float):
        return not math.isfinite(value)
    if depth < _JSON_SAFE_DEPTH:
        if isinstance(value, dict):
            return any(_non_finite(item, depth + 1) for item in value.values())
        if isinstance(value, (list, tuple)):
            return any(_non_finite(item, depth + 1) for item in value)
    return False


def _finite_words(value: Any, depth: int = 0) -> Any:
    """*value* with NaN and the infinities as ``"NaN"``, ``"Infinity"``, ``"-Infinity"``."""
    if isinstance(value, float) and not math.isfinite(value):
        return _NON_FINITE_WORDS.get(value, "NaN")
    if depth < _JSON_SAFE_DEPTH:
        if isinstance(value, dict):
            return {key: _finite_words(item, depth + 1) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [_finite_words(item, depth + 1) for item in value]
    return value


def escape_text(text: object, limit: int = 300) -> str:
    """*text* as one safe line for stderr: control characters escaped repr-style, cut at *limit*."""
    shown = repr(str(text))[1:-1]
    return shown if len(shown) <= limit else shown[:limit] + f"...[{len(shown) - limit} more]"


@dataclass(frozen=True, slots=True)
class SequenceMark:
    """A publisher's record number as its extension carries it: what loss accounting needs."""

    publisher: str
    seq: int
    dropped: int
    host: str
    pid: int | None


def _int_in(value: object, low: int, high: int) -> TypeGuard[int]:
    return isinstance(value, int) and value.__class__ is int and low <= value <= high


def sequence_mark(meta: Mapping[str, Any]) -> SequenceMark | None:
    """The loss-accounting fields of a parsed extension, or None if they are missing or out of range.

    ``host`` and ``pid`` that are out of range become ``"?"`` and None here: they
    only label the publisher, and its sequence must be counted anyway.
    """
    publisher, seq, dropped = meta.get("pub"), meta.get("seq"), meta.get("dropped", 0)
    if not isinstance(publisher, str) or _PUB_TOKEN.fullmatch(publisher) is None:
        return None
    if not _int_in(seq, 0, MAX_INT):
        return None
    if not _int_in(dropped, 0, MAX_INT):
        dropped = 0
    host = meta.get("host")
    pid = meta.get("pid")
    return SequenceMark(
        publisher,
        seq,
        dropped,
        host if isinstance(host, str) and len(host) <= MAX_HOST_CHARS else "?",
        pid if _int_in(pid, 0, MAX_PID) else None,
    )


def check_extension(meta: Mapping[str, Any], good_pubs: Container[object] = ()) -> None:
    """Raise ``bad_extension`` if a field the collector uses is of the wrong type or out of range.

    The ranges are in docs/WIRE.md; ``null`` is allowed where `logging` may leave a field out.
    *good_pubs*: publisher ids already found valid (a parser's cache), not matched again.
    """
    # Runs for every record: one expression for the usual case, class checks (a bool is not
    # an int here); anything else goes through the loop below, which names the bad field.
    get = meta.get
    seq, dropped, pid, line, levelno = (
        get("seq", 0),
        get("dropped", 0),
        get("pid"),
        get("line"),
        get("levelno", 0),
    )
    if not (
        seq.__class__ is int
        and 0 <= seq <= MAX_INT
        and dropped.__class__ is int
        and 0 <= dropped <= MAX_INT
        and (pid is None or (pid.__class__ is int and 0 <= pid <= MAX_PID))
        and (line is None or (line.__class__ is int and 0 <= line <= MAX_LINE))
        and levelno.__class__ is int
        and MIN_LEVELNO <= levelno <= MAX_LEVELNO
    ):
        _check_ints(meta)
    pub = get("pub")
    if pub is not None and (pub.__class__ is not str or (pub not in good_pubs and _pub_ok(pub) is None)):
        raise MalformedRecord("bad_extension", f"pub must be 1-64 of [A-Za-z0-9_.:-], got {_describe(pub)}")
    host = get("host")
    if host is not None and (host.__class__ is not str or len(host) > MAX_HOST_CHARS):
        raise MalformedRecord(
            "bad_extension",
            f"host must be a string of at most {MAX_HOST_CHARS} characters, got {_describe(host)}",
        )


def _check_ints(meta: Mapping[str, Any]) -> None:
    """Raise ``bad_extension`` naming the first integer field that is of the wrong type or out of range."""
    for key, low, high, nullable in _INT_FIELDS:
        value = meta.get(key, _ABSENT)
        if value is _ABSENT or (value is None and nullable):
            continue
        if value.__class__ is not int or not low <= value <= high:
            raise MalformedRecord(
                "bad_extension", f"{key} must be an integer in {low}..{high}, got {_describe(value)}"
            )


_ABSENT: Final = object()

_INT_FIELDS: Final = (
    ("seq", 0, MAX_INT, False),
    ("dropped", 0, MAX_INT, False),
    ("pid", 0, MAX_PID, True),
    ("line", 0, MAX_LINE, True),
    ("levelno", MIN_LEVELNO, MAX_LEVELNO, False),
)


def _describe(value: object) -> str:
    """A short, safe description of a bad value (a 4,000-digit int must not be printed whole)."""
    if isinstance(value, int) and not isinstance(value, bool):
        digits = len(str(abs(value))) if abs(value) < 10**100 else "over 100"
        return f"an integer of {digits} digits"
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    return type(value).__name__


@dataclass(frozen=True, slots=True)
class _TopicInfo:
    root: str
    level: str
    number: int
    subtopic: str
    topic: str
    prefix: str  # "LEVEL ", which the stock formatters put in front of the text


class Parser:
    """Frames to records, remembering what each distinct topic parsed to.

    A collector sees the same few topics over and over; parsing each one once
    (and checking its UTF-8 and NUL bytes once) keeps the per-record work to
    decoding the text. The cache is bounded by entries and by bytes (topics are
    at most :data:`MAX_TOPIC_BYTES`) and simply starts over when full.

    ``peer`` is a reserved extension key (:data:`PEER_KEY`). By default (the
    collector) a ``peer`` a client sent is moved to ``meta["claimed_peer"]`` and
    never becomes :attr:`Record.peer`. With ``trust_peer=True`` (``tail``, which
    reads the collector's ``--publish`` stream, where the collector put it) it
    sets :attr:`Record.peer`: a string of 1 to :data:`MAX_PEER_CHARS` characters
    (control characters escaped), ``null`` for none; anything else is
    ``bad_extension``.
    """

    __slots__ = (
        "_cache",
        "_good_pubs",
        "_learned",
        "_levels",
        "_max_bytes",
        "_trust_peer",
    )

    def __init__(
        self,
        levels: Levels = DEFAULT_LEVELS,
        max_bytes: int = MAX_RECORD_BYTES,
        cache_size: int = 10_000,
        cache_bytes: int = 4 * 1024 * 1024,
        trust_peer: bool = False,
    ) -> None:
        self._levels = levels
        self._trust_peer = trust_peer
        """True only in ``tail``: a ``peer`` key in the extension is the collector's verified peer."""
        self._max_bytes = max_bytes
        self._cache: BoundedCache[bytes, _TopicInfo] = BoundedCache(cache_size, cache_bytes)
        self._good_pubs: BoundedCache[str, bool] = BoundedCache(MAX_GOOD_PUBS)
        """Publisher ids seen valid: a record's id is matched against the pattern once per publisher."""
        self._learned: dict[str, int] = {}
        """Custom level names seen with their numbers in extensions: the hint for stock senders."""

    @property
    def cache_bytes(self) -> int:
        """Roughly what the topic cache holds (the raw topic and its parts)."""
        return self._cache.cost

    def _learn(self, raw: bytes) -> _TopicInfo:
        topic, number = parse_topic(_decode(raw, "the topic"), self._levels)
        info = _info(topic, number)
        # Each entry keeps the raw topic and about three copies of it as text.
        return self._cache.put(raw, info, 4 * len(raw) + 200)

    def _custom_level(self, raw: bytes, meta: Mapping[str, Any] | None) -> _TopicInfo:
        """A topic with no configured level: use the level the extension names, if the topic has it.

        Records of the project's own handler carry ``levelname`` and ``levelno``
        for non-standard levels, so ``logging.addLevelName(25, "NOTICE")`` in an
        app needs no ``--level`` on the collector. Stock senders get a hint.
        """
        text = _decode(raw, "the topic")
        if not text:
            raise MalformedRecord("empty_topic", "the topic frame is empty")
        parts = text.split(".")
        if meta is not None:
            name, number = meta.get("levelname"), meta.get("levelno")
            if (
                isinstance(name, str)
                and isinstance(number, int)  # check_extension has bounded it already
                and _LEVEL_NAME.fullmatch(name) is not None
                and name in parts
            ):
                if name not in self._learned and len(self._learned) < MAX_LEARNED_LEVELS:
                    self._learned[name] = number
                index = parts.index(name)
                topic = Topic(".".join(parts[:index]), name, ".".join(parts[index + 1 :]))
                return _info(topic, number)
            if isinstance(name, str) and isinstance(number, int) and name in parts:
                # Named, numbered, but not one word: say so (once per name, on stderr) rather
                # than quarantine it as if nobody had named the level.
                raise UnknownLevel(
                    name,
                    f"level name {name!r} is not one word of at most 32 letters, digits, _ or - "
                    f"(zlogcollect's handler sends it as {level_word(name)!r})",
                )
        candidates = [part for part in parts if part in self._learned] or [
            part for part in parts if _LEVEL_LIKE.fullmatch(part)
        ]
        if not candidates:
            raise MalformedRecord("no_level", "no component of the topic names a log level")
        name = candidates[0] if candidates[0] in self._learned else candidates[-1]
        number = self._learned.get(name)
        hint = f"add --level {name}={number}" if number is not None else f"add --level {name}=NUMBER"
        raise UnknownLevel(name, f"unknown level {name!r} \u2014 {hint}")

    def parse(self, frames: Sequence[bytes], received: float) -> Record:
        """Turn ``[topic, text]`` (or ``[topic, text, extension]``) into a :class:`Record`.

        The one trailing newline that PUBHandler's formatters add is removed, and
        in two-frame records (the stock handler's) so are two warts of the stock
        formatters: the leading ``"LEVELNAME "`` they repeat for every level but
        INFO, and the ``" - None"`` their ERROR format appends when there is no
        exception. A record with the extension keeps its text as sent. Raises
        :class:`MalformedRecord` for anything that cannot be a record; when the
        extension parsed and had a valid ``pub``/``seq``, the exception's
        ``mark`` carries them, so a quarantined record is never counted lost.
        """
        count = len(frames)
        if count == 2:
            raw, body = frames
            size = len(raw) + len(body)
        elif count == 3:
            raw, body, extension = frames
            size = len(raw) + len(body) + len(extension)
        else:
            raise MalformedRecord("frame_count", f"expected 2 or 3 frames, got {count}")
        if size > self._max_bytes:
            bad = MalformedRecord("too_large", f"{size} bytes is over the limit of {self._max_bytes}")
            if count == 3 and len(extension) <= _MAX_MARK_EXTENSION:
                # Its sequence number still counts (a big traceback is not a lost record).
                try:
                    bad.mark = sequence_mark(decode_extension(extension))
                except MalformedRecord:
                    pass
            raise bad
        meta: dict[str, Any] | None = None
        if count == 3:
            meta = decode_extension(extension)
        try:
            return self._parse(raw, body, meta, received)
        except MalformedRecord as bad:
            if meta is not None:
                bad.mark = sequence_mark(meta)
            raise

    def _parse(  # noqa: C901 - the collector's per-record hot path, kept in one frame on purpose
        self, raw: bytes, body: bytes, meta: dict[str, Any] | None, received: float
    ) -> Record:
        if len(raw) > MAX_TOPIC_BYTES:
            raise MalformedRecord(
                "topic_too_long", f"{len(raw)} bytes is over the limit of {MAX_TOPIC_BYTES}"
            )
        if meta is not None:
            good_pubs = self._good_pubs
            check_extension(meta, good_pubs)
            pub = meta.get("pub")
            if pub is not None and pub not in good_pubs:
                good_pubs.put(pub, True)
        info = self._cache.get(raw)
        if info is None:
            try:
                info = self._learn(raw)
            except MalformedRecord as bad:
                if bad.reason != "no_level":
                    raise
                info = self._custom_level(raw, meta)
        try:
            text = body.decode()
        except UnicodeDecodeError as exc:
            raise MalformedRecord("bad_utf8", f"the message is not valid UTF-8 at byte {exc.start}") from exc
        if "\x00" in text:
            raise MalformedRecord("nul_byte", "the message contains a NUL byte")
        if not text.isprintable():
            text = escape_controls(text)
        if text.endswith("\n"):
            text = text[:-1]
        if meta is None:  # the stock formatters' warts; zlogcollect's senders send the text as it is
            if text.startswith(info.prefix):
                text = text[len(info.prefix) :]
            if info.number == 40 and text.endswith(_STOCK_NO_EXC) and info.level == "ERROR":
                text = text[: -len(_STOCK_NO_EXC)]
        if meta is None:
            return Record(
                info.root, info.level, info.number, info.subtopic, text, received, None, {}, info.topic
            )
        created = meta.pop("created", None)
        # Only a plausible epoch time is used (finite, 1970..2200, not a bool);
        # anything else keeps the receive time rather than losing the record.
        stamp = float(created) if created.__class__ in (int, float) and 0 <= created < 7.3e9 else None
        trace = meta.get("exc")
        if trace is not None:
            meta["exc"] = escape_controls(trace if isinstance(trace, str) else repr(trace))
        meta.pop("v", None)
        if "peer" not in meta:  # PEER_KEY, reserved: one lookup of a constant for every other record
            return Record(
                info.root, info.level, info.number, info.subtopic, text, received, stamp, meta, info.topic
            )
        return self._take_peer(
            Record(
                info.root, info.level, info.number, info.subtopic, text, received, stamp, meta, info.topic
            ),
            meta,
        )

    def _take_peer(self, record: Record, meta: dict[str, Any]) -> Record:
        peer = meta.pop(PEER_KEY)
        if not self._trust_peer:
            meta[CLAIMED_PEER] = peer  # a client's claim: kept for the record, never its peer
        elif peer.__class__ is str and 0 < len(peer) <= MAX_PEER_CHARS:
            record.peer = escape_controls(peer)
        elif peer is not None:
            raise MalformedRecord(
                "bad_extension",
                f"peer must be a string of 1-{MAX_PEER_CHARS} characters, got {_describe(peer)}",
            )
        return record


def _info(topic: Topic, number: int) -> _TopicInfo:
    return _TopicInfo(
        topic.root,
        topic.level,
        number,
        topic.subtopic,
        build_topic(topic.root, topic.level, topic.subtopic),
        topic.level + " ",
    )


def parse_frames(
    frames: Sequence[bytes],
    received: float,
    levels: Levels = DEFAULT_LEVELS,
    max_bytes: int = MAX_RECORD_BYTES,
) -> Record:
    """Parse one frame set without a cache; see :meth:`Parser.parse`."""
    return Parser(levels, max_bytes).parse(frames, received)


_PEER_JSON: BoundedCache[str, bytes] = BoundedCache(1000)
"""Peer names as JSON strings: a collector has a few, each spliced into every record it sends."""


def _peer_json(peer: str) -> bytes:
    text = _PEER_JSON.get(peer)
    if text is None:
        # As encode_extension writes it: a lone surrogate (a file name decoded with
        # surrogateescape) as the text \udcXX, the rest as UTF-8.
        text = _PEER_JSON.put(peer, _ORJSON_DUMPS(_json_safe(peer)))
    return text


def extension_with_peer(frames: Sequence[bytes], peer: str | None) -> list[bytes]:
    """The frames of an accepted record with *peer* as its extension's ``peer`` (for ``--publish``).

    A three-frame record's extension gets ``,"peer":NAME`` spliced in before
    its closing brace (no re-encoding); a two-frame record gains the minimal
    extension ``{"v":1,"peer":NAME}``, which a parser accepts and which has no
    ``pub``/``seq``, so it never enters loss accounting (give it the text as
    the collector cleaned it, i.e. after :class:`~zlogcollect.republish.Reframer`:
    a parser keeps the text of a record with an extension as it is).

    A ``peer`` key the client put in its extension is never passed on as a
    peer: an extension that contains ``"peer"`` anywhere is decoded and
    encoded again with that key moved to ``claimed_peer`` (and *peer*, if
    any, as ``peer``). So with *peer* None the result carries no ``peer`` at
    all. That is the rare path; a caller may skip this function for a record
    whose ``peer`` is None and whose meta has no ``claimed_peer`` (the
    collector's parser found no ``peer`` key): its frames carry none.
    Raises ``ValueError`` for a frame count other than 2 or 3, and
    :class:`MalformedRecord` for an extension a collector would not accept.
    """
    count = len(frames)
    if count == 2:
        if peer is None:
            return list(frames)
        return [frames[0], frames[1], b'{"v":1,"peer":' + _peer_json(peer) + b"}"]
    if count != 3:
        raise ValueError(f"expected 2 or 3 frames, got {count}")
    extension = frames[2]
    body = extension.rstrip()
    if b'"peer"' not in extension and body.endswith(b"}"):
        if peer is None:
            return list(frames)
        return [frames[0], frames[1], body[:-1] + b',"peer":' + _peer_json(peer) + b"}"]
    data = decode_extension(extension)
    if PEER_KEY in data:
        data[CLAIMED_PEER] = data.pop(PEER_KEY)
    if peer is not None:
        data[PEER_KEY] = peer
    return [frames[0], frames[1], encode_extension(data)]


def escape_frames(frames: Sequence[bytes], limit: int = 2000) -> str:
    """A safe one-line rendering of raw frames for the quarantine file, cut at *limit*."""
    shown: list[str] = []
    budget = limit
    for frame in frames:
        piece = frame[: max(budget, 0)]
        text = repr(piece)[2:-1]  # bytes repr escapes control bytes, quotes and non-ASCII
        if len(piece) < len(frame):
            text += f"...[{len(frame) - len(piece)} more bytes]"
        shown.append(text)
        budget -= len(piece)
    return " | ".join(shown) if shown else "(no frames)"
