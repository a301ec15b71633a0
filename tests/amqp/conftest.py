"""Fixtures for tests against a real, private RabbitMQ node (see tests/rabbitmq_node.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.rabbitmq_node import RabbitNode, RabbitNodeError

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Hooks in a sub-directory conftest still see every collected item of the
    # session, so mark only the tests that live under this directory.
    for item in items:
        if item.path.resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.amqp)


def _unavailable(reason: str) -> NoReturn:
    # CI must run the AMQP tests: a missing or broken broker is a failure there,
    # while on a developer machine without rabbitmq-server they are skipped.
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so AMQP tests must run: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def rabbit() -> Iterator[RabbitNode]:
    """A private RabbitMQ node shared by the whole session, stopped and deleted at the end.

    Tests may stop, crash or restart it; `rabbit_url` brings it back up if a test
    left it down.
    """
    if not RabbitNode.available():
        _unavailable(
            "rabbitmq-server is not installed (apt-get install --no-install-recommends rabbitmq-server)"
        )
    try:
        node = RabbitNode()
    except RabbitNodeError as exc:
        _unavailable(f"cannot set up a RabbitMQ node: {exc}")
    try:
        node.start()
    except (RabbitNodeError, OSError) as exc:
        node.close()
        _unavailable(f"RabbitMQ node failed to start: {exc}")
    try:
        yield node
    finally:
        node.close()


@pytest.fixture
def rabbit_url(rabbit: RabbitNode) -> str:
    """AMQP URL of the session node, restarted (fresh) first if an earlier test left it down."""
    if not rabbit.running:
        try:
            rabbit.restart(keep_data=False)
        except RabbitNodeError as exc:
            pytest.fail(f"RabbitMQ node could not be restarted: {exc}", pytrace=False)
    return rabbit.url
