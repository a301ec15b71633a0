"""Hardened files and the root policy, as a real `zlogcollect collect` process: the modes of
everything it creates whatever the umask (through rotation and compression), and who it runs as."""

from __future__ import annotations

import os
import pwd
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import (
    CollectorProcess,
    RawSender,
    StockSender,
    one_error_line,
    read_lines,
    run_collector,
    short_ipc_endpoint,
    wait_until,
)
from zlogcollect.testing.process import free_port, scratch

pytestmark = pytest.mark.e2e

as_root_only = pytest.mark.skipif(
    os.geteuid() != 0, reason="the root policy and --user are only in force when started as root (uid 0)"
)
STATE_FILES = {"_stats.json", "_publishers.json", "_publishers.journal", "_zlogcollect.lock"}


def modes(root: Path) -> dict[str, int]:
    """Every file and directory below *root* (and root itself, as '.') with its permission bits."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def start(collectors: list[CollectorProcess], *args: str, umask: int | None = None) -> CollectorProcess:
    proc = CollectorProcess(
        ["--flush-interval", "0.1", *args], preexec=None if umask is None else lambda: os.umask(umask)
    )
    collectors.append(proc)
    proc.wait_ready()
    return proc


@pytest.mark.parametrize(
    ("umask", "flags", "file_mode", "dir_mode"),
    [
        (0o000, [], 0o640, 0o750),  # a permissive umask does not open them up
        (
            0o077,
            ["--file-mode", "644", "--dir-mode", "0755"],
            0o644,
            0o755,
        ),  # a strict one does not close them
    ],
    ids=["umask-000-defaults", "umask-077-0644-0755"],
)
def test_every_file_and_directory_it_creates_has_its_mode_through_rotation_and_compression(
    collectors: list[CollectorProcess],
    tmp_path: Path,
    umask: int,
    flags: list[str],
    file_mode: int,
    dir_mode: int,
) -> None:
    """--dir, route directories, source files, errors.log, _malformed.log, rotated names, .gz backups
    and the state files, under the collector's own umask; state files never above 0640."""
    logdir = tmp_path / "logs"  # created by the collector
    endpoint = short_ipc_endpoint()
    proc = start(
        collectors,
        *("--bind", endpoint, "--dir", str(logdir), "--when", "S", "--compress"),
        *("--route", "gz.#=by-source/{source}/all.log", *flags),
        umask=umask,
    )
    sender, raw = StockSender(endpoint, "gz"), RawSender(endpoint)
    try:
        sender.wait_connected(logdir)
        done = run_collector(["send", "INFO", "from a handler", "--app", "handled", "--connect", endpoint])
        assert done.returncode == 0, done.stderr
        raw.send(b"only one frame")  # quarantined in _malformed.log

        def rotated_twice() -> bool:
            sender.logger.error("line")  # gz.log, errors.log and by-source/gz/all.log
            return len(list(logdir.glob("gz.log.*.gz"))) >= 2 and bool(
                list((logdir / "by-source" / "gz").glob("all.log.*.gz"))
            )

        wait_until(rotated_twice, 15, "two compressed backups of gz.log", interval=0.1)
    finally:
        sender.close()
        raw.close()
    assert proc.stop() == 0
    found = modes(logdir)
    for name in (
        "gz.log",
        "errors.log",
        "_malformed.log",
        "handled.log",
        *STATE_FILES,
        "by-source/gz/all.log",
    ):
        assert name in found, sorted(found)
    assert [name for name in found if name.endswith(".gz")], sorted(found)
    assert not [name for name in found if name.endswith(".tmp")], sorted(found)
    for name, mode in found.items():
        path = logdir / name
        if path.is_dir():
            assert mode == dir_mode, (name, oct(mode))
        elif path.name in STATE_FILES:
            assert mode == file_mode & 0o640, (name, oct(mode))
        else:
            assert mode == file_mode, (name, oct(mode))


def test_files_and_directories_the_operator_made_keep_their_modes(
    collectors: list[CollectorProcess], logdir: Path
) -> None:
    """Only what the collector creates gets --file-mode/--dir-mode; nothing existing is chmod'ed."""
    os.chmod(logdir, 0o755)
    (logdir / "op.log").write_text("the operator's line\n")
    os.chmod(logdir / "op.log", 0o604)
    (logdir / "shared").mkdir()
    os.chmod(logdir / "shared", 0o777)
    endpoint = short_ipc_endpoint()
    proc = start(
        collectors, "--bind", endpoint, "--dir", str(logdir), "--route", "op.#=shared/op.log", umask=0o000
    )
    sender = StockSender(endpoint, "op")
    try:
        sender.wait_connected(logdir)
        sender.logger.info("appended")
        wait_until(
            lambda: "appended" in "".join(read_lines(logdir / "shared" / "op.log")), what="shared/op.log"
        )
    finally:
        sender.close()
    assert proc.stop() == 0
    assert read_lines(logdir / "op.log") == ["the operator's line", read_lines(logdir / "op.log")[1]]
    found = modes(logdir)
    assert (found["."], found["op.log"], found["shared"]) == (0o755, 0o604, 0o777)
    assert (found["shared/op.log"], found["zlprobe.log"]) == (0o640, 0o640)


@pytest.mark.parametrize(
    "args",
    [
        ["collect", "--bind", "tcp://0.0.0.0:{port}"],
        ["collect", "--bind", "tcp://*:{port}", "--bind", "tcp://127.0.0.1:{port2}"],
        ["collect", "--bind", "{ipc}", "--publish", "tcp://*:{port}"],
        ["collect", "--bind", "{ipc}", "--http", "*:{port}"],
        ["bridge", "--bind", "tcp://0.0.0.0:{port}", "--amqp-url", "amqp://guest:guest@127.0.0.1:9/%2F"],
    ],
    ids=["bind-0.0.0.0", "bind-star", "publish-star", "http-star", "bridge"],
)
@as_root_only
def test_as_root_an_endpoint_other_hosts_reach_is_refused_with_exit_77(
    tmp_path: Path, args: list[str]
) -> None:
    """One line naming the endpoint and both ways out (--user, --allow-root); nothing bound, no --dir."""
    values = {"port": str(free_port()), "port2": str(free_port()), "ipc": short_ipc_endpoint()}
    argv = [arg.format(**values) for arg in args]
    if argv[0] == "collect":
        argv += ["--dir", str(tmp_path / "logs")]
    result = run_collector(argv)
    assert result.returncode == 77, result.stderr
    line = one_error_line(result.stderr)
    assert "refusing to run as root" in line and "--user NAME" in line and "--allow-root" in line
    assert values["port"] in line
    assert not (tmp_path / "logs").exists()


@as_root_only
def test_allow_root_from_the_config_file_runs_as_root_on_every_interface(
    collectors: list[CollectorProcess], tmp_path: Path, logdir: Path
) -> None:
    config = tmp_path / "collector.toml"
    config.write_text(f'allow_root = true\nbind = ["tcp://0.0.0.0:{free_port()}"]\n')
    proc = start(collectors, "--config", str(config), "--dir", str(logdir))
    assert "ready: listening on tcp://0.0.0.0:" in proc.stderr
    assert "running as root" not in proc.stderr
    assert proc.stop() == 0


@as_root_only
def test_as_root_on_loopback_it_starts_with_one_warning_line(
    collectors: list[CollectorProcess], logdir: Path
) -> None:
    """The README's quick start as root: loopback (and ipc) only, so it runs, and says how not to be root."""
    proc = start(
        collectors,
        "--bind",
        f"tcp://127.0.0.1:{free_port()}",
        "--bind",
        short_ipc_endpoint(),
        "--dir",
        str(logdir),
    )
    warnings = [line for line in proc.stderr_lines if "running as root" in line]
    assert len(warnings) == 1, proc.stderr
    assert " WARNING: " in warnings[0] and "--user NAME" in warnings[0] and "User=" in warnings[0]
    assert proc.stop() == 0


def _ids(pid: int) -> dict[str, list[int]]:
    status = Path(f"/proc/{pid}/status").read_text()
    return {
        key: [int(n) for n in re.search(rf"^{key}:\s*(.*)$", status, re.MULTILINE).group(1).split()]  # type: ignore[union-attr]
        for key in ("Uid", "Gid", "Groups")
    }


@as_root_only
def test_user_drops_to_nobody_after_binding_and_writes_as_nobody(collectors: list[CollectorProcess]) -> None:
    """Started as root on tcp://0.0.0.0, --user nobody: every uid and gid is nobody's once ready, and a
    record arrives in a --dir only nobody may write, below a directory nobody may only traverse."""
    nobody = pwd.getpwnam("nobody")
    with scratch("zlu") as base:
        os.chmod(base, 0o711)  # nobody may pass through, not list or write
        logdir = base / "logs"
        logdir.mkdir(mode=0o700)
        os.chown(logdir, nobody.pw_uid, nobody.pw_gid)
        port = free_port()
        proc = start(collectors, "--bind", f"tcp://0.0.0.0:{port}", "--dir", str(logdir), "--user", "nobody")
        ids = _ids(proc.pid)
        assert ids["Uid"] == [nobody.pw_uid] * 4, ids
        assert ids["Gid"] == [nobody.pw_gid] * 4, ids
        assert ids["Groups"] == sorted(os.getgrouplist("nobody", nobody.pw_gid)) or ids["Groups"] == [
            nobody.pw_gid
        ], ids
        assert "running as root" not in proc.stderr
        sender = StockSender(f"tcp://127.0.0.1:{port}", "app1")
        try:
            sender.wait_connected(logdir)
            sender.logger.info("written by nobody")
            wait_until(
                lambda: "written by nobody" in "".join(read_lines(logdir / "app1.log")), what="app1.log"
            )
        finally:
            sender.close()
        proc.send(signal.SIGUSR1)  # the counters file, written as nobody
        proc.wait_stderr("counters:")
        assert proc.stop() == 0
        for path in logdir.iterdir():
            info = path.stat()
            assert (info.st_uid, info.st_gid) == (nobody.pw_uid, nobody.pw_gid), path
            assert stat.S_IMODE(info.st_mode) == 0o640, path


@as_root_only
def test_user_who_cannot_write_the_dir_is_one_line_and_exit_73() -> None:
    with scratch("zlu") as base:
        os.chmod(base, 0o711)
        logdir = base / "logs"
        logdir.mkdir(mode=0o755)  # root's
        result = run_collector(
            ["collect", "--bind", short_ipc_endpoint(), "--dir", str(logdir), "--user", "nobody"]
        )
        assert result.returncode == 73, result.stderr
        line = one_error_line(result.stderr)
        assert "not writable by user nobody" in line and str(logdir) in line
        assert list(logdir.iterdir()) == []


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ('user = "no-such-user-zl"', "no-such-user-zl"),
        ('user = "a\\u0000b"', "no such user"),  # a NUL byte, which no command line can carry
        ('user = "root"', "that is root"),
        ('file_mode = "\\uff10640"', "octal mode"),  # a full-width digit
        ('file_mode = "0o7777"', "at most 0777"),
        ('dir_mode = "0600"', "search permission"),
        ('file_mode = "rw-r-----"', "octal mode"),
    ],
)
def test_a_bad_user_or_mode_is_one_line_and_exit_78(tmp_path: Path, toml: str, needle: str) -> None:
    """From the config file, where anything can be spelled; nothing is created."""
    config = tmp_path / "collector.toml"
    config.write_text(toml + "\n", encoding="utf-8")
    argv = [
        "collect",
        "--config",
        str(config),
        "--bind",
        short_ipc_endpoint(),
        "--dir",
        str(tmp_path / "logs"),
    ]
    result = run_collector(argv)
    if "needs root" in result.stderr:  # not started as root: that is said first
        pytest.skip("not root: --user is refused before it is looked up (test_user_when_not_started_as_root)")
    assert result.returncode == 78, result.stderr
    assert needle in one_error_line(result.stderr)
    assert not (tmp_path / "logs").exists()


def test_user_when_not_started_as_root_is_one_line_and_exit_78() -> None:
    """As root, the command is run as nobody (so this runs here too); otherwise as whoever runs the tests."""
    argv = [
        sys.executable,
        "-m",
        "zlogcollect",
        "collect",
        "--bind",
        short_ipc_endpoint(),
        "--user",
        "nobody",
    ]
    as_nobody = (
        {"user": "nobody", "group": pwd.getpwnam("nobody").pw_gid, "extra_groups": []}
        if os.geteuid() == 0
        else {}
    )
    with scratch("zlu") as base:
        os.chmod(base, 0o777)
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=20, cwd=base, **as_nobody)  # type: ignore[call-overload]
        except PermissionError:
            pytest.skip(
                f"{sys.executable} cannot be run as nobody here (it lies below a directory only root may"
                " enter); test_privileges.py covers the decision"
            )
    assert result.returncode == 78, result.stderr
    line = one_error_line(result.stderr)
    assert "needs root" in line and "user = 'nobody'" in line
