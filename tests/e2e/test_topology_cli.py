"""`zlogcollect topology declare` as a command: --dry-run, bad input, an unreachable broker.

Against a real broker: tests/amqp/test_topology_amqp.py (the plugin missing, bad
credentials) and tests/cluster/test_topology.py (the topology at work).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from zlogcollect.exits import ExitStatus

pytestmark = pytest.mark.e2e


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zlogcollect", "topology", "declare", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_dry_run_prints_the_plan_without_the_password_and_connects_to_nothing() -> None:
    # Port 1: nothing listens; --dry-run must not try.
    result = run("amqp://user:s3cret@127.0.0.1:1/%2F", "--dry-run", "--shards", "2")
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout + result.stderr
    assert "would declare on amqp://user:***@127.0.0.1:1/%2F:" in result.stdout
    assert result.stdout.count("queue 'zlogcollect.shard.") == 4  # declare and bind, twice


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (
            ("amqp://u:s3cret@127.0.0.1:1/%2F",),
            ExitStatus.UNAVAILABLE,
            "cannot reach the broker at amqp://u:***@",
        ),
        (("amqp://u:s3cret@127.0.0.1:1/%2F", "--shards", "0"), ExitStatus.CONFIG, "--shards 0"),
        (("http://u:s3cret@h/",), ExitStatus.CONFIG, "expected amqp://USER:PASSWORD@HOST"),
        ((), ExitStatus.CONFIG, "give the broker's URL"),
        (("--url-file", "/nonexistent/url"), ExitStatus.CONFIG, "cannot read it"),
        (("amqp://h/", "--shards", "many"), ExitStatus.USAGE, "'many' is not a valid integer"),
        (("amqp://h/", "--exchange", "amq.x"), ExitStatus.CONFIG, "reserved"),
        (("amqp://h/", "--queue-prefix", "q\udcff"), ExitStatus.CONFIG, "is not valid UTF-8"),
        (("amqp://h/", "--source-exchange-type", "direct"), ExitStatus.USAGE, "'direct' is not one of"),
    ],
)
def test_bad_input_is_one_line_and_an_exit_status(args: tuple[str, ...], status: int, message: str) -> None:
    result = run(*args)
    assert result.returncode == status, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and "s3cret" not in result.stderr
    if status != ExitStatus.USAGE:
        assert result.stderr.count("\n") == 1
