"""The root policy, --user lookups and the file modes: pure decisions, called directly."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from zlogcollect.config import ConfigError, from_mapping
from zlogcollect.exits import ExitStatus
from zlogcollect.privileges import (
    ROOT_WARNING,
    PolicyError,
    bind_host,
    dir_mode_problem,
    exposed,
    file_mode_problem,
    host_is_loopback,
    lookup_user,
    parse_mode,
    root_policy,
    state_mode,
)


@pytest.mark.parametrize(
    ("text", "mode"), [("0640", 0o640), ("640", 0o640), ("0o750", 0o750), (" 600 ", 0o600)]
)
def test_modes_are_octal_text_with_or_without_the_leading_zero(text: str, mode: int) -> None:
    assert parse_mode(text) == mode


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("0640", None),
        ("0600", None),
        ("0666", None),
        ("rw-r-----", "octal mode"),
        ("0980", "octal mode"),
        ("", "octal mode"),
        ("06400", "octal mode"),
        ("4640", "at most 0777"),
        ("1777", "at most 0777"),
        ("0440", "read and write"),
        ("0240", "read and write"),
        ("0040", "read and write"),
    ],
)
def test_a_file_mode_must_be_permission_bits_the_owner_can_read_and_write_with(
    text: str, problem: str | None
) -> None:
    found = file_mode_problem(text)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


@pytest.mark.parametrize(
    ("text", "problem"),
    [("0750", None), ("0700", None), ("755", None), ("0650", "search"), ("0550", "search"), ("2750", "0777")],
)
def test_a_dir_mode_must_let_the_owner_list_enter_and_write(text: str, problem: str | None) -> None:
    found = dir_mode_problem(text)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_state_files_are_never_more_open_than_0640() -> None:
    assert state_mode(0o640) == 0o640
    assert state_mode(0o666) == 0o640
    assert state_mode(0o600) == 0o600


def test_the_mode_settings_load_from_toml_text_and_wrong_ones_are_one_line() -> None:
    config = from_mapping({"file_mode": "600", "dir_mode": "0700", "user": "nobody", "allow_root": True})
    assert (config.file_mode_value, config.dir_mode_value) == (0o600, 0o700)
    assert (config.user, config.allow_root) == ("nobody", True)
    with pytest.raises(ConfigError, match=r"^file_mode = '0444': the owner") as caught:
        from_mapping({"file_mode": "0444"})
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"^dir_mode = '4755': only permission bits"):
        from_mapping({"dir_mode": "4755"})


@pytest.mark.parametrize(
    ("endpoint", "host"),
    [
        ("tcp://127.0.0.1:5558", "127.0.0.1"),
        ("tcp://*:5558", "*"),
        ("tcp://[::1]:5558", "::1"),
        ("tcp://eth0:*", "eth0"),
        ("ipc:///run/zlogcollect/log.sock", None),
        ("ipc://@abstract", None),
        ("inproc://x", None),
        ("epgm://eth0;239.192.1.1:5555", "epgm://eth0;239.192.1.1:5555"),
    ],
)
def test_the_host_an_endpoint_binds(endpoint: str, host: str | None) -> None:
    assert bind_host(endpoint) == host


def test_exposed_names_each_endpoint_other_hosts_reach_and_the_http_address() -> None:
    """Whatever the predicate does not call loopback is reachable: a wildcard, a routable address, pgm."""
    loopback = {"127.0.0.1", "::1", "lo", "localhost"}.__contains__
    binds = [
        "tcp://127.0.0.1:5558",
        "tcp://0.0.0.0:5558",
        "ipc:///tmp/x.sock",
        "tcp://*:5559",
        "tcp://[::1]:5560",
        "tcp://eth0:5561",
        "tcp://lo:5562",
        "epgm://eth0;239.192.1.1:5555",
    ]
    assert exposed(binds, None, loopback) == [
        "tcp://0.0.0.0:5558",
        "tcp://*:5559",
        "tcp://eth0:5561",
        "epgm://eth0;239.192.1.1:5555",
    ]
    assert exposed(["ipc:///tmp/x.sock"], "0.0.0.0", loopback, "*:9559") == ["--http *:9559"]
    assert exposed(["tcp://localhost:5558"], "127.0.0.1", loopback) == []


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("*", False),
        ("", False),
        ("192.0.2.7", False),
        ("10.1.2.3", False),
        ("fe80::1%eth0", False),
        ("no-such-host.invalid", False),
    ],
)
def test_loopback_addresses_and_everything_else(host: str, loopback: bool) -> None:
    assert host_is_loopback(host) is loopback


def test_interface_names_are_decided_by_their_loopback_flag() -> None:
    names = {name for _index, name in socket.if_nameindex()}
    if "lo" not in names:
        pytest.skip("no interface named lo on this host")
    assert host_is_loopback("lo")
    others = [name for name in names if name != "lo" and Path(f"/sys/class/net/{name}/flags").exists()]
    for name in others:
        flags = int(Path(f"/sys/class/net/{name}/flags").read_text(), 16)
        assert host_is_loopback(name) is bool(flags & 0x8), name


def test_as_root_reachable_endpoints_are_refused_naming_both_ways_out() -> None:
    with pytest.raises(PolicyError) as caught:
        root_policy(0, ["tcp://0.0.0.0:5558"], "", False)
    message = str(caught.value)
    assert caught.value.status == ExitStatus.NOPERM
    assert int(caught.value.status) == 77
    assert "tcp://0.0.0.0:5558" in message and "--user NAME" in message and "--allow-root" in message
    assert "\n" not in message


def test_as_root_loopback_only_starts_with_a_warning_and_either_flag_silences_it() -> None:
    assert root_policy(0, [], "", False) == ROOT_WARNING
    assert "--user" in ROOT_WARNING and "User=" in ROOT_WARNING
    assert root_policy(0, ["tcp://*:5558"], "nobody", False) is None
    assert root_policy(0, ["tcp://*:5558"], "", True) is None
    assert root_policy(0, [], "nobody", False) is None


def test_not_root_nothing_is_said_but_user_is_an_error() -> None:
    assert root_policy(1000, ["tcp://*:5558"], "", False) is None
    with pytest.raises(PolicyError, match="needs root") as caught:
        root_policy(1000, [], "nobody", False)
    assert caught.value.status == ExitStatus.CONFIG


def test_users_are_looked_up_by_name_or_uid() -> None:
    nobody = lookup_user("nobody")
    assert nobody.name == "nobody" and nobody.uid > 0
    assert lookup_user(str(nobody.uid)) == nobody
    with pytest.raises(PolicyError, match="no such user") as caught:
        lookup_user("no-such-user-zl")
    assert caught.value.status == ExitStatus.CONFIG
    with pytest.raises(PolicyError, match="no such user"):
        lookup_user("99999999999999999999")


@pytest.mark.parametrize("spec", ["a\x00b", "\udcff", "-1", "x" * 5000, "\uff14\uff12", " nobody", ""])
def test_hostile_user_names_are_one_line_refusals_never_an_exception(spec: str) -> None:
    """NUL bytes, surrogates, huge names, digits that are not ASCII (no uid 42 from '\uff14\uff12')."""
    with pytest.raises(PolicyError, match="no such user") as caught:
        lookup_user(spec)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 200


@pytest.mark.parametrize("spec", ["root", "0"])
def test_dropping_to_root_is_no_drop_and_is_refused(spec: str) -> None:
    with pytest.raises(PolicyError, match="that is root") as caught:
        lookup_user(spec)
    assert caught.value.status == ExitStatus.CONFIG


def test_created_files_and_dirs_get_their_modes_whatever_the_umask(tmp_path: Path) -> None:
    """The rotating file and its route directory: exact modes under umask 0 and 077; an existing
    file and directory keep the operator's modes."""
    from zlogcollect.sinks.rotating import RotatingFile, Rotation

    rotation = Rotation(file_mode=0o640, dir_mode=0o750)
    (tmp_path / "kept").mkdir(mode=0o777)
    os.chmod(tmp_path / "kept", 0o777)
    (tmp_path / "kept" / "own.log").write_text("")
    os.chmod(tmp_path / "kept" / "own.log", 0o604)
    for mask in (0o000, 0o077):
        old = os.umask(mask)
        try:
            for name in (f"new{mask}/deeper/a.log", "kept/own.log", f"top{mask}.log"):
                handle = RotatingFile(str(tmp_path / name), rotation, None, root=str(tmp_path))
                handle.write_batch(b"x\n", 0.0)
                handle.close()
        finally:
            os.umask(old)
        assert stat.S_IMODE((tmp_path / f"new{mask}").stat().st_mode) == 0o750
        assert stat.S_IMODE((tmp_path / f"new{mask}" / "deeper").stat().st_mode) == 0o750
        assert stat.S_IMODE((tmp_path / f"new{mask}" / "deeper" / "a.log").stat().st_mode) == 0o640
        assert stat.S_IMODE((tmp_path / f"top{mask}.log").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "kept").stat().st_mode) == 0o777
    assert stat.S_IMODE((tmp_path / "kept" / "own.log").stat().st_mode) == 0o604
    assert (tmp_path / "kept" / "own.log").read_text() == "x\nx\n"


@pytest.mark.parametrize("mask", [0o000, 0o077])
def test_state_files_are_written_with_their_mode_whatever_the_umask(tmp_path: Path, mask: int) -> None:
    from zlogcollect.helpers import atomic_write

    old = os.umask(mask)
    try:
        atomic_write(str(tmp_path / "_stats.json"), "{}\n", sync=False)
        atomic_write(str(tmp_path / "narrow.json"), "{}\n", sync=False, mode=0o600)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "_stats.json").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "narrow.json").stat().st_mode) == 0o600
