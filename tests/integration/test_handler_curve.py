"""ZLogHandler as a CURVE client of a real CURVE server (a SUB with a ZAP allow-list) in this process.

The server stands in for the collector until it has CURVE: pyzmq's
ThreadAuthenticator on the SUB's own context, started before bind, lets in only
the clients whose public key is in the allow-list directory.
"""

from __future__ import annotations

import logging
import logging.config
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

import zlogcollect
from tests.helpers import CurveKeys, short_ipc_endpoint, wait_until
from tests.helpers_handler import Receiver, private_logger, run_app
from zlogcollect import ZLogHandler

pytestmark = pytest.mark.integration


@pytest.fixture
def handlers() -> Iterator[list[ZLogHandler]]:
    made: list[ZLogHandler] = []
    yield made
    for handler in made:
        handler.close()


def test_an_allowed_key_delivers_with_the_server_key_as_a_file_or_as_text(
    curve_keys: CurveKeys, curve_receiver: Receiver, handlers: list[ZLogHandler]
) -> None:
    """The server's .key file and its Z85 text both work; records arrive with their extension."""
    server_text = curve_keys.server_text()
    given: tuple[str | Path, ...] = (str(curve_keys.server_public), server_text, curve_keys.server_public)
    for n, server_key in enumerate(given):
        handler = ZLogHandler(
            curve_receiver.endpoint,
            app=f"c{n}",
            linger=0.5,
            curve_server_key=server_key,
            curve_client_cert=str(curve_keys.client_secret),
        )
        handlers.append(handler)
        private_logger("curve", handler).warning("db::secret-free record %d", n)
    frames = curve_receiver.wait_for(3)
    assert sorted(f[:2] for f in frames) == [
        [f"c{n}.WARNING.db".encode(), f"secret-free record {n}".encode()] for n in range(3)
    ]
    assert all(len(f) == 3 for f in frames)


@pytest.mark.parametrize("wrong", ["server key", "client key"])
def test_a_wrong_key_holds_then_drops_and_counts_as_with_no_collector(
    curve_keys: CurveKeys, curve_receiver: Receiver, handlers: list[ZLogHandler], wrong: str
) -> None:
    """Another server's key, or a client key the server does not allow: nothing arrives, and the
    handler's counters end exactly as those of a handler whose collector is absent."""
    curve_server_key = curve_keys.other_server_public if wrong == "server key" else curve_keys.server_public
    curve_client_cert = curve_keys.client_secret if wrong == "server key" else curve_keys.stranger_secret
    refused = ZLogHandler(
        curve_receiver.endpoint,
        app="refused",
        linger=0.3,
        hold=50,
        curve_server_key=str(curve_server_key),
        curve_client_cert=str(curve_client_cert),
    )
    alone = ZLogHandler(short_ipc_endpoint(), app="alone", linger=0.3, hold=50)
    allowed = ZLogHandler(
        curve_receiver.endpoint,
        app="allowed",
        linger=0.3,
        curve_server_key=str(curve_keys.server_public),
        curve_client_cert=str(curve_keys.client_secret),
    )
    handlers.extend((refused, alone, allowed))
    for handler in (refused, alone):
        logger = private_logger("wrong", handler)
        for i in range(80):
            logger.info("record %d", i)
    # The allowed client, connected after the refused one, gets through: the server is up.
    private_logger("ok", allowed).info("allowed")
    wait_until(lambda: any(f[0] == b"allowed.INFO" for f in curve_receiver.frames), 10, "the allowed record")
    assert refused.stats == alone.stats
    assert alone.stats.items() >= {"seq": 80, "dropped": 30, "held": 50}.items()
    refused.close()
    alone.close()
    assert refused.stats == alone.stats
    assert alone.stats.items() >= {"seq": 80, "dropped": 80, "held": 0}.items()
    assert [f[0] for f in curve_receiver.frames] == [b"allowed.INFO"]


def test_both_or_neither_and_bad_files_fail_at_construction(curve_keys: CurveKeys, tmp_path: Path) -> None:
    """One keyword alone, a public file as the client's, a missing file: ValueError, nothing opened."""
    endpoint = short_ipc_endpoint()
    secret = curve_keys.secret_text(curve_keys.client_secret)
    with pytest.raises(ValueError, match="curve_server_key needs curve_client_cert too"):
        ZLogHandler(endpoint, curve_server_key=str(curve_keys.server_public))
    with pytest.raises(ValueError, match="curve_client_cert needs curve_server_key too"):
        ZLogHandler(endpoint, curve_client_cert=str(curve_keys.client_secret))
    with pytest.raises(ValueError, match="holds no secret key") as caught:
        ZLogHandler(
            endpoint,
            curve_server_key=str(curve_keys.server_public),
            curve_client_cert=str(curve_keys.client_public),
        )
    assert secret not in str(caught.value)
    with pytest.raises(ValueError, match="No such file"):
        ZLogHandler(
            endpoint,
            curve_server_key=str(tmp_path / "none.key"),
            curve_client_cert=str(curve_keys.client_secret),
        )
    context = zmq.Context()
    sock = context.socket(zmq.XPUB)
    try:
        with pytest.raises(ValueError, match="set them on a socket you pass"):
            ZLogHandler(
                sock,
                curve_server_key=str(curve_keys.server_public),
                curve_client_cert=str(curve_keys.client_secret),
            )
    finally:
        sock.close(linger=0)
        context.term()


def test_setup_and_dict_config_take_the_keywords(curve_keys: CurveKeys, curve_receiver: Receiver) -> None:
    """zlogcollect.setup() and dictConfig (with "class" and with "()") build CURVE handlers."""
    curve = {
        "curve_server_key": str(curve_keys.server_public),
        "curve_client_cert": str(curve_keys.client_secret),
    }
    handler = zlogcollect.setup(curve_receiver.endpoint, app="fromsetup", linger=0.5, **curve)
    try:
        logging.getLogger("s").warning("via setup")
        curve_receiver.wait_for(1)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {
                "by_class": {
                    "class": "zlogcollect.ZLogHandler",
                    "endpoint": curve_receiver.endpoint,
                    "app": "byclass",
                    "linger": 0.5,
                    **curve,
                },
                "by_factory": {
                    "()": "zlogcollect.ZLogHandler",
                    "endpoint": curve_receiver.endpoint,
                    "app": "byfactory",
                    "linger": 0.5,
                    **curve,
                },
            },
            "loggers": {"dc": {"handlers": ["by_class", "by_factory"], "level": "INFO", "propagate": False}},
        }
    )
    logger = logging.getLogger("dc")
    made = list(logger.handlers)
    try:
        assert all(isinstance(h, ZLogHandler) for h in made) and len(made) == 2
        logger.info("via dictConfig")
        curve_receiver.wait_for(3)
    finally:
        for h in made:
            logger.removeHandler(h)
            h.close()
    assert sorted(f[0] for f in curve_receiver.frames) == [
        b"byclass.INFO",
        b"byfactory.INFO",
        b"fromsetup.WARNING",
    ]


FORK_APP = """
    import logging, os, sys
    from zlogcollect import ZLogHandler
    handler = ZLogHandler(sys.argv[1], app="forked", curve_server_key=sys.argv[2], curve_client_cert=sys.argv[3])
    log = logging.getLogger("fork")
    log.addHandler(handler)
    log.warning("parent before fork")
    pid = os.fork()
    if pid == 0:
        log.warning("child %d", os.getpid())
        logging.shutdown()
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    log.warning("parent after fork")
    sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_a_fork_child_opens_its_own_curve_socket(
    curve_keys: CurveKeys, curve_receiver: Receiver, tmp_path: Path
) -> None:
    """After fork the child's new socket is a CURVE client too: its record arrives, as do the parent's."""
    done = run_app(
        FORK_APP,
        curve_receiver.endpoint,
        str(curve_keys.server_public),
        str(curve_keys.client_secret),
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    frames = curve_receiver.wait_for(3)
    texts = sorted(f[1].decode().split(" ")[0] for f in frames)
    assert texts == ["child", "parent", "parent"]


EXIT_APP = """
    import logging, sys
    import zlogcollect
    zlogcollect.setup(sys.argv[1], app="wrongkey", linger=1.0, curve_server_key=sys.argv[2], curve_client_cert=sys.argv[3])
    for i in range(100):
        logging.warning("nobody can read this %d", i)
    print("logged", flush=True)
"""


def test_an_app_with_a_wrong_server_key_logs_and_exits_without_hanging(
    curve_keys: CurveKeys, curve_receiver: Receiver, tmp_path: Path
) -> None:
    """A real app whose handshake never completes: its logging calls return and it exits, quietly,
    within its linger and a margin (the subprocess timeout; a hang would be a TimeoutExpired)."""
    done = run_app(
        EXIT_APP,
        curve_receiver.endpoint,
        str(curve_keys.other_server_public),
        str(curve_keys.client_secret),
        cwd=tmp_path,
        timeout=1.0 + 20.0,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "logged\n"
    assert done.stderr == ""
    assert curve_keys.secret_text(curve_keys.client_secret) not in done.stdout + done.stderr
    assert curve_receiver.frames == []


def test_handler_module_never_imports_gevent(curve_keys: CurveKeys, tmp_path: Path) -> None:
    """A CURVE handler built in a fresh interpreter leaves gevent unloaded."""
    done = run_app(
        """
        import sys
        from zlogcollect import ZLogHandler
        h = ZLogHandler(sys.argv[1], linger=0, curve_server_key=sys.argv[2], curve_client_cert=sys.argv[3])
        h.close()
        print(sorted(m for m in sys.modules if m.split(".")[0] == "gevent"))
        """,
        short_ipc_endpoint(),
        str(curve_keys.server_public),
        str(curve_keys.client_secret),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[]\n"
