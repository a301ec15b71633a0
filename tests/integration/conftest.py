"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from zlogcollect import ZLogHandler


@pytest.fixture
def make_handler() -> Iterator[Callable[..., ZLogHandler]]:
    """Build handlers that are closed after the test, quickly (short linger)."""
    made: list[ZLogHandler] = []

    def make(*args: Any, **kwargs: Any) -> ZLogHandler:
        kwargs.setdefault("linger", 0.5)
        handler = ZLogHandler(*args, **kwargs)
        made.append(handler)
        return handler

    yield make
    for handler in made:
        handler.close()
