"""The AMQP URL's ways in (flag, file, environment) and TLS mistakes, against a real RabbitMQ node."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import CollectorProcess, StockSender, run_collector, short_ipc_endpoint


def test_amqps_against_a_plain_listener_is_one_line_and_exit_78(rabbit_url: str) -> None:
    """amqps:// to the broker's non-TLS port: one line naming TLS, exit 78, no password, no traceback."""
    url = rabbit_url.replace("amqp://guest:guest@", "amqps://guest:s3cret@")
    result = run_collector(["bridge", "--bind", short_ipc_endpoint(), "--amqp-url", url])
    assert result.returncode == 78, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("zlogcollect: error: amqp_url: TLS with amqps://guest:***@")
    assert "5671" in lines[0]
    assert "s3cret" not in result.stderr


def _delivered(proc: CollectorProcess) -> int:
    stopped = next(line for line in proc.stderr_lines if "stopped:" in line)
    amqp = next(part for part in stopped.split() if part.startswith("amqp="))
    counts = dict(item.split(":") for item in amqp[len("amqp=") :].split(","))
    return int(counts.get("delivered", 0))


@pytest.mark.parametrize("way", ["file", "environment"])
def test_the_url_can_come_from_a_file_or_the_environment(
    way: str, rabbit_url: str, tmp_path: Path, logdir: Path, collectors: list[CollectorProcess]
) -> None:
    """--amqp-url-file and ZLOGCOLLECT_AMQP_URL both reach the broker, and the URL is not on the command line."""
    endpoint = short_ipc_endpoint()
    args = ["--bind", endpoint, "--dir", str(logdir), "--declare-queue", f"cli-{way}=cliurl.#"]
    env: dict[str, str] = {}
    if way == "file":
        secret = tmp_path / "amqp-url"
        secret.write_text(rabbit_url + "\n")
        args += ["--amqp-url-file", str(secret)]
    else:
        env["ZLOGCOLLECT_AMQP_URL"] = rabbit_url
    proc = CollectorProcess(args, env=env)
    collectors.append(proc)
    proc.wait_ready()
    cmdline = Path(f"/proc/{proc.proc.pid}/cmdline").read_bytes().decode()
    assert "amqp://" not in cmdline
    assert "forwarding to amqp://guest:***@" in proc.stderr
    sender = StockSender(endpoint, "cliurl")
    try:
        sender.wait_connected(logdir)
        sender.logger.info("through the %s", way)
    finally:
        sender.close()
    assert proc.stop() == 0
    assert _delivered(proc) >= 1, proc.stderr
