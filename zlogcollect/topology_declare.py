"""`zlogcollect topology declare`: the plan of :mod:`zlogcollect.topology` declared on a running broker.

pika's BlockingConnection, no gevent: a one-shot command. Every failure is a
:class:`DeclareError` with one line and the exit status; no message shows the
password.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions

from zlogcollect.config import redact
from zlogcollect.exits import ExitStatus
from zlogcollect.topology import (
    HASH_EXCHANGE_TYPE,
    PLUGIN,
    ExchangeBind,
    ExchangeDeclare,
    QueueBind,
    QueueDeclare,
    Step,
)

CONNECT_TIMEOUT = 10.0


class DeclareError(Exception):
    """One line for stderr and the exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _cause(exc: BaseException) -> str:
    """The innermost reason pika wraps (connection refused, ...), as text."""
    seen: set[int] = set()
    inner: BaseException = exc
    stack: list[object] = [exc]
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        inner = item
        if isinstance(item, OSError):
            break
        stack.extend(item.args)
        stack.append(getattr(item, "exception", None))
        attempts = getattr(item, "exceptions", None)
        if isinstance(attempts, (list, tuple)):
            stack.extend(attempts)
    text = str(inner)
    return f"{type(inner).__name__}: {text}" if text else type(inner).__name__


def connect(url: str) -> pika.BlockingConnection:
    """A connection to *url*, or :class:`DeclareError` (78 credentials or vhost, 69 unreachable)."""
    shown = redact(url)
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = CONNECT_TIMEOUT
    params.stack_timeout = CONNECT_TIMEOUT
    try:
        return pika.BlockingConnection(params)
    except pika.exceptions.ProbableAuthenticationError:
        raise DeclareError(f"the broker refused the credentials for {shown}", ExitStatus.CONFIG) from None
    except pika.exceptions.ProbableAccessDeniedError:
        raise DeclareError(f"access denied to the virtual host of {shown}", ExitStatus.CONFIG) from None
    except (pika.exceptions.AMQPError, OSError) as exc:
        raise DeclareError(
            f"cannot reach the broker at {shown}: {_cause(exc)}", ExitStatus.UNAVAILABLE
        ) from None


def _refused(step: Step, exc: pika.exceptions.AMQPError) -> DeclareError:
    """The broker closed the channel or connection on *step*: what the operator does about it."""
    code = getattr(exc, "reply_code", 0)
    text = getattr(exc, "reply_text", "") or _cause(exc)
    if isinstance(step, ExchangeDeclare) and step.type == HASH_EXCHANGE_TYPE and code == 503:
        return DeclareError(
            f"the broker does not know the exchange type {HASH_EXCHANGE_TYPE}: enable its plugin on every"
            f" node with `rabbitmq-plugins enable {PLUGIN}` (it ships with RabbitMQ)",
            ExitStatus.CONFIG,
        )
    if code == 406:
        return DeclareError(
            f"{step.describe()}: it exists with other settings ({text}); delete it or choose another name",
            ExitStatus.CONFIG,
        )
    if code == 404 and isinstance(step, ExchangeBind):
        return DeclareError(
            f"exchange {step.source!r} does not exist: start the bridge with --declare-exchange first,"
            " or pass --declare-source-exchange",
            ExitStatus.CONFIG,
        )
    if code in (403, 404, 530):
        return DeclareError(f"{step.describe()}: the broker refused it: {text}", ExitStatus.CONFIG)
    return DeclareError(f"{step.describe()}: the broker went away: {_cause(exc)}", ExitStatus.UNAVAILABLE)


def _apply(channel: Any, step: Step) -> None:
    if isinstance(step, ExchangeDeclare):
        channel.exchange_declare(step.name, step.type, durable=True, arguments=step.arguments or None)
    elif isinstance(step, ExchangeBind):
        channel.exchange_bind(step.destination, step.source, routing_key=step.routing_key)
    elif isinstance(step, QueueDeclare):
        channel.queue_declare(step.name, durable=True, arguments=step.arguments)
    else:
        channel.queue_bind(step.queue, step.exchange, routing_key=step.routing_key)


def declare(
    url: str, steps: list[Step], report: Callable[[str], None], stale_check: str | None = None
) -> bool:
    """Declare *steps* in order on *url*, reporting each; re-declaring the same is a no-op.

    *stale_check*: a queue name that should not exist (the shard after the last): True
    is returned when it does, i.e. an earlier declare made more shards that are still bound.
    """
    connection = connect(url)
    try:
        channel = connection.channel()
        for step in steps:
            try:
                _apply(channel, step)
            except pika.exceptions.AMQPError as exc:
                raise _refused(step, exc) from None
            report(step.describe())
        if stale_check is None:
            return False
        try:
            connection.channel().queue_declare(stale_check, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            return False
        return True
    except (pika.exceptions.AMQPError, OSError) as exc:
        raise DeclareError(f"the broker went away: {_cause(exc)}", ExitStatus.UNAVAILABLE) from None
    finally:
        if connection.is_open:
            try:
                connection.close()
            except (pika.exceptions.AMQPError, OSError):
                pass


__all__ = ["DeclareError", "QueueBind", "QueueDeclare", "connect", "declare"]
