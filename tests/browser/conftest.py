"""Fixtures of the real-browser tests: Debian's chromium driven by Playwright, a collector subprocess, apps.

The browser tests skip with the reason when /usr/bin/chromium or playwright is
missing, and fail instead under CI=true (.ci/run installs both). The collector
always runs as a ``zlogcollect collect --http`` subprocess: Playwright's sync API
blocks the test's thread, so nothing of the collector may run on it.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.helpers import CollectorProcess, short_ipc_endpoint
from zlogcollect.handler import ZLogHandler

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 15_000
"""How long an expectation waits (generous: the suite shares two cores); speed is never asserted."""


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium; .ci/run does)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One chromium for the session (each test gets its own context)."""
    missing = _missing()
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true, so the browser tests must run: {missing}", pytrace=False)
        pytest.skip(missing)
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Watched:
    """A page whose dialogs, script errors and console errors (a CSP violation is one) fail the test."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))
        page.on("console", self._console)

    def _dialog(self, dialog: Any) -> None:
        self.problems.append(f"a {dialog.type} dialog opened: {dialog.message!r}")
        dialog.dismiss()

    def _console(self, message: Any) -> None:
        # A failed request (the collector restarting, a 404 asked for on purpose) is logged as an
        # error too; those are expected. Anything else (a CSP violation, a bug) is not.
        text = message.text
        if message.type == "error" and "Failed to load resource" not in text and "net::ERR_" not in text:
            self.problems.append(f"console error: {text}")


@pytest.fixture
def watched(browser: Browser) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 720}, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        watcher = Watched(context.new_page())
        yield watcher
        assert not watcher.problems, "\n".join(watcher.problems)
    finally:
        context.close()


@pytest.fixture
def page(watched: Watched) -> Page:
    return watched.page


class Fleet:
    """A collector subprocess with ``--http`` and apps that log to it with ZLogHandler."""

    def __init__(self, collectors: list[CollectorProcess], logdir: Path) -> None:
        self.collectors = collectors
        self.logdir = logdir
        self.endpoint = short_ipc_endpoint()
        self.handlers: dict[str, ZLogHandler] = {}
        self.proc: CollectorProcess | None = None
        self.address = ""

    def start(
        self, http: str = "127.0.0.1:0", env: dict[str, str] | None = None, extra: Sequence[str] = ()
    ) -> str:
        """Start the collector (again, after :meth:`stop`) with *extra* options; returns ``http://HOST:PORT``."""
        proc = CollectorProcess(
            ["--bind", self.endpoint, "--dir", str(self.logdir), "--http", http, *extra], env=env
        )
        self.collectors.append(proc)
        proc.wait_ready()
        ready = next(line for line in proc.stderr_lines if "ready:" in line)
        found = re.search(r"http://(\S+?)/", ready)
        assert found, ready
        self.proc = proc
        self.address = found.group(1)
        return self.url

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def stop(self) -> None:
        assert self.proc is not None
        assert self.proc.stop() == 0, self.proc.stderr

    def log(self, source: str, level: int, message: str, *args: object, subtopic: str = "web") -> None:
        """Log one record as app *source* (each app has its own handler and socket), ``subtopic::message``."""
        self.logger(source).log(level, f"{subtopic}::{message}" if subtopic else message, *args)

    def logger(self, source: str) -> logging.Logger:
        """A logger of app *source* (not registered with logging: no global state)."""
        handler = self.handlers.get(source)
        if handler is None:
            handler = self.handlers[source] = ZLogHandler(self.endpoint, app=source)
        logger = logging.Logger(source, logging.DEBUG)
        logger.addHandler(handler)
        return logger

    def close(self) -> None:
        for handler in self.handlers.values():
            handler.close()


@pytest.fixture
def fleet(collectors: list[CollectorProcess], logdir: Path) -> Iterator[Fleet]:
    fleet = Fleet(collectors, logdir)
    try:
        yield fleet
    finally:
        fleet.close()
