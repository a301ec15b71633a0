"""`zlogcollect topology declare`'s pure part: the options to the declaration plan.

The plan shards the bridge's messages over N queues by their source:

    bridge ──▶ EXCHANGE (the bridge's, amq.topic) ──"#"──▶ SHARDS (x-consistent-hash,
    hash-header "source") ──weight 1 each──▶ PREFIX.0 .. PREFIX.N-1 (quorum, durable,
    single active consumer)

The consistent-hash exchange (plugin ``rabbitmq_consistent_hash_exchange``, shipped
with RabbitMQ) hashes the ``source`` header the bridge sets on every message
(:mod:`zlogcollect.sinks.amqp_message`): the routing key (``SOURCE.LEVEL``) would send
one source's levels to different queues, and its records would no longer be in order.
Pure: no pika, so the plan is unit-tested and ``--dry-run`` needs no broker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

HASH_EXCHANGE_TYPE: Final = "x-consistent-hash"
PLUGIN: Final = "rabbitmq_consistent_hash_exchange"
HASH_HEADER: Final = "source"
"""The header the bridge sets to the record's source, hashed by the sharding exchange."""

DEFAULT_SOURCE_EXCHANGE: Final = "amq.topic"
DEFAULT_EXCHANGE: Final = "zlogcollect.shards"
DEFAULT_QUEUE_PREFIX: Final = "zlogcollect.shard"
DEFAULT_SHARDS: Final = 4
MAX_SHARDS: Final = 1000
MAX_NAME: Final = 255  # bytes: AMQP short strings
CATCH_ALL: Final = {"topic": "#", "fanout": ""}
"""The binding key that takes every message of a bridge exchange of that type."""


class TopologyError(ValueError):
    """Options that make no valid topology (one line, exit 78)."""


@dataclass(frozen=True)
class ExchangeDeclare:
    name: str
    type: str
    arguments: dict[str, Any]

    def describe(self) -> str:
        args = f" arguments {_args(self.arguments)}" if self.arguments else ""
        return f"exchange {self.name!r} type {self.type} durable{args}"


@dataclass(frozen=True)
class ExchangeBind:
    destination: str
    source: str
    routing_key: str

    def describe(self) -> str:
        return f"bind exchange {self.destination!r} to exchange {self.source!r} with key {self.routing_key!r}"


@dataclass(frozen=True)
class QueueDeclare:
    name: str
    arguments: dict[str, Any]

    def describe(self) -> str:
        return f"queue {self.name!r} durable arguments {_args(self.arguments)}"


@dataclass(frozen=True)
class QueueBind:
    queue: str
    exchange: str
    routing_key: str

    def describe(self) -> str:
        return f"bind queue {self.queue!r} to exchange {self.exchange!r} with weight {self.routing_key}"


Step = ExchangeDeclare | ExchangeBind | QueueDeclare | QueueBind


@dataclass(frozen=True)
class TopologyOptions:
    shards: int = DEFAULT_SHARDS
    exchange: str = DEFAULT_EXCHANGE
    queue_prefix: str = DEFAULT_QUEUE_PREFIX
    source_exchange: str = DEFAULT_SOURCE_EXCHANGE
    source_exchange_type: str = "topic"
    declare_source_exchange: bool = False


def _args(arguments: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={v!r}" for k, v in arguments.items()) + "}"


def _check_name(what: str, name: str, *, reserved_ok: bool = False) -> None:
    if not name:
        raise TopologyError(f"{what}: empty name")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        # A command-line argument that was not UTF-8 (Python keeps its bytes as surrogates).
        raise TopologyError(f"{what}: {name.encode('utf-8', 'replace')!r} is not valid UTF-8") from None
    if size > MAX_NAME:
        raise TopologyError(f"{what}: {name[:40]!r}... is longer than {MAX_NAME} bytes")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise TopologyError(f"{what}: {name!r} holds a control character")
    if not reserved_ok and name.startswith("amq."):
        raise TopologyError(f"{what}: {name!r}: names starting with 'amq.' are reserved by the broker")


def queue_names(shards: int, prefix: str) -> list[str]:
    """The shard queues: PREFIX.0 .. PREFIX.N-1."""
    return [f"{prefix}.{i}" for i in range(shards)]


def plan(options: TopologyOptions) -> list[Step]:
    """What `topology declare` declares, in order; :class:`TopologyError` for options that cannot work."""
    if not 1 <= options.shards <= MAX_SHARDS:
        raise TopologyError(f"--shards {options.shards}: expected 1 to {MAX_SHARDS}")
    _check_name("--exchange", options.exchange)
    _check_name("--source-exchange", options.source_exchange, reserved_ok=not options.declare_source_exchange)
    _check_name("--queue-prefix", options.queue_prefix)
    # The longest queue name must fit too.
    _check_name("--queue-prefix", f"{options.queue_prefix}.{options.shards - 1}")
    if options.exchange == options.source_exchange:
        raise TopologyError("--exchange must differ from --source-exchange (the bridge's exchange)")
    binding = CATCH_ALL.get(options.source_exchange_type)
    if binding is None:
        raise TopologyError(
            f"--source-exchange-type {options.source_exchange_type}: a binding that takes every message"
            " exists only for topic and fanout exchanges"
        )
    steps: list[Step] = []
    if options.declare_source_exchange:
        steps.append(ExchangeDeclare(options.source_exchange, options.source_exchange_type, {}))
    steps.append(ExchangeDeclare(options.exchange, HASH_EXCHANGE_TYPE, {"hash-header": HASH_HEADER}))
    steps.append(ExchangeBind(options.exchange, options.source_exchange, binding))
    arguments = {"x-queue-type": "quorum", "x-single-active-consumer": True}
    for name in queue_names(options.shards, options.queue_prefix):
        steps.append(QueueDeclare(name, dict(arguments)))
        # The consistent-hash exchange reads a binding's key as its weight: equal shares.
        steps.append(QueueBind(name, options.exchange, "1"))
    return steps
