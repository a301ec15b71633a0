"""The `zlogcollect` command: options to config to daemon; heavy imports stay inside commands."""

from __future__ import annotations

import sys
import traceback as tb
from collections.abc import Callable
from typing import Any, NoReturn

import click

from zlogcollect import __version__

EXIT_CONFIG = 78


def _fail(message: str, status: int, show_traceback: bool) -> NoReturn:
    if show_traceback:
        tb.print_exc()
    click.echo(f"zlogcollect: error: {message}", err=True)
    sys.exit(status)


def _levels(values: tuple[str, ...]) -> dict[str, int] | None:
    if not values:
        return None
    levels: dict[str, int] = {}
    for spec in values:
        name, sep, number = spec.partition("=")
        if not sep or not number.strip().lstrip("-").isdigit():
            raise click.BadParameter(
                f"{spec!r} must look like NAME=NUMBER, e.g. TRACE=5", param_hint="--level"
            )
        levels[name.strip()] = int(number)
    return levels


def _collector_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The receive and file options of `collect`; every one mirrors a TOML key."""
    options = [
        click.option(
            "--config", "config_file", type=click.Path(dir_okay=False), help="TOML file; flags win over it."
        ),
        click.option(
            "--bind",
            multiple=True,
            metavar="ENDPOINT",
            help="Endpoint to bind (repeatable). [default: tcp://127.0.0.1:5558]",
        ),
        click.option(
            "--subscribe",
            multiple=True,
            metavar="PREFIX",
            help="Accept only topics with this prefix (repeatable). [default: all]",
        ),
        click.option(
            "--dir",
            "dir_",
            metavar="DIR",
            help="Directory for the log files, created if missing. [default: logs]",
        ),
        click.option(
            "--route",
            multiple=True,
            metavar="PATTERN=FILE",
            help="Also write records whose topic matches PATTERN (* one word, # any) to FILE; {source} and {level} allowed (repeatable).",
        ),
        click.option(
            "--default-routes/--no-default-routes",
            default=None,
            help="Keep the built-in {source}.log and errors file routes. [default: on]",
        ),
        click.option(
            "--errors-file",
            metavar="FILE",
            help="Where ERROR and worse from every source also go; '' for none. [default: errors.log]",
        ),
        click.option(
            "--default-source",
            metavar="NAME",
            help="Source name for records without a root topic. [default: default]",
        ),
        click.option(
            "--when",
            metavar="WHEN",
            help="Rotation: S, M, H, D, midnight or W0-W6, as TimedRotatingFileHandler. [default: midnight]",
        ),
        click.option("--interval", type=int, help="Rotate every INTERVAL units of --when. [default: 1]"),
        click.option(
            "--backup-count", type=int, help="Rotated files to keep per log; 0 keeps all. [default: 0]"
        ),
        click.option(
            "--utc/--local-time", "utc", default=None, help="Rotate and stamp in UTC. [default: local time]"
        ),
        click.option("--at-time", metavar="HH:MM[:SS]", help="Time of day for midnight/W* rotation."),
        click.option("--compress/--no-compress", default=None, help="Gzip rotated files. [default: off]"),
        click.option(
            "--format",
            "format_",
            metavar="FMT",
            help="%-style line format. [default: '%(asctime)s | %(levelname)s | %(source)s | %(subtopic)s | %(message)s']",
        ),
        click.option(
            "--json/--text", "json_", default=None, help="Write one JSON object per line. [default: text]"
        ),
        click.option(
            "--flush-interval",
            type=float,
            help="Seconds a line may wait in memory before it is written. [default: 1.0]",
        ),
        click.option(
            "--max-record-bytes", type=int, help="Larger records are quarantined. [default: 1048576]"
        ),
        click.option(
            "--level",
            "levels",
            multiple=True,
            metavar="NAME=NUMBER",
            help="A custom level name senders use, e.g. TRACE=5 (repeatable).",
        ),
        click.option(
            "--rcvhwm",
            type=int,
            help="Records the socket may queue before ZeroMQ drops; 0 = no limit. [default: 200000]",
        ),
        click.option(
            "--drain-timeout", type=float, help="Seconds to keep receiving after SIGTERM. [default: 5.0]"
        ),
        click.option(
            "--log-level",
            type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False),
            help="The collector's own diagnostics on stderr. [default: INFO]",
        ),
        click.option("--traceback", is_flag=True, help="Show the Python traceback on start-up errors."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="zlogcollect")
def cli() -> None:
    """Brokerless central log collector for Python apps, built on ZeroMQ.

    Apps publish with a logging PUBHandler; `zlogcollect collect` receives
    and writes rotating files. Signals: TERM/INT drain and exit 0, HUP
    reopens files, USR1 prints counters.
    """


@cli.command()
@_collector_options
def collect(config_file: str | None, traceback: bool, levels: tuple[str, ...], **flags: Any) -> None:
    """Receive log records and write them into rotating files under --dir."""
    from zlogcollect.config import ConfigError, from_mapping, load_file

    overrides = {key.rstrip("_"): value for key, value in flags.items() if value is not None and value != ()}
    level_table = _levels(levels)
    if level_table is not None:
        overrides["levels"] = level_table
    try:
        values = load_file(config_file) if config_file else {}
        config = from_mapping({**values, **overrides})
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG, traceback)

    # gevent and zmq are imported only here, so `--help` and `config` stay instant.
    from zlogcollect import daemon

    daemon.setup_diagnostics(config.log_level)
    try:
        status = daemon.run(config)
    except daemon.DaemonStartupError as exc:
        _fail(str(exc), exc.status, traceback)
    sys.exit(int(status))


@cli.command("config")
def config_cmd() -> None:
    """Print a commented example configuration file (the defaults) to stdout."""
    from zlogcollect.config import EXAMPLE

    click.echo(EXAMPLE, nl=False)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="zlogcollect")
