"""CURVE on the collector: only allow-listed keys write, each record names its peer, refusals are counted.

Real `zlogcollect collect` processes and real pyzmq CURVE clients (the
handler's own CURVE keywords are tested in test_handler_curve.py).
"""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import zmq
import zmq.auth

from tests.helpers import http_get
from zlogcollect.testing.process import Collector, free_tcp_endpoint, read_lines, run_zlogcollect, wait_until

pytestmark = pytest.mark.e2e


@dataclass
class Certs:
    """A collector's certificate, an allow-list directory with app1 and app2, and keys not in it."""

    root: Path
    server: Path
    allow: Path

    def secret(self, name: str) -> Path:
        return self.root / "apps" / f"{name}.key_secret"

    def public(self, name: str) -> Path:
        return self.root / "apps" / f"{name}.key"


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    root = tmp_path / "certs"
    (root / "apps").mkdir(parents=True)
    zmq.auth.create_certificates(root, "collector")
    for name in ("app1", "app2", "app3", "intruder"):
        zmq.auth.create_certificates(root / "apps", name)
    allow = root / "allowed"
    allow.mkdir()
    for name in ("app1", "app2"):
        shutil.copy(root / "apps" / f"{name}.key", allow)
    return Certs(root, root / "collector.key_secret", allow)


class Sockets:
    """The test's sockets, all closed at the end (a socket left to the garbage collector warns)."""

    def __init__(self) -> None:
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.made: list[zmq.Socket[bytes]] = []

    def socket(self, kind: int) -> zmq.Socket[bytes]:
        sock = self.context.socket(kind)
        sock.linger = 0
        self.made.append(sock)
        return sock

    def close(self) -> None:
        for sock in self.made:
            sock.close(linger=0)
        self.context.term()


@pytest.fixture
def context() -> Iterator[Sockets]:
    sockets = Sockets()
    yield sockets
    sockets.close()


def curve_pub(
    context: Sockets, endpoint: str, cert: Path | None, server_key: bytes | None
) -> zmq.Socket[bytes]:
    """A PUB socket connected to *endpoint*: a CURVE client with *cert* (None: plain, like PUBHandler).

    A refused client retries when its handshake times out: 1 s here instead of libzmq's 30 s.
    """
    sock = context.socket(zmq.PUB)
    sock.setsockopt(zmq.HANDSHAKE_IVL, 1000)
    if cert is not None:
        public, secret = zmq.auth.load_certificate(cert)
        assert secret is not None
        sock.curve_publickey, sock.curve_secretkey = public, secret
        assert server_key is not None
        sock.curve_serverkey = server_key
    sock.connect(endpoint)
    return sock


def server_key(certs: Certs) -> bytes:
    return zmq.auth.load_certificate(certs.root / "collector.key")[0]


def start(tmp_path: Path, certs: Certs | None, *extra: str) -> tuple[Collector, str]:
    """A collector on a free tcp port writing to tmp_path/logs, with CURVE on when given *certs*."""
    endpoint = free_tcp_endpoint()
    curve = ["--curve-secret", str(certs.server), "--allow-keys", str(certs.allow)] if certs else []
    collector = Collector(
        ["--bind", endpoint, "--dir", str(tmp_path / "logs"), *curve, "--stats-interval", "0", *extra]
    )
    collector.wait_ready()
    return collector, endpoint


def keep_sending(sock: zmq.Socket[bytes], topic: bytes, text: bytes, path: Path, needle: str) -> None:
    """Send until *needle* is in *path*: a PUB drops what it sends before its handshake completes."""

    def arrived() -> bool:
        sock.send_multipart([topic, text])
        return path.exists() and needle in path.read_text(encoding="utf-8")

    wait_until(arrived, 20, interval=0.05, what=f"{needle!r} in {path}")


def send_until_refused(
    sock: zmq.Socket[bytes],
    frames: list[bytes],
    collector: Collector,
    counted: Callable[[dict[str, int]], bool],
    what: str,
    timeout: float = 20,
) -> None:
    """Send *frames* until the collector's ``refused`` counts satisfy *counted*: a refused client's
    records go nowhere, and it retries its handshake, so only the counters tell."""
    wait_until(
        lambda: sock.send_multipart(frames) is None and counted(collector.ask_counters()["refused"]),
        timeout,
        interval=0.2,
        what=what,
    )


def test_an_allowed_key_writes_and_its_lines_name_the_peer(
    tmp_path: Path, certs: Certs, context: Sockets
) -> None:
    """app1's records arrive, with 'app1' in the default line's peer column and in --json's "peer"."""
    collector, endpoint = start(tmp_path, certs)
    try:
        assert "CURVE on, 2 keys allowed" in collector.stderr
        pub = curve_pub(context, endpoint, certs.secret("app1"), server_key(certs))
        keep_sending(pub, b"web.WARNING.db", b"slow query", tmp_path / "logs" / "web.log", "slow query")
    finally:
        assert collector.stop() == 0
    line = read_lines(tmp_path / "logs" / "web.log")[0]
    fields = line.split(" | ")
    assert fields[1:] == ["WARNING", "web", "app1", "-", "db", "slow query"], line


def test_json_lines_carry_the_peer(tmp_path: Path, certs: Certs, context: Sockets) -> None:
    collector, endpoint = start(tmp_path, certs, "--json")
    try:
        pub = curve_pub(context, endpoint, certs.secret("app2"), server_key(certs))
        keep_sending(pub, b"web.INFO", b"hello", tmp_path / "logs" / "web.log", "hello")
    finally:
        assert collector.stop() == 0
    record = json.loads(read_lines(tmp_path / "logs" / "web.log")[0])
    assert record["peer"] == "app2" and record["source"] == "web"


def test_unknown_keys_and_plain_clients_deliver_nothing_and_are_counted(
    tmp_path: Path, certs: Certs, context: Sockets
) -> None:
    """An unknown key, a plain PUB (a stock PUBHandler) and the wrong server key: nothing written, each
    refusal counted; an allowed key beside them still writes.

    The plain client is counted as ``no_curve`` when the collector reads its greeting first, and as
    ``bad_handshake`` when the client sees the mismatch first and hangs up (a race in every run).
    """
    collector, endpoint = start(tmp_path, certs)
    logs = tmp_path / "logs"

    def refusals() -> dict[str, int]:
        counts: dict[str, int] = collector.ask_counters()["refused"]
        return counts

    def refused_after(
        sock: zmq.Socket[bytes], name: bytes, counted: Callable[[dict[str, int]], bool]
    ) -> None:
        send_until_refused(
            sock,
            [b"evil.ERROR", b"from " + name],
            collector,
            counted,
            f"the {name.decode()} client refused and counted",
            30,
        )

    try:
        intruder = curve_pub(context, endpoint, certs.secret("intruder"), server_key(certs))
        refused_after(intruder, b"intruder", lambda counts: counts.get("unknown_key", 0) >= 1)
        before = refusals()
        plain = curve_pub(context, endpoint, None, None)
        refused_after(
            plain,
            b"plain",
            lambda counts: (
                counts.get("no_curve", 0) + counts.get("bad_handshake", 0)
                > before.get("no_curve", 0) + before.get("bad_handshake", 0)
            ),
        )
        before = refusals()
        wrong_server = curve_pub(context, endpoint, certs.secret("app1"), zmq.curve_keypair()[0])
        refused_after(
            wrong_server,
            b"wrong",
            lambda counts: counts.get("bad_handshake", 0) > before.get("bad_handshake", 0),
        )
        good = curve_pub(context, endpoint, certs.secret("app1"), server_key(certs))
        keep_sending(good, b"web.INFO", b"allowed", logs / "web.log", "allowed")
    finally:
        assert collector.stop() == 0
    assert not (logs / "evil.log").exists()
    written = "".join(path.read_text(encoding="utf-8") for path in logs.glob("*.log"))
    assert "from " not in written
    assert "refused=" in collector.summary()
    assert "its CURVE key is in no *.key file" in collector.stderr


def test_sighup_rereads_the_allow_list(tmp_path: Path, certs: Certs, context: Sockets) -> None:
    """app3 is refused; its key copied in and SIGHUP: accepted without a restart. app2's key removed and
    SIGHUP: a new app2 connection is refused."""
    collector, endpoint = start(tmp_path, certs)
    logs = tmp_path / "logs"
    try:
        app3 = curve_pub(context, endpoint, certs.secret("app3"), server_key(certs))
        send_until_refused(
            app3,
            [b"three.INFO", b"early"],
            collector,
            lambda counts: counts.get("unknown_key", 0) >= 1,
            "app3 refused",
        )
        shutil.copy(certs.public("app3"), certs.allow)
        (certs.allow / "app2.key").unlink()
        start_line = len(collector.stderr_lines)
        collector.send(signal.SIGHUP)
        collector.wait_stderr(
            "allow_keys re-read: 2 keys allowed (added: app3; removed: app2)", start=start_line
        )
        # The refused client retries by itself (after its handshake timeout): the same socket gets in.
        keep_sending(app3, b"three.INFO", b"late", logs / "three.log", "late")
        before = collector.ask_counters()["refused"].get("unknown_key", 0)
        app2 = curve_pub(context, endpoint, certs.secret("app2"), server_key(certs))
        send_until_refused(
            app2,
            [b"two.INFO", b"removed"],
            collector,
            lambda counts: counts.get("unknown_key", 0) > before,
            "app2 refused after its key was removed",
        )
    finally:
        assert collector.stop() == 0
    assert " | app3 | " in (logs / "three.log").read_text(encoding="utf-8")
    assert not (logs / "two.log").exists()


def test_source_from_peer_keeps_each_key_in_its_own_file(
    tmp_path: Path, certs: Certs, context: Sockets
) -> None:
    """app1 claiming billing's topic writes into app1.log, never billing.log."""
    collector, endpoint = start(tmp_path, certs, "--source-from-peer")
    logs = tmp_path / "logs"
    try:
        pub = curve_pub(context, endpoint, certs.secret("app1"), server_key(certs))
        keep_sending(pub, b"billing.ERROR.charge", b"forged", logs / "app1.log", "forged")
    finally:
        assert collector.stop() == 0
    assert not (logs / "billing.log").exists()
    line = read_lines(logs / "app1.log")[0]
    assert line.split(" | ")[2:4] == ["app1", "app1"], line
    assert "forged" in (logs / "errors.log").read_text(encoding="utf-8")


def test_allow_ip_refuses_other_addresses_without_curve(tmp_path: Path, context: Sockets) -> None:
    """--allow-ip alone (no CURVE): a loopback peer outside the allowed network is refused and counted."""
    collector, endpoint = start(tmp_path, None, "--allow-ip", "10.0.0.0/8")
    try:
        pub = curve_pub(context, endpoint, None, None)
        send_until_refused(
            pub,
            [b"web.INFO", b"x"],
            collector,
            lambda counts: counts.get("ip_not_allowed", 0) >= 1,
            "the loopback peer refused",
        )
    finally:
        assert collector.stop() == 0
    assert not (tmp_path / "logs" / "web.log").exists()
    assert "its address is in no --allow-ip network" in collector.stderr


def test_allow_ip_admits_its_network(tmp_path: Path, context: Sockets) -> None:
    collector, endpoint = start(tmp_path, None, "--allow-ip", "127.0.0.0/8")
    logs = tmp_path / "logs"
    try:
        keep_sending(
            curve_pub(context, endpoint, None, None), b"web.INFO", b"local", logs / "web.log", "local"
        )
    finally:
        assert collector.stop() == 0
    assert "refused=" not in collector.summary()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--curve-secret", "{missing}", "--allow-keys", "{allow}"],
            "curve_secret '{missing}': No such file",
        ),
        (["--curve-secret", "{public}", "--allow-keys", "{allow}"], "holds no secret key"),
        (["--curve-secret", "{garbage}", "--allow-keys", "{allow}"], "no public-key line"),
        (["--curve-secret", "{secret}", "--allow-keys", "{empty}"], "no *.key public key files"),
        (["--curve-secret", "{secret}", "--allow-keys", "{missing}"], "allow_keys '{missing}': No such file"),
        (["--curve-secret", "{secret}"], "curve_secret needs allow_keys too"),
        (["--allow-keys", "{allow}"], "allow_keys needs curve_secret too"),
        (["--source-from-peer"], "source_from_peer needs curve_secret"),
        (["--allow-ip", "10.0.0.300/8"], "allow_ip = '10.0.0.300/8': expected an address or a network"),
    ],
)
def test_security_start_up_errors_are_one_line_and_exit_78(
    tmp_path: Path, certs: Certs, args: list[str], expected: str
) -> None:
    (tmp_path / "garbage").write_bytes(b"\x00\xffnot a certificate\n")
    (tmp_path / "empty").mkdir()
    names = {
        "missing": str(tmp_path / "missing"),
        "public": str(certs.root / "collector.key"),
        "secret": str(certs.server),
        "garbage": str(tmp_path / "garbage"),
        "allow": str(certs.allow),
        "empty": str(tmp_path / "empty"),
    }
    filled = [arg.format(**names) for arg in args]
    done = run_zlogcollect(["collect", "--dir", str(tmp_path / "logs"), *filled])
    assert done.returncode == 78, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected.format(**names) in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "logs").exists()  # nothing made on disk for a configuration that cannot run
    secret_text = zmq.auth.load_certificate(certs.server)[1]
    assert secret_text is not None and secret_text.decode() not in done.stderr + done.stdout


def test_publish_with_its_own_allow_list(tmp_path: Path, certs: Certs, context: Sockets) -> None:
    """--publish-allow-keys: an allowed reader's CURVE SUB gets the records (with the peer in the
    extension); a reader with another key gets nothing and is counted."""
    readers = tmp_path / "readers"
    readers.mkdir()
    shutil.copy(certs.public("app3"), readers)
    publish = free_tcp_endpoint()
    collector, endpoint = start(tmp_path, certs, "--publish", publish, "--publish-allow-keys", str(readers))
    try:

        def reader(name: str) -> zmq.Socket[bytes]:
            sock = context.socket(zmq.SUB)
            public, secret = zmq.auth.load_certificate(certs.secret(name))
            assert secret is not None
            sock.curve_publickey, sock.curve_secretkey = public, secret
            sock.curve_serverkey = server_key(certs)
            sock.subscribe(b"")
            sock.connect(publish)
            return sock

        allowed, refused = reader("app3"), reader("intruder")
        pub = curve_pub(context, endpoint, certs.secret("app1"), server_key(certs))
        got: list[list[bytes]] = []

        def received() -> bool:
            pub.send_multipart([b"web.INFO", b"watched"])
            while allowed.poll(50):
                got.append(allowed.recv_multipart())
            return bool(got)

        wait_until(received, 20, interval=0.05, what="the allowed reader's first record")
        wait_until(
            lambda: collector.ask_counters()["publish_refused"].get("unknown_key", 0) >= 1,
            20,
            interval=0.2,
            what="the other reader refused",
        )
        assert refused.poll(100) == 0
    finally:
        assert collector.stop() == 0
    topic, text, extension = got[0]
    assert (topic, text) == (b"web.INFO", b"watched")
    assert json.loads(extension)["peer"] == "app1"


def test_no_secret_is_ever_shown(tmp_path: Path, certs: Certs, context: Sockets) -> None:
    """Issue 13 item 7: with CURVE, --publish's allow-list, --http and an AMQP URL with a password (its
    broker down, so the bridge keeps retrying and saying so), nothing the collector prints, writes or
    serves holds the secret key or the password: stderr, stdout, the counters file, every file in --dir,
    /metrics and /healthz, through a refusal, a SIGHUP with a broken key file, SIGUSR1 and the stop."""
    readers = tmp_path / "readers"
    readers.mkdir()
    shutil.copy(certs.public("app3"), readers)
    password = "Zl0gC0llectPassw0rd"
    dead_broker = f"amqp://zlc:{password}@127.0.0.1:{free_tcp_endpoint().rsplit(':', 1)[1]}/"
    collector, endpoint = start(
        tmp_path,
        certs,
        "--publish",
        free_tcp_endpoint(),
        "--publish-allow-keys",
        str(readers),
        "--http",
        "127.0.0.1:0",
        "--amqp-url",
        dead_broker,
        "--log-level",
        "DEBUG",
        "--stats-interval",
        "0.5",
    )
    served = []
    try:
        address = collector.stderr.split("metrics on http://", 1)[1].split("/metrics", 1)[0]
        keep_sending(
            curve_pub(context, endpoint, certs.secret("app1"), server_key(certs)),
            b"web.INFO",
            b"hello",
            tmp_path / "logs" / "web.log",
            "hello",
        )
        curve_pub(context, endpoint, certs.secret("intruder"), server_key(certs)).send_multipart(
            [b"x.INFO", b"y"]
        )
        (certs.allow / "broken.key").write_text('public-key = "nonsense"\n')
        mark = len(collector.stderr_lines)
        collector.send(signal.SIGHUP)
        collector.wait_stderr("keeping the 2 keys allowed before", start=mark)
        collector.ask_counters()
        for path in ("/metrics", "/healthz"):
            served.append(http_get(address, path)[1].decode())
    finally:
        assert collector.stop() == 0
    config = run_zlogcollect(["config"])
    shown = [collector.stderr, "\n".join(collector.stdout_lines), config.stdout, config.stderr, *served]
    shown += [
        path.read_text(encoding="utf-8", errors="replace")
        for path in (tmp_path / "logs").rglob("*")
        if path.is_file()
    ]
    secrets = [zmq.auth.load_certificate(certs.server)[1], zmq.auth.load_certificate(certs.secret("app1"))[1]]
    everything = "\n".join(shown)
    assert "broken.key" in everything and "zlc" in collector.stderr  # the output is there to search
    for secret in secrets:
        assert secret is not None and secret.decode() not in everything
    assert password not in everything
