"""Start-up errors, exit codes and the `config` command, through the real CLI."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from tests.helpers import CollectorProcess, free_tcp_endpoint, run_collector, short_ipc_endpoint

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

pytestmark = pytest.mark.e2e


def one_error_line(result_stderr: str) -> str:
    lines = [line for line in result_stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result_stderr
    assert "Traceback" not in result_stderr
    assert lines[0].startswith("zlogcollect: error: ") or lines[0].startswith("Error: "), lines[0]
    return lines[0]


def test_address_in_use_is_one_line_and_exit_69(logdir: Path) -> None:
    """Binding a port another socket holds fails at start-up with one line naming the endpoint."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        endpoint = f"tcp://127.0.0.1:{holder.getsockname()[1]}"
        result = run_collector(["collect", "--bind", endpoint, "--dir", str(logdir)])
    assert result.returncode == 69
    assert endpoint in one_error_line(result.stderr)


def test_an_ipc_endpoint_in_use_is_refused(logdir: Path, collectors: list[CollectorProcess]) -> None:
    """A second collector on a live ipc path exits 69 instead of silently taking the endpoint over."""
    endpoint = short_ipc_endpoint()
    first = CollectorProcess(["--bind", endpoint, "--dir", str(logdir)])
    collectors.append(first)
    first.wait_ready()
    result = run_collector(["collect", "--bind", endpoint, "--dir", str(logdir)])
    assert result.returncode == 69
    assert "already in use" in one_error_line(result.stderr)
    assert first.stop() == 0


def test_counters_are_printed_whatever_the_log_level(
    logdir: Path, collectors: list[CollectorProcess]
) -> None:
    """With --log-level ERROR, SIGUSR1 and exit still print the counters line."""
    import signal

    from tests.helpers import wait_until

    proc = CollectorProcess(["--bind", short_ipc_endpoint(), "--dir", str(logdir), "--log-level", "ERROR"])
    collectors.append(proc)
    proc.wait_ready()  # the ready line is printed whatever the level, too
    wait_until(lambda: (proc.send(signal.SIGUSR1), "counters:" in proc.stderr)[1], what="counters on SIGUSR1")
    assert proc.stop() == 0
    assert "stopped: received=0" in proc.stderr


def test_unwritable_dir_is_one_line_and_exit_73(tmp_path: Path) -> None:
    """A --dir that cannot be created or written fails before binding anything."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run_collector(["collect", "--bind", short_ipc_endpoint(), "--dir", str(blocker / "sub")])
    assert result.returncode == 73
    assert "not writable" in one_error_line(result.stderr)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--route", "nonsense"], "PATTERN=FILE"),
        (["--route", "a.#=../escape.log"], "relative path inside --dir"),
        (["--route", "a.#=/abs.log"], "relative path inside --dir"),
        (["--route", "a.#={nope}.log"], "{nope}"),
        (["--route", "a.#=_malformed.log"], "reserved"),
        (["--when", "fortnight"], "when"),
        (["--interval", "0"], "interval"),
        (["--bind", "localhost:5558"], "bind"),
        (["--bind", "tcp://127.0.0.1:99999"], "out of range"),
        (["--format", "%(nosuchfield)d"], "nosuchfield"),
        (["--at-time", "25:99"], "at_time"),
        (["--flush-interval", "0"], "flush_interval"),
        (["--no-default-routes"], "nothing would be written"),
    ],
)
def test_bad_settings_are_one_line_and_exit_78(logdir: Path, args: list[str], needle: str) -> None:
    """Every bad value is rejected before start-up with one line naming the setting."""
    result = run_collector(["collect", "--dir", str(logdir), *args])
    assert result.returncode == 78, result.stderr
    assert needle in one_error_line(result.stderr)


def test_bad_flag_is_a_usage_error_exit_2() -> None:
    """An unknown flag or a malformed --level is click's usage error, exit 2, no traceback."""
    result = run_collector(["collect", "--no-such-flag"])
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    result = run_collector(["collect", "--level", "TRACE"])
    assert result.returncode == 2
    assert "NAME=NUMBER" in result.stderr


def test_traceback_flag_shows_the_stack(logdir: Path) -> None:
    """--traceback adds the Python stack to a start-up error."""
    result = run_collector(["collect", "--dir", str(logdir), "--when", "fortnight", "--traceback"])
    assert result.returncode == 78
    assert "Traceback" in result.stderr


def test_config_prints_a_valid_commented_example_of_the_defaults(tmp_path: Path) -> None:
    """`zlogcollect config` prints TOML that loads back into exactly the default settings."""
    from zlogcollect.config import CollectorConfig, from_mapping, load_file

    result = run_collector(["config"])
    assert result.returncode == 0
    assert result.stdout.count("\n# ") >= 5
    path = tmp_path / "collector.toml"
    path.write_text(result.stdout)
    tomllib.loads(result.stdout)
    assert from_mapping(load_file(str(path))) == CollectorConfig()


def test_config_file_unknown_key_is_named(tmp_path: Path) -> None:
    """An unknown key in the TOML file is an error that names the key."""
    path = tmp_path / "c.toml"
    path.write_text('dir = "x"\nflush_intervall = 2\n')
    result = run_collector(["collect", "--config", str(path)])
    assert result.returncode == 78
    assert "flush_intervall" in one_error_line(result.stderr)


def test_flags_win_over_the_config_file(tmp_path: Path, collectors: list[CollectorProcess]) -> None:
    """A flag given on the command line overrides the same key in --config."""
    path = tmp_path / "c.toml"
    endpoint = free_tcp_endpoint()
    path.write_text(f'dir = "{tmp_path / "from-file"}"\nbind = ["{endpoint}"]\nlog_level = "DEBUG"\n')
    proc = CollectorProcess(["--config", str(path), "--dir", str(tmp_path / "from-flag")])
    collectors.append(proc)
    proc.wait_ready()
    assert proc.stop() == 0
    assert (tmp_path / "from-flag").is_dir()
    assert not (tmp_path / "from-file").exists()
    assert endpoint in proc.stderr


def test_help_lists_every_collect_flag() -> None:
    """`collect --help` documents each option the config file accepts."""
    from zlogcollect.config import CollectorConfig

    result = run_collector(["collect", "--help"])
    assert result.returncode == 0
    import dataclasses

    for field in dataclasses.fields(CollectorConfig):
        flag = "--" + field.name.replace("_", "-")
        if field.name == "levels":
            flag = "--level"
        assert flag in result.stdout, flag


def test_python_dash_m_and_version() -> None:
    """`python -m zlogcollect --version` prints the version."""
    from zlogcollect import __version__

    result = run_collector(["--version"])
    assert result.returncode == 0
    assert __version__ in result.stdout
