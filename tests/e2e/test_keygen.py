"""`zlogcollect keygen`: a CURVE certificate pair in pyzmq's format, the secret 0600, nothing overwritten."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
import zmq
import zmq.auth

pytestmark = pytest.mark.e2e


def keygen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zlogcollect", "keygen", *args], capture_output=True, text=True, timeout=60
    )


def test_keys_are_written_loadable_and_the_secret_is_private(tmp_path: Path) -> None:
    """Two files zmq.auth reads back; stdout is the public key; the secret is 0600 and the new folder 0700."""
    folder = tmp_path / "certs"
    done = keygen("app1", "--dir", str(folder))
    assert done.returncode == 0, done.stderr
    public, secret = folder / "app1.key", folder / "app1.key_secret"
    public_key, none = zmq.auth.load_certificate(public)
    assert none is None
    assert zmq.auth.load_certificate(secret)[0] == public_key
    assert done.stdout.strip() == public_key.decode()
    assert str(public) in done.stderr and str(secret) in done.stderr
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    # And the pair works: a CURVE client with this certificate talks to a CURVE server.
    server_public, server_secret = zmq.curve_keypair()
    context = zmq.Context()
    try:
        server = context.socket(zmq.PULL)
        server.curve_server = True
        server.curve_secretkey = server_secret
        port = server.bind_to_random_port("tcp://127.0.0.1")
        client = context.socket(zmq.PUSH)
        client.curve_publickey, client.curve_secretkey = zmq.auth.load_certificate(secret)
        client.curve_serverkey = server_public
        client.connect(f"tcp://127.0.0.1:{port}")
        client.send(b"hello")
        assert server.poll(10_000) and server.recv() == b"hello"
    finally:
        context.destroy(linger=0)


def test_existing_keys_are_kept_unless_forced(tmp_path: Path) -> None:
    """A second keygen of the same name is exit 73 and changes nothing; --force replaces both files."""
    assert keygen("app1", "--dir", str(tmp_path)).returncode == 0
    before = (tmp_path / "app1.key_secret").read_bytes()
    again = keygen("app1", "--dir", str(tmp_path))
    assert again.returncode == 73
    assert again.stderr.count("\n") == 1 and "--force" in again.stderr and "Traceback" not in again.stderr
    assert (tmp_path / "app1.key_secret").read_bytes() == before
    forced = keygen("app1", "--dir", str(tmp_path), "--force")
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "app1.key_secret").read_bytes() != before


def test_a_planted_link_is_replaced_not_written_through(tmp_path: Path) -> None:
    """With --force, a symlink where the secret goes is replaced: the file it pointed to is untouched."""
    target = tmp_path / "victim"
    target.write_text("keep me")
    (tmp_path / "app1.key_secret").symlink_to(target)
    assert keygen("app1", "--dir", str(tmp_path)).returncode == 73  # a link counts as existing
    assert keygen("app1", "--dir", str(tmp_path), "--force").returncode == 0
    assert target.read_text() == "keep me"
    assert not (tmp_path / "app1.key_secret").is_symlink()


@pytest.mark.parametrize(
    ("args", "status", "words"),
    [
        (["../escape"], 78, "name '../escape'"),
        ([".hidden"], 78, "file-name word"),
        (["a b"], 78, "file-name word"),
        (["x" * 101], 78, "file-name word"),
        (["app1", "--dir", "/proc/no-such-dir"], 73, "cannot write keys in /proc/no-such-dir"),
        ([], 2, "Missing argument"),
    ],
)
def test_bad_input_is_one_line_and_an_exit_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], status: int, words: str
) -> None:
    """A bad name, an unwritable directory, no name: one line on stderr, the table's status, no file."""
    monkeypatch.chdir(tmp_path)
    done = keygen(*args)
    assert done.returncode == status
    assert words in done.stderr and "Traceback" not in done.stderr
    assert not list(tmp_path.glob("*.key*"))
