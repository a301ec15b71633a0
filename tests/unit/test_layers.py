"""The package's layers: every module imports only from layers below its own.

The flow is wire -> encode -> handler on the app side, and wire -> routing /
formatting -> collector -> sinks -> daemon -> cli on the collector side (see
docs/ARCHITECTURE.md). A new module gets a layer here; an import that goes up
or sideways fails this test, which is how the pure parts stay pure.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "zlogcollect"

LAYERS: dict[str, int] = {
    # 0: leaves, standard library only
    "_version": 0,
    "exits": 0,
    "helpers": 0,
    "options": 0,
    "seqtrack": 0,  # one publisher's sequence numbers: highest written, bounded open gaps (exactly once)
    "hold": 0,
    "replay": 0,  # the handler's replay window (pure)
    "publisher": 0,  # plain zmq only: the app side's socket
    "sdnotify": 0,  # systemd readiness: one datagram, standard library only
    "certfile": 0,  # one CURVE certificate file read and checked (zmq.auth, imported when called)
    # 1: the wire format
    "wire": 1,
    "endpoints": 1,  # zmq: binding with one-line errors
    "privileges": 1,  # the root policy, --user, file modes (standard library)
    "keys": 1,  # keygen and a CURVE client's keys: zmq.auth certificates, imported when called
    "stats": 1,  # the counters (with each publisher's seqtrack.SeqTracker)
    "health": 2,  # /healthz's verdict from the counters
    "access": 1,  # who may connect: CURVE allow-list, --allow-ip, the ZAP verdict (pure)
    # 2: pure logic on records
    "encode": 2,
    "routing": 2,
    "formatting": 2,
    "ledger": 2,
    "zap": 2,  # the ZAP handler: a greenlet answering libzmq's handshake questions with access.Gate
    "metrics": 3,  # the counters as Prometheus families (prometheus_client, no sockets)
    "sinks": 2,  # the Sink protocol
    "sinks.rotating": 2,
    "sinks.amqp_message": 3,
    "sinks.outbox": 4,
    "config": 4,
    # app side
    "delivery": 3,
    "handler": 4,
    "lines": 3,  # ship's and send's pure part: lines, levels, the extension
    "readers": 4,  # ship's inputs: files, tail -F, named pipes, stdin (threads, no sockets)
    "ship": 5,  # `zlogcollect ship` and `send`: readers and the sender, app side (never gevent)
    # collector side: I/O
    "collector": 5,
    "sinks.files": 5,
    "sinks.amqp_link": 5,
    "sinks.amqp": 6,
    "seen": 0,
    "writeahead": 0,  # planned appends and whether they reached the files (pure but for lstat)  # the writer's window of message ids written, and its journal lines (pure)
    "writer": 6,  # collect --from-amqp: a pika consumer feeding the file sink, acks after the write
    "terminal": 5,
    "httpd": 5,  # --http: gevent's WSGI server on the collector's hub
    "republish": 5,  # --publish: the XPUB socket the daemon hands the collector's dispatch (plain zmq)
    # `zlogcollect tail`: the pure view (patterns, lines, colour), then the SUB loop (plain zmq)
    "display": 3,
    "live": 2,  # the web viewer's filters (pure)
    "web": 0,  # the web viewer's page: package data and its headers (standard library)
    "history": 3,  # the web viewer's search: the collector's files read back into records (pure)
    "window": 3,  # the live stream's last N accepted records, numbered, read through a filter (pure)
    "stream": 4,  # /events and /sources: the window's clients as SSE greenlets (gevent)
    "webauth": 1,  # --http's optional bearer token or basic credentials (pure, standard library)
    "tail": 5,
    "topology": 3,  # `topology declare`'s pure part: the sharded topology's plan from the options
    "topology_declare": 5,  # the plan declared on a broker (pika BlockingConnection, no gevent)
    "daemon": 7,
    "cli": 8,
    "__main__": 9,
    "": 9,  # the package itself: re-exports the handler lazily
    # aside from the flow: helpers that run a real collector and a RabbitMQ node for
    # tests and benchmarks; they start the CLI as a subprocess and import none of it
    "testing": 0,
    "testing.process": 0,
    "testing.rabbitmq": 0,
}

APP_SIDE = ("encode", "hold", "replay", "publisher", "delivery", "handler", "lines", "readers", "ship")
COLLECTOR_SIDE = (
    "collector",
    "sinks.files",
    "sinks.amqp",
    "sinks.amqp_link",
    "writer",
    "daemon",
    "terminal",
    "cli",
    "httpd",
    "stream",
    "metrics",
    "republish",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """The package modules *path* imports (at any depth of the file, lazily or not)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
            if node.module == "zlogcollect":  # from zlogcollect import formatting
                names = [f"zlogcollect.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name == "zlogcollect" or name.startswith("zlogcollect."):
                found.add(name.removeprefix("zlogcollect").removeprefix("."))
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    assert sorted(module_name(path) for path in MODULES) == sorted(LAYERS)


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_imports_go_down_the_layers(path: Path) -> None:
    name = module_name(path)
    wrong = {
        dep: LAYERS.get(dep)
        for dep in imports(path) - {name}
        if dep in LAYERS and LAYERS[dep] >= LAYERS[name] and dep != ""
    }
    assert not wrong, f"{name} (layer {LAYERS[name]}) imports from its own layer or above: {wrong}"


@pytest.mark.parametrize("name", APP_SIDE)
def test_the_app_side_never_reaches_the_collector_side(name: str) -> None:
    path = PACKAGE / (name.replace(".", "/") + ".py")
    assert not imports(path) & set(COLLECTOR_SIDE)
