"""The tests in this directory need the private RabbitMQ node (fixtures in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Hooks in a sub-directory conftest still see every collected item of the
    # session, so mark only the tests that live under this directory.
    for item in items:
        if item.path.resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.amqp)
