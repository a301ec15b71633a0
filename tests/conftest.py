"""Fixtures shared by every test tier."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import CollectorProcess


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Put the root logger back as it was: tests attach handlers to `logging`."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def collectors(request: pytest.FixtureRequest) -> Iterator[list[CollectorProcess]]:
    """Track collector processes; kill leftovers and print their stderr if the test failed."""
    started: list[CollectorProcess] = []
    yield started
    failed = getattr(request.node, "rep_call", None)
    for proc in started:
        proc.kill()
        if failed is not None and failed.failed:
            print(f"--- collector {proc.args}\n{proc.stderr}")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path
