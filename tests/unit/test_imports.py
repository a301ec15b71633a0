"""Import cost: the pure modules and the CLI load neither zmq nor gevent (checked in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import zlogcollect
from zlogcollect._version import __version__

HEAVY = ("zmq", "gevent", "pika")

LIGHT_MODULES = [
    "zlogcollect",
    "zlogcollect._version",
    "zlogcollect.cli",
    "zlogcollect.wire",
    "zlogcollect.helpers",
    "zlogcollect.encode",
    "zlogcollect.lines",
    "zlogcollect.readers",
    "zlogcollect.hold",
    "zlogcollect.replay",
    "zlogcollect.routing",
    "zlogcollect.formatting",
    "zlogcollect.seen",
    "zlogcollect.config",
    "zlogcollect.exits",
    "zlogcollect.options",
    "zlogcollect.terminal",
    "zlogcollect.stats",
    "zlogcollect.health",
    "zlogcollect.access",
    "zlogcollect.live",
    "zlogcollect.metrics",
    "zlogcollect.sdnotify",
    "zlogcollect.sinks",
    "zlogcollect.sinks.files",
    "zlogcollect.sinks.amqp_message",
    "zlogcollect.sinks.outbox",
    "zlogcollect.sinks.rotating",
    "zlogcollect.testing",
    "zlogcollect.testing.process",
    "zlogcollect.testing.rabbitmq",
]


def fresh(code: str) -> str:
    """Run *code* in a new interpreter; return its stdout, failing on a non-zero exit."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_light_modules_import_no_zmq_or_gevent(module: str) -> None:
    """Importing a pure module (or the CLI) leaves zmq, gevent and pika unloaded."""
    out = fresh(f"""
        import sys
        import {module}
        print(sorted(name for name in {HEAVY!r} if name in sys.modules))
    """)
    assert out.strip() == "[]"


def test_cli_help_and_version_import_no_zmq_or_gevent() -> None:
    """`zlogcollect --help` and `--version` work, and loading them pulls in nothing heavy."""
    out = fresh(f"""
        import sys
        from zlogcollect.cli import cli
        for args in (["--help"], ["collect", "--help"], ["bridge", "--help"], ["ship", "--help"], ["send", "--help"], ["tail", "--help"], ["--version"]):
            try:
                cli.main(args, prog_name="zlogcollect")
            except SystemExit as exc:
                assert exc.code == 0, (args, exc.code)
        print("HEAVY", sorted(name for name in {HEAVY!r} if name in sys.modules))
    """)
    assert "Usage: zlogcollect [OPTIONS] COMMAND" in out
    assert "Usage: zlogcollect collect [OPTIONS]" in out
    assert "Usage: zlogcollect ship [OPTIONS] [FILE]..." in out
    assert "Usage: zlogcollect send [OPTIONS] LEVEL MESSAGE" in out
    assert f"version {__version__}" in out
    assert out.splitlines()[-1] == "HEAVY []"


def test_package_import_leaves_the_testing_helpers_out() -> None:
    """`import zlogcollect` (and the CLI) never loads `zlogcollect.testing`, which ships for tests only."""
    out = fresh("""
        import sys
        import zlogcollect, zlogcollect.cli
        print(sorted(name for name in sys.modules if name.startswith("zlogcollect.testing")))
    """)
    assert out.strip() == "[]"


def test_handler_and_setup_load_on_first_use() -> None:
    """`zlogcollect.ZLogHandler` and `setup` are the handler module's, imported when first asked for."""
    out = fresh("""
        import sys
        import zlogcollect
        assert "zmq" not in sys.modules
        handler_class = zlogcollect.ZLogHandler
        assert "zmq" in sys.modules
        from zlogcollect import ZLogHandler, setup
        from zlogcollect.handler import ZLogHandler as real_class, setup as real_setup
        assert ZLogHandler is handler_class is real_class
        assert setup is zlogcollect.setup is real_setup
        print("ok")
    """)
    assert out.strip() == "ok"


def test_package_attributes() -> None:
    """__all__ lists the lazy names, dir() shows them, unknown names still raise AttributeError."""
    assert set(zlogcollect.__all__) == {"ZLogHandler", "__version__", "setup"}
    assert {"ZLogHandler", "setup", "__version__"} <= set(dir(zlogcollect))
    assert zlogcollect.__version__ == __version__
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = zlogcollect.no_such_name  # type: ignore[attr-defined]
    from zlogcollect import ZLogHandler, setup
    from zlogcollect.handler import ZLogHandler as real_class
    from zlogcollect.handler import setup as real_setup

    assert ZLogHandler is real_class
    assert setup is real_setup
