"""The examples and scripts run as smoke tests, so they cannot rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, CollectorProcess, read_lines, short_ipc_endpoint, wait_until

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("stock", [False, True], ids=["zlogcollect-handler", "stock-pubhandler"])
def test_seed_apps_reach_the_collector(collectors: list[CollectorProcess], logdir: Path, stock: bool) -> None:
    """examples/app1-3.py, with either handler, each deliver their records to their own file."""
    endpoint = short_ipc_endpoint()
    proc = CollectorProcess(["--bind", endpoint, "--dir", str(logdir), "--flush-interval", "0.1"])
    collectors.append(proc)
    proc.wait_ready()
    apps = [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "examples" / f"{app}.py"),
                "--endpoint",
                endpoint,
                "--count",
                "20",
                "--interval",
                "0.01",
                *(["--stock"] if stock else []),
            ],
        )
        for app in ("app1", "app2", "app3")
    ]
    for app in apps:
        assert app.wait(30) == 0
    wait_until(
        lambda: all(len(read_lines(logdir / f"app{i}.log")) == 20 for i in (1, 2, 3)), what="20 lines per app"
    )
    assert proc.stop() == 0
    assert read_lines(logdir / "errors.log")
    for i in (1, 2, 3):
        # The stock branch formats the message itself ("seed_app.py:LINE | ...") and sends
        # no extension, so the line shows which handler the app really used.
        for line in read_lines(logdir / f"app{i}.log"):
            assert ("| seed_app.py:" in line) == stock, line


def test_demo_script_runs_and_stops_cleanly() -> None:
    """scripts/demo starts a collector and three apps, and shuts everything down with exit 0."""
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo"), "3"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert result.returncode == 0, result.stderr
    assert "stopped: received=" in result.stderr
    assert "app3.log" in result.stderr


def test_example_config_is_valid() -> None:
    """examples/collector.toml passes the collector's own validation."""
    from zlogcollect.config import from_mapping, load_file

    config = from_mapping(load_file(str(ROOT / "examples" / "collector.toml")))
    assert config.backup_count == 14
