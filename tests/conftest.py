"""Fixtures shared by every test tier."""

from __future__ import annotations

import logging
import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pluggy
import pytest
import zmq
from hypothesis import settings

from tests.helpers import CollectorProcess, CurveKeys, CurveServer, broker_unavailable, free_tcp_endpoint
from tests.helpers_handler import Receiver
from zlogcollect.testing.process import Child
from zlogcollect.testing.rabbitmq import RabbitNode, RabbitNodeError

# Property tests are derandomized in CI (the same examples every run, no example
# database), so a red CI run is reproducible and a green one stays green.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")

# Under pytest-xdist (scripts/test runs `-n 2 --dist loadgroup` unless TEST_WORKERS=0), the tests that share one
# resource go to one worker: the session's RabbitMQ node would otherwise start once per
# worker (seconds each), and the README blocks bind the documented default port.
ONE_WORKER = "rabbitmq-and-default-port"
_ONE_WORKER_FILES = frozenset({"test_docs.py"})


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the group into the test's id
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # In a worker, xdist sets `dist` to "no" and says `loadgroup` instead: the groups are
    # read there (a check of `dist` alone left every test ungrouped).
    if config.pluginmanager.hasplugin("xdist"):
        for item in items:
            fixtures = getattr(item, "fixturenames", ())
            if item.path.name in _ONE_WORKER_FILES or "rabbit" in fixtures or "rabbit_cluster" in fixtures:
                item.add_marker(pytest.mark.xdist_group(ONE_WORKER))


class _GroupCheck:
    """In an xdist worker: fail at once if the groups did not reach xdist's scheduler."""

    @pytest.hookimpl(trylast=True)  # after xdist's hook, which appends "@GROUP" to a grouped test's id
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        lost = [
            item.nodeid for item in items if item.get_closest_marker("xdist_group") and "@" not in item.nodeid
        ]
        if lost:
            raise pytest.UsageError(
                f"pytest-xdist did not group {lost[0]} (and {len(lost) - 1} more): tests sharing the "
                "RabbitMQ node or port 5558 would run on both workers at once "
                "(pytest 9.2 with pytest-xdist 3.8, pytest-dev/pytest-xdist#1386; setup.cfg pins pytest<9.2)"
            )


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput") and getattr(config.option, "loadgroup", False):
        config.pluginmanager.register(_GroupCheck(), "zlogcollect-group-check")


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


@pytest.fixture
def children() -> Iterator[list[Child]]:
    """Track `Child` processes (tail, ship, ...); kill leftovers, each by its own pid."""
    started: list[Child] = []
    yield started
    for child in started:
        child.kill()


@pytest.fixture
def curve_keys(tmp_path: Path) -> CurveKeys:
    """A CURVE server's, an allowed client's and a stranger's certificates and the allow-list."""
    return CurveKeys.make(tmp_path / "certs")


@pytest.fixture
def curve_receiver(curve_keys: CurveKeys) -> Iterator[Receiver]:
    """The collector's part: a CURVE SUB server on tcp taking only the allowed client's key."""
    server = CurveServer(curve_keys, zmq.SUB, free_tcp_endpoint())
    receiver = Receiver(server.endpoint, server.context, bound=server.socket)
    yield receiver
    receiver.close()
    server.close()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pluggy.Result[pytest.TestReport], None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def logdir(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def rabbit() -> Iterator[RabbitNode]:
    """A private RabbitMQ node shared by the whole session, stopped and deleted at the end.

    Tests may stop, crash or restart it; `rabbit_url` brings it back up if a test
    left it down.
    """
    if not RabbitNode.available():
        broker_unavailable(
            "rabbitmq-server is not installed (apt-get install --no-install-recommends rabbitmq-server)"
        )
    try:
        node = RabbitNode()
    except RabbitNodeError as exc:
        broker_unavailable(f"cannot set up a RabbitMQ node: {exc}")
    try:
        node.start()
    except (RabbitNodeError, OSError) as exc:
        node.close()
        broker_unavailable(f"RabbitMQ node failed to start: {exc}")
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
