"""The `zlogcollect` command: options to config to daemon; heavy imports stay inside commands."""

from __future__ import annotations

import signal
import sys
import traceback as tb
from collections.abc import Callable
from typing import Any, NoReturn

import click

from zlogcollect._version import __version__

EXIT_CONFIG = 78

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

RECEIVE_OPTIONS: list[Decorator] = [
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
        "--level",
        "levels",
        multiple=True,
        metavar="NAME=NUMBER",
        help="A custom level name senders use, e.g. TRACE=5 (repeatable).",
    ),
    click.option("--max-record-bytes", type=int, help="Larger records are quarantined. [default: 1048576]"),
    click.option(
        "--rcvhwm",
        type=int,
        help="Records the socket may queue per sender before ZeroMQ drops; 0 = no limit. [default: 20000]",
    ),
    click.option(
        "--drain-timeout",
        type=float,
        help="Seconds to keep receiving (and confirming) after SIGTERM. [default: 5.0]",
    ),
    click.option(
        "--log-level",
        type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False),
        help="The collector's own diagnostics on stderr. [default: INFO]",
    ),
    click.option(
        "--stats-interval",
        type=float,
        metavar="SECONDS",
        help="Print the counters line to stderr this often; 0 = only on SIGUSR1 and at exit. [default: 0]",
    ),
    click.option(
        "--stats-file",
        metavar="PATH",
        help="Write the counters as JSON here whenever the line is printed. [default: DIR/_stats.json]",
    ),
    click.option("--traceback", is_flag=True, help="Show the Python traceback on start-up errors."),
    click.version_option(__version__, "-V", "--version", prog_name="zlogcollect"),
]

FILE_OPTIONS: list[Decorator] = [
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
        help="Also write records whose topic matches PATTERN (* one word, # any) to FILE; "
        "{source} and {level} allowed (repeatable).",
    ),
    click.option(
        "--default-routes/--no-default-routes",
        default=None,
        help="Keep the built-in {source}.log and errors-file routes. [default: on]",
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
    click.option("--backup-count", type=int, help="Rotated files to keep per log; 0 keeps all. [default: 0]"),
    click.option(
        "--utc/--local-time", "utc", default=None, help="Rotate and stamp in UTC. [default: local time]"
    ),
    click.option("--at-time", metavar="HH:MM[:SS]", help="Time of day for midnight/W* rotation."),
    click.option("--compress/--no-compress", default=None, help="Gzip rotated files. [default: off]"),
    click.option(
        "--format",
        "format_",
        metavar="FMT",
        help="%-style line format; a name that is no known field is an extra= field of the record. "
        "[default: '%(asctime)s | %(levelname)s | %(source)s | %(origin)s | %(subtopic)s | %(message)s']",
    ),
    click.option(
        "--json/--text", "json_", default=None, help="Write one JSON object per line. [default: text]"
    ),
    click.option(
        "--multiline",
        type=click.Choice(["prefix", "plain"]),
        help="Continuation lines of a record (tracebacks) start with 'TIME | SOURCE + ', "
        "or are written plain. [default: prefix]",
    ),
    click.option(
        "--flush-interval",
        type=float,
        help="Seconds a line may wait in memory before it is written. [default: 1.0]",
    ),
    click.option(
        "--max-files",
        type=int,
        metavar="N",
        help="Most distinct files; further ones go to _overflow.log. [default: 10000]",
    ),
]

AMQP_OPTIONS: list[Decorator] = [
    click.option(
        "--amqp-url",
        metavar="URL",
        envvar="ZLOGCOLLECT_AMQP_URL",
        show_envvar=True,
        help="Forward every record to RabbitMQ, e.g. amqp://guest:guest@127.0.0.1/%2F.",
    ),
    click.option(
        "--amqp-url-file",
        metavar="FILE",
        help="Read the AMQP URL from the first line of FILE (keeps the password out of ps).",
    ),
    click.option("--exchange", metavar="NAME", help="Exchange to publish to. [default: amq.topic]"),
    click.option(
        "--exchange-type",
        type=click.Choice(["topic", "direct", "fanout", "headers"]),
        help="Type used when declaring the exchange. [default: topic]",
    ),
    click.option(
        "--declare-exchange/--no-declare-exchange",
        default=None,
        help="Declare the exchange (durable); otherwise it must already exist. [default: no]",
    ),
    click.option(
        "--routing-key",
        metavar="TEMPLATE",
        help="Routing key template from {source} {level} {subtopic} {topic} {name}; '{topic}' for the whole topic. [default: {source}.{level}]",
    ),
    click.option(
        "--only",
        multiple=True,
        metavar="PATTERN",
        help="Forward only topics matching PATTERN (repeatable). [default: all]",
    ),
    click.option(
        "--declare-queue",
        multiple=True,
        metavar="NAME=BINDING[,BINDING]",
        help="Declare a durable queue and bind it, e.g. app1-error=app1.ERROR.# (repeatable).",
    ),
    click.option(
        "--queue-type",
        type=click.Choice(["classic", "quorum", "stream"]),
        help="Type of declared queues. [default: classic]",
    ),
    click.option(
        "--dead-letter-exchange", metavar="NAME", help="x-dead-letter-exchange for declared queues."
    ),
    click.option("--message-ttl", type=int, metavar="MS", help="x-message-ttl for declared queues, in ms."),
    click.option("--max-length", type=int, metavar="N", help="x-max-length for declared queues."),
    click.option(
        "--buffer",
        type=int,
        metavar="N",
        help="Records held while the broker is unreachable. [default: 100000]",
    ),
    click.option(
        "--overflow",
        type=click.Choice(["drop-oldest", "drop-newest"]),
        help="What a full buffer drops (and counts). [default: drop-oldest]",
    ),
    click.option(
        "--refresh",
        type=float,
        metavar="SECONDS",
        help="Reconnect this often, for load balancers; 0 = never. [default: 0]",
    ),
    click.option("--heartbeat", type=int, metavar="SECONDS", help="AMQP heartbeat. [default: 30]"),
    click.option(
        "--mandatory/--no-mandatory",
        default=None,
        help="Publish as mandatory and count records no queue takes as unroutable. [default: on]",
    ),
]


def _options(*groups: list[Decorator]) -> Decorator:
    def apply(func: Callable[..., Any]) -> Callable[..., Any]:
        for group in reversed(groups):
            for option in reversed(group):
                func = option(func)
        return func

    return apply


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


class StartupSignals:
    """Plain signal handlers for the start-up, before gevent's exist: they only note the request.

    Without them a SIGTERM while the daemon imports gevent, binds or reaches the
    broker kills the process (exit 143, no counters) instead of stopping it.
    """

    def __init__(self) -> None:
        self.stop: str | None = None

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._note)
        # Their default action is to terminate: a logrotate HUP or a curious USR1 during
        # start-up must not. Nothing is open to reopen and every counter is 0 yet.
        for signum in (signal.SIGHUP, signal.SIGUSR1):
            signal.signal(signum, self._ignore)

    def _ignore(self, signum: int, _frame: object) -> None:
        pass

    def _note(self, signum: int, _frame: object) -> None:
        self.stop = signal.Signals(signum).name

    def requested(self) -> str | None:
        """The name of the first stop signal received, if any."""
        return self.stop


def _merge_url_sources(values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Flags win over the file, also across the two ways of giving the AMQP URL."""
    merged = {**values, **overrides}
    if "amqp_url" in overrides and "amqp_url_file" not in overrides:
        merged.pop("amqp_url_file", None)
        merged.pop("amqp-url-file", None)
    elif "amqp_url_file" in overrides and "amqp_url" not in overrides:
        merged.pop("amqp_url", None)
        merged.pop("amqp-url", None)
    return merged


def _run(
    mode: str, config_file: str | None, traceback: bool, levels: tuple[str, ...], flags: dict[str, Any]
) -> NoReturn:
    # First thing: from here on SIGTERM/SIGINT are a clean stop, never a kill.
    startup_signals = StartupSignals()
    startup_signals.install()

    from zlogcollect.config import ConfigError, from_mapping, load_file

    overrides = {key.rstrip("_"): value for key, value in flags.items() if value is not None and value != ()}
    level_table = _levels(levels)
    if level_table is not None:
        overrides["levels"] = level_table
    try:
        values = load_file(config_file) if config_file else {}
        config = from_mapping(_merge_url_sources(values, overrides))
        if mode == "bridge" and not config.amqp_url:
            raise ConfigError(
                "amqp_url: the bridge needs --amqp-url, --amqp-url-file or ZLOGCOLLECT_AMQP_URL"
                " (or amqp_url / amqp_url_file in the config file)"
            )
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG, traceback)

    # gevent, zmq and pika are imported only here, so `--help` and `config` stay instant.
    from zlogcollect import daemon

    diagnostics = daemon.setup_diagnostics(config.log_level)
    try:
        status = daemon.run(
            config,
            files=mode == "collect",
            diagnostics=diagnostics,
            stop_requested=startup_signals.requested,
        )
    except daemon.DaemonStartupError as exc:
        _fail(str(exc), exc.status, traceback)
    sys.exit(int(status))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, "-V", "--version", prog_name="zlogcollect")
def cli() -> None:
    """Brokerless central log collector for Python apps, built on ZeroMQ.

    Apps publish with a logging PUBHandler; `zlogcollect collect` receives
    and writes rotating files (and, with --amqp-url, forwards to RabbitMQ).
    Signals: TERM/INT drain and exit 0, HUP reopens files, USR1 prints counters.

    \b
    Shell completion (bash; zsh_source and fish_source likewise):
      eval "$(_ZLOGCOLLECT_COMPLETE=bash_source zlogcollect)"
    """


@cli.command()
@_options(RECEIVE_OPTIONS, FILE_OPTIONS, AMQP_OPTIONS)
def collect(config_file: str | None, traceback: bool, levels: tuple[str, ...], **flags: Any) -> None:
    """Receive log records and write them into rotating files under --dir."""
    _run("collect", config_file, traceback, levels, flags)


@cli.command()
@_options(RECEIVE_OPTIONS, AMQP_OPTIONS)
def bridge(config_file: str | None, traceback: bool, levels: tuple[str, ...], **flags: Any) -> None:
    """Receive log records like `collect` and forward them to RabbitMQ only, writing no files."""
    _run("bridge", config_file, traceback, levels, flags)


@cli.command("config")
def config_cmd() -> None:
    """Print a commented example configuration file (the defaults) to stdout."""
    from zlogcollect.config import EXAMPLE

    click.echo(EXAMPLE, nl=False)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="zlogcollect")
