"""CURVE in front of the AMQP bridge: the peer each record came from is in its AMQP body, and with
--source-from-peer the routing key follows the peer, whatever source the app claimed."""

from __future__ import annotations

from pathlib import Path

import zmq.auth

from tests.amqp.test_bridge import declare, drain, launch, queue_length
from tests.helpers import CollectorProcess, short_ipc_endpoint, wait_until
from tests.helpers_handler import private_logger
from zlogcollect.handler import ZLogHandler


def make_keys(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The collector's certificate, an allow-list with app1, app1's certificate."""
    for folder in ("server", "apps", "allowed"):
        (tmp_path / folder).mkdir()
    zmq.auth.create_certificates(tmp_path / "server", "collector")
    public, secret = zmq.auth.create_certificates(tmp_path / "apps", "app1")
    (tmp_path / "allowed" / "app1.key").write_bytes(Path(public).read_bytes())
    return tmp_path / "server" / "collector", tmp_path / "allowed", Path(secret)


def test_the_bridge_body_names_the_peer_and_source_from_peer_routes_by_it(
    rabbit_url: str, collectors: list[CollectorProcess], tmp_path: Path
) -> None:
    server, allowed, app_cert = make_keys(tmp_path)
    declare(rabbit_url, "curve-all", "#")
    endpoint = short_ipc_endpoint()
    launch(
        collectors, "bridge", "--bind", endpoint, "--amqp-url", rabbit_url,
        "--curve-secret", f"{server}.key_secret", "--allow-keys", str(allowed), "--source-from-peer",
    )  # fmt: skip
    handler = ZLogHandler(
        endpoint, app="billing", curve_server_key=f"{server}.key", curve_client_cert=str(app_cert)
    )
    logger = private_logger("curve-bridge", handler)
    try:
        wait_until(
            lambda: logger.error("claims billing") is None and queue_length(rabbit_url, "curve-all") >= 1,
            20,
            interval=0.1,
            what="a record from the CURVE handler in RabbitMQ",
        )
    finally:
        handler.close()
    key, _, body = drain(rabbit_url, "curve-all")[0]
    assert body["peer"] == "app1"
    assert key == "app1.ERROR"  # the source is the peer's, not the claimed "billing"
    assert body["msg"] == "claims billing"
