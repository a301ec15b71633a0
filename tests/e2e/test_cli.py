"""Start-up errors, exit codes and the `config` command, through the real CLI."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import sys
from pathlib import Path

import pytest

from tests import helpers
from tests.helpers import (
    CollectorProcess,
    StockSender,
    free_tcp_endpoint,
    read_lines,
    run_collector,
    short_ipc_endpoint,
    wait_until,
)

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

pytestmark = pytest.mark.e2e


def one_error_line(stderr: str) -> str:
    """One error line, ours or click's usage error."""
    return helpers.one_error_line(stderr, ("zlogcollect: error: ", "Error: "))


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
    """A --dir that cannot be created or written fails at start-up (checked right after binding, as the
    user who writes it), before a record is taken."""
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
        (["--bind", "tcp://nonsense"], "tcp://HOST:PORT"),
        (["--bind", "tcp://127.0.0.1:port"], "tcp://HOST:PORT"),
        (["--bind", "tcp://:5558"], "tcp://HOST:PORT"),
        (["--bind", "ipc://"], "bind"),
        (["--stats-interval", "-1"], "stats_interval"),
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


def test_short_version_flags_and_completion_hint() -> None:
    """-V works on the group and on collect, and --help says how to get shell completion."""
    from zlogcollect import __version__

    for args in (["-V"], ["collect", "--version"], ["collect", "-V"], ["bridge", "--version"]):
        result = run_collector(args)
        assert result.returncode == 0, (args, result.stderr)
        assert __version__ in result.stdout, args
    result = run_collector(["--help"])
    assert "_ZLOGCOLLECT_COMPLETE=bash_source zlogcollect" in result.stdout


def test_missing_ipc_directory_names_the_directory_to_create(logdir: Path, tmp_path: Path) -> None:
    """An ipc endpoint in a directory that does not exist: exit 69 and one line saying what to create."""
    missing = tmp_path / "run" / "zlogcollect"
    result = run_collector(["collect", "--dir", str(logdir), "--bind", f"ipc://{missing}/log.sock"])
    assert result.returncode == 69, result.stderr
    line = one_error_line(result.stderr)
    assert f"directory {missing} does not exist" in line
    assert f"mkdir -p {missing}" in line


def _catches(pid: int, signum: int) -> bool:
    """True once process *pid* has a handler for *signum* (SigCgt in /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught, 16) >> (signum - 1) & 1)


def _assert_clean_stop(proc: CollectorProcess) -> None:
    code = proc.stop(timeout=15)
    assert code == 0, proc.stderr
    assert "stopped: received=0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_sigterm_as_soon_as_it_can_be_caught_is_a_clean_stop(
    logdir: Path, collectors: list[CollectorProcess]
) -> None:
    """SIGTERM the moment the process first catches it (still importing): exit 0 and a stopped: line."""
    proc = CollectorProcess(["--bind", short_ipc_endpoint(), "--dir", str(logdir)])
    collectors.append(proc)
    wait_until(lambda: _catches(proc.proc.pid, signal.SIGTERM), interval=0.001, what="a SIGTERM handler")
    _assert_clean_stop(proc)


def _start_reading_fifo_config(
    logdir: Path, tmp_path: Path, collectors: list[CollectorProcess]
) -> tuple[CollectorProcess, int]:
    """A collector whose --config is a FIFO, held in start-up until the returned descriptor is written."""
    fifo = tmp_path / "collector.toml"
    os.mkfifo(fifo)
    proc = CollectorProcess(["--config", str(fifo), "--bind", short_ipc_endpoint(), "--dir", str(logdir)])
    collectors.append(proc)
    holder: list[int] = []

    def reader_open() -> bool:
        try:  # a FIFO opens for writing without blocking only once a reader has it open
            holder.append(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            return False
        return True

    wait_until(reader_open, what="the config read")
    return proc, holder[0]


def _finish_config(fd: int) -> None:
    os.write(fd, b'log_level = "INFO"\n')
    os.close(fd)


def test_sigterm_while_reading_the_config_is_a_clean_stop(
    logdir: Path, tmp_path: Path, collectors: list[CollectorProcess]
) -> None:
    """SIGTERM while the collector is blocked reading --config (a FIFO): exit 0 and a stopped: line."""
    proc, fd = _start_reading_fifo_config(logdir, tmp_path, collectors)
    proc.send(signal.SIGTERM)
    # Give the signal time to be delivered before the config arrives (not for synchronisation
    # of the result: the assertion below holds whenever the signal lands before `ready:`).
    wait_until(lambda: proc.proc.poll() is not None or _signal_delivered(proc.proc.pid), what="delivery")
    _finish_config(fd)
    _assert_clean_stop(proc)
    assert "ready:" not in proc.stderr
    assert "SIGTERM during start-up" in proc.stderr


def test_sighup_and_sigusr1_during_start_up_do_not_kill_it(
    logdir: Path, tmp_path: Path, collectors: list[CollectorProcess]
) -> None:
    """A logrotate HUP (or a USR1) while the collector reads its config: it starts anyway."""
    proc, fd = _start_reading_fifo_config(logdir, tmp_path, collectors)
    proc.send(signal.SIGHUP)
    proc.send(signal.SIGUSR1)
    wait_until(lambda: proc.proc.poll() is not None or _signal_delivered(proc.proc.pid, signal.SIGUSR1))
    _finish_config(fd)
    proc.wait_ready()
    assert proc.stop() == 0


def _signal_delivered(pid: int, signum: int = signal.SIGTERM) -> bool:
    """True when no *signum* is pending for *pid* (the kernel has handed it to the process)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    pending = [
        int(line.split()[1], 16) for line in status.splitlines() if line.startswith(("SigPnd:", "ShdPnd:"))
    ]
    return not any(mask >> (signum - 1) & 1 for mask in pending)


def test_sigterm_while_connecting_to_a_silent_broker_is_a_clean_stop(
    logdir: Path, collectors: list[CollectorProcess]
) -> None:
    """SIGTERM while the AMQP connection waits on a port that never answers: exit 0 at once, stopped: line."""
    pytest.importorskip("pika")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.settimeout(15)
        url = f"amqp://guest:guest@127.0.0.1:{silent.getsockname()[1]}/%2F"
        proc = CollectorProcess(
            ["--bind", short_ipc_endpoint(), "--dir", str(logdir), "--amqp-url", url], command="collect"
        )
        collectors.append(proc)
        connection, _ = silent.accept()  # the collector is now inside its first AMQP connect
        with connection:
            _assert_clean_stop(proc)
    assert "ready:" not in proc.stderr


def test_bridge_counters_line_has_no_file_counters(collectors: list[CollectorProcess]) -> None:
    """The bridge's stopped: line shows what a bridge does, not written=/files= of a file sink."""
    pytest.importorskip("pika")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        proc = CollectorProcess(
            ["--bind", short_ipc_endpoint(), "--amqp-url", f"amqp://guest:guest@127.0.0.1:{port}/%2F"],
            command="bridge",
        )
        collectors.append(proc)
        proc.wait_ready()
        assert proc.stop() == 0
    stopped = next(line for line in proc.stderr_lines if "stopped:" in line)
    assert "received=0" in stopped
    assert "malformed=0" in stopped
    assert "written=" not in stopped
    assert "files=" not in stopped


def test_stats_interval_prints_the_counters_line_periodically(
    logdir: Path, collectors: list[CollectorProcess]
) -> None:
    """--stats-interval prints the counters line on its own, so a journal shows the collector is alive."""
    proc = CollectorProcess(["--bind", short_ipc_endpoint(), "--dir", str(logdir), "--stats-interval", "0.2"])
    collectors.append(proc)
    proc.wait_ready()
    wait_until(lambda: sum("counters: received=" in line for line in proc.stderr_lines) >= 2, what="counters")
    assert (logdir / "_stats.json").exists()  # written with each line, by default in --dir
    assert proc.stop() == 0


def test_stats_file_holds_the_counters_as_json(
    logdir: Path, tmp_path: Path, collectors: list[CollectorProcess]
) -> None:
    """--stats-file gets the counters line's numbers as JSON on SIGUSR1 and at exit, written whole."""
    endpoint = short_ipc_endpoint()
    stats_file = tmp_path / "stats" / "counters.json"
    stats_file.parent.mkdir()
    proc = CollectorProcess(["--bind", endpoint, "--dir", str(logdir), "--stats-file", str(stats_file)])
    collectors.append(proc)
    proc.wait_ready()
    sender = StockSender(endpoint, "js")
    try:
        sender.wait_connected(logdir)
        proc.send(signal.SIGUSR1)
        wait_until(lambda: "counters:" in proc.stderr, what="counters on SIGUSR1")
        on_signal = json.loads(stats_file.read_text())
        assert on_signal["received"] >= 1 and on_signal["files"]["zlprobe.log"] >= 1
    finally:
        sender.close()
    assert proc.stop() == 0
    final = proc.counters()
    assert proc.stats_path == stats_file
    assert final["received"] >= on_signal["received"]
    assert final["written"] == sum(final["files"].values()) and final["lost"] == 0
    assert f"received={final['received']} written={final['written']} malformed=0" in proc.summary()
    assert not (logdir / "_stats.json").exists()
    assert sorted(p.name for p in stats_file.parent.iterdir()) == ["counters.json"]


def test_stats_file_replaces_planted_links_and_a_missing_directory_is_only_counted(
    logdir: Path, tmp_path: Path, collectors: list[CollectorProcess]
) -> None:
    """A link planted at --stats-file (or at its temp name) is replaced, never written through;
    a path that cannot be written is a warning and a counted error, and the collector runs on."""
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    stats_file = tmp_path / "counters.json"
    stats_file.symlink_to(victim)
    Path(f"{stats_file}.tmp").symlink_to(victim)
    proc = CollectorProcess(
        ["--bind", short_ipc_endpoint(), "--dir", str(logdir), "--stats-file", str(stats_file)]
    )
    collectors.append(proc)
    proc.wait_ready()
    assert proc.ask_counters()["received"] == 0
    assert proc.stop() == 0
    assert victim.read_text() == "keep me\n"
    assert not stats_file.is_symlink() and json.loads(stats_file.read_text())["received"] == 0
    assert not Path(f"{stats_file}.tmp").exists()

    missing = tmp_path / "no" / "such" / "dir" / "counters.json"
    proc = CollectorProcess(
        ["--bind", short_ipc_endpoint(), "--dir", str(logdir), "--stats-file", str(missing)]
    )
    collectors.append(proc)
    proc.wait_ready()
    proc.send(signal.SIGUSR1)
    wait_until(lambda: "counters:" in proc.stderr, what="counters on SIGUSR1")
    assert proc.proc.poll() is None  # still running
    assert proc.stop() == 0
    assert "cannot write the counters to" in proc.stderr
    assert "errors=stats_file:" in proc.summary()


@pytest.mark.parametrize("content", [None, "", "\n  \n"])
def test_unreadable_or_empty_amqp_url_file_is_exit_78(tmp_path: Path, content: str | None) -> None:
    """--amqp-url-file that cannot be read, or whose first line is empty: one line, exit 78."""
    path = tmp_path / "amqp-url"
    if content is not None:
        path.write_text(content)
    result = run_collector(["collect", "--dir", str(tmp_path / "logs"), "--amqp-url-file", str(path)])
    assert result.returncode == 78, result.stderr
    assert "amqp_url_file" in one_error_line(result.stderr)


def test_low_soft_descriptor_limit_is_raised_for_400_publishers(
    logdir: Path, collectors: list[CollectorProcess]
) -> None:
    """Started with a soft RLIMIT_NOFILE of 256, the collector still takes a record from 400 publishers."""
    import zmq

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1024:
        pytest.skip(f"the hard descriptor limit ({hard}) is too low to show anything")
    endpoint = free_tcp_endpoint()
    # The child inherits the lowered soft limit; ours is put back at once.
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        proc = CollectorProcess(["--bind", endpoint, "--dir", str(logdir), "--flush-interval", "0.1"])
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    collectors.append(proc)
    proc.wait_ready()
    count = 400
    context = zmq.Context()
    context.setsockopt(zmq.LINGER, 0)
    sockets = []
    try:
        for _ in range(count):
            sock = context.socket(zmq.PUB)
            sock.connect(endpoint)
            sockets.append(sock)
        app_log = logdir / "fd.log"

        def all_seen() -> bool:
            seen = {line.rsplit(" ", 1)[-1] for line in read_lines(app_log)}
            missing = [i for i in range(count) if f"p{i}" not in seen]
            for i in missing:  # resend until each publisher's subscription handshake is done
                sockets[i].send_multipart([b"fd.INFO", f"from p{i}".encode()])
            return not missing

        wait_until(all_seen, timeout=30, interval=0.2, what="a record from each of 400 publishers")
    finally:
        for sock in sockets:
            sock.close()
        context.term()
    assert proc.stop() == 0
