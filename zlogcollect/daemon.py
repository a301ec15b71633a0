"""Process concerns: start-up order, the ready line, signals, drain with a deadline, exit status."""

from __future__ import annotations

import enum
import logging
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass

import gevent

from zlogcollect import formatting
from zlogcollect.collector import Collector, StartupError
from zlogcollect.config import CollectorConfig, log_level_number
from zlogcollect.routing import Router
from zlogcollect.sinks.files import FileSink, Rotation
from zlogcollect.stats import Stats

log = logging.getLogger("zlogcollect")


class ExitStatus(enum.IntEnum):
    """Exit codes, after sysexits.h where one fits."""

    SUCCESS = 0
    ERROR = 1
    USAGE = 2
    UNAVAILABLE = 69  # an endpoint cannot be bound
    CANTCREAT = 73  # the log directory cannot be written
    CONFIG = 78  # a setting is wrong


class DaemonStartupError(Exception):
    """A start-up failure with the exit status it deserves."""

    def __init__(self, message: str, status: ExitStatus) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class SignalState:
    """What the signal handlers asked for; the receive loop acts on it between batches."""

    stop: str | None = None
    reopen: bool = False
    report: bool = False


def setup_diagnostics(level: str) -> None:
    """Send the collector's own log to stderr, never anywhere near a zlogcollect handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s zlogcollect[%(process)d] %(levelname)s: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(log_level_number(level))
    log.propagate = False


def check_directory(path: str) -> str:
    """Create the log directory if needed and prove it is writable."""
    full = os.path.abspath(path)
    try:
        os.makedirs(full, exist_ok=True)
        with tempfile.TemporaryFile(dir=full):
            pass
    except OSError as exc:
        raise DaemonStartupError(
            f"dir {path!r} is not writable: {exc.strerror or exc}", ExitStatus.CANTCREAT
        ) from None
    return full


def build_collector(config: CollectorConfig, stats: Stats) -> tuple[Collector, FileSink]:
    """Wire the file sink and the collector from a validated config (no sockets yet)."""
    directory = check_directory(config.dir)
    render = (
        formatting.json_formatter(config.utc)
        if config.json
        else formatting.text_formatter(config.format, config.utc)
    )
    rotation = Rotation(
        when=config.when,
        interval=config.interval,
        backup_count=config.backup_count,
        utc=config.utc,
        at_time=config.at_time_value,
        compress=config.compress,
    )
    files = FileSink(directory, Router(config.routes, config.default_source), render, rotation, stats)
    collector = Collector(
        [files], stats, levels=config.level_table, max_bytes=config.max_record_bytes, rcvhwm=config.rcvhwm
    )
    return collector, files


def run(config: CollectorConfig) -> ExitStatus:
    """Run the collector until SIGTERM/SIGINT; raise :class:`DaemonStartupError` if it cannot start."""
    stats = Stats()
    collector, files = build_collector(config, stats)
    try:
        collector.bind(config.bind, config.subscribe)
    except StartupError as exc:
        files.close()
        raise DaemonStartupError(str(exc), ExitStatus.UNAVAILABLE) from None

    state = SignalState()

    def request_stop(name: str) -> None:
        state.stop = name

    def request_reopen() -> None:
        state.reopen = True

    def request_report() -> None:
        state.report = True

    handlers = [
        gevent.signal_handler(signal.SIGTERM, request_stop, "SIGTERM"),
        gevent.signal_handler(signal.SIGINT, request_stop, "SIGINT"),
        gevent.signal_handler(signal.SIGHUP, request_reopen),
        gevent.signal_handler(signal.SIGUSR1, request_report),
    ]

    def act_on_signals() -> None:
        if state.reopen:
            state.reopen = False
            log.info("SIGHUP: reopening files")
            collector.reopen()
        if state.report:
            state.report = False
            log.info("counters: %s", stats.summary())

    log.info(
        "ready: listening on %s, writing to %s (pid %d)",
        " ".join(collector.endpoints),
        files.directory,
        os.getpid(),
    )
    try:
        collector.serve(lambda: state.stop is not None, config.flush_interval, act_on_signals)
        log.info("%s: draining for up to %.1f s", state.stop, config.drain_timeout)
        collector.drain_until_quiet(time.monotonic() + config.drain_timeout)
    finally:
        collector.close()
        for handler in handlers:
            handler.cancel()
    log.info("stopped: %s", stats.summary())
    return ExitStatus.SUCCESS
