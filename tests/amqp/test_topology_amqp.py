"""`zlogcollect topology declare` against the single test node, which has no consistent-hash plugin."""

from __future__ import annotations

import subprocess
import sys

from zlogcollect.exits import ExitStatus


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zlogcollect", "topology", "declare", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_broker_without_the_plugin_is_told_how_to_enable_it(rabbit_url: str) -> None:
    result = run(rabbit_url, "--exchange", "t-noplugin.shards")
    assert result.returncode == ExitStatus.CONFIG, result.stderr
    assert result.stderr == (
        "zlogcollect: error: the broker does not know the exchange type x-consistent-hash: enable its"
        " plugin on every node with `rabbitmq-plugins enable rabbitmq_consistent_hash_exchange`"
        " (it ships with RabbitMQ)\n"
    )


def test_wrong_credentials_are_a_config_error_without_the_password(rabbit_url: str) -> None:
    url = rabbit_url.replace("guest:guest@", "guest:n0t-it@")
    result = run(url)
    assert result.returncode == ExitStatus.CONFIG, result.stderr
    assert "refused the credentials for amqp://guest:***@" in result.stderr
    assert "n0t-it" not in result.stderr and "Traceback" not in result.stderr
