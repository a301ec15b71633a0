"""The `zlogcollect` command: options to config to daemon; heavy imports stay inside commands."""

from __future__ import annotations

import signal
import sys
import traceback as tb
from collections.abc import Callable
from typing import Any, NoReturn

import click
from click.core import ParameterSource

from zlogcollect._version import __version__
from zlogcollect.config import DEFAULT_ENDPOINT, OPTIONS, PUBLISH_ENDPOINT
from zlogcollect.exits import ExitStatus
from zlogcollect.formatting import DEFAULT_FORMAT
from zlogcollect.options import AMQP, FILES, RECEIVE, Option
from zlogcollect.topology import (
    DEFAULT_EXCHANGE,
    DEFAULT_QUEUE_PREFIX,
    DEFAULT_SHARDS,
    DEFAULT_SOURCE_EXCHANGE,
)
from zlogcollect.wire import MAX_RECORD_BYTES

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

COMMON_OPTIONS: list[Decorator] = [
    click.option(
        "--config", "config_file", type=click.Path(dir_okay=False), help="TOML file; flags win over it."
    ),
    click.option("--traceback", is_flag=True, help="Show the Python traceback on start-up errors."),
    click.version_option(__version__, "-V", "--version", prog_name="zlogcollect"),
]


def _levels(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> dict[str, int] | None:
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


def _click_option(option: Option) -> Decorator:
    """The click option for one setting of the table in config.py."""
    extra: dict[str, Any] = {"help": option.help, "default": option.default, "show_default": True}
    if option.kind in (tuple, dict):
        extra.update(multiple=True, default=option.default or ())
        extra["help"] += " Repeatable."
        if option.kind is dict:
            extra["callback"] = _levels
    elif option.choices:
        extra["type"] = click.Choice(option.choices, case_sensitive=option.case_sensitive)
    elif option.kind is not bool:
        extra["type"] = option.kind
    if option.metavar:
        extra["metavar"] = option.metavar
    if option.envvar:
        extra.update(envvar=option.envvar, show_envvar=True)
    return click.option(option.name, *option.flags, **extra)


def _group(group: str) -> list[Decorator]:
    return [_click_option(option) for option in OPTIONS if option.group == group]


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


def _exit_on_term(_signum: int, _frame: object) -> None:
    """SIGTERM before a command has its own handler: a clean stop (exit 0), not a death by signal."""
    sys.exit(ExitStatus.SUCCESS)


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


def _given(flags: dict[str, Any]) -> dict[str, Any]:
    """The settings given on the command line (or by environment variable): they win over the file."""
    ctx = click.get_current_context()
    defaults = (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)
    return {name: value for name, value in flags.items() if ctx.get_parameter_source(name) not in defaults}


def _run(mode: str, config_file: str | None, traceback: bool, overrides: dict[str, Any]) -> NoReturn:
    # First thing: from here on SIGTERM/SIGINT are a clean stop, never a kill.
    startup_signals = StartupSignals()
    startup_signals.install()

    from zlogcollect.config import ConfigError, from_mapping, load_file

    try:
        values = load_file(config_file) if config_file else {}
        config = from_mapping(_merge_url_sources(values, overrides))
        if mode == "bridge" and not config.amqp_url:
            raise ConfigError(
                "amqp_url: the bridge needs --amqp-url, --amqp-url-file or ZLOGCOLLECT_AMQP_URL"
                " (or amqp_url / amqp_url_file in the config file)"
            )
    except ConfigError as exc:
        _fail(str(exc), ExitStatus.CONFIG, traceback)

    # gevent, zmq and pika are imported only here, so `--help` and `config` stay instant.
    from zlogcollect import daemon
    from zlogcollect.terminal import setup_diagnostics

    diagnostics = setup_diagnostics(config.log_level)
    try:
        if config.from_amqp:
            status = daemon.run_writer(config, diagnostics, startup_signals.requested)
        else:
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
@_options(COMMON_OPTIONS, _group(RECEIVE), _group(FILES), _group(AMQP))
def collect(config_file: str | None, traceback: bool, **flags: Any) -> None:
    """Receive log records and write them into rotating files under --dir."""
    _run("collect", config_file, traceback, _given(flags))


@cli.command()
@_options(COMMON_OPTIONS, _group(RECEIVE), _group(AMQP))
def bridge(config_file: str | None, traceback: bool, **flags: Any) -> None:
    """Receive log records like `collect` and forward them to RabbitMQ only, writing no files."""
    _run("bridge", config_file, traceback, _given(flags))


@cli.command("config")
def config_cmd() -> None:
    """Print a commented example configuration file (the defaults) to stdout."""
    from zlogcollect.config import EXAMPLE

    click.echo(EXAMPLE, nl=False)


# The options ship and send share (declared once).
_CONNECT = click.option(
    "--connect",
    "endpoint",
    default=DEFAULT_ENDPOINT,
    show_default=True,
    metavar="ENDPOINT",
    help="Collector endpoint to connect to (the collector's --bind).",
)
_APP = click.option(
    "--app", required=True, metavar="NAME", help="Root topic: the collector writes the records to NAME.log."
)
_TRACEBACK = click.option("--traceback", is_flag=True, help="Show the Python traceback on errors.")
_MAX_RECORD_BYTES = click.option(
    "--max-record-bytes",
    type=int,
    default=MAX_RECORD_BYTES,
    show_default=True,
    metavar="N",
    help="The collector's --max-record-bytes: a longer line is cut to fit, with a note.",
)
_SUBTOPIC = click.option(
    "--subtopic",
    default="",
    metavar="S",
    help="Subtopic of every record (never taken from the text: '::' in a line stays in it).",
)

_CURVE_SERVER_KEY = click.option(
    "--curve-server-key",
    metavar="KEY",
    help="CURVE: the collector's public key, its .key file or the 40-character Z85 text"
    " (with --curve-client-cert).",
)
_CURVE_CLIENT_CERT = click.option(
    "--curve-client-cert",
    type=click.Path(),  # checked by keys.client_certificate: a bad file is exit 78, not click's 2
    metavar="FILE",
    help="CURVE: this client's .key_secret file (zlogcollect keygen); its public key must be"
    " in the collector's allow-list (--allow-keys; for tail, --publish-allow-keys).",
)


def _ship_or_send(run: Callable[[], int], traceback: bool) -> NoReturn:
    from zlogcollect.ship import ShipError

    try:
        status = run()
    except ShipError as exc:
        _fail(str(exc), exc.status, traceback)
    sys.exit(int(status))


@cli.command()
@click.argument("files", nargs=-1, metavar="[FILE]...")
@_CONNECT
@_APP
@click.option(
    "--level",
    default="INFO",
    show_default=True,
    metavar="LEVEL",
    help="Level of every line; with --level-from, of each line in which it finds no known level.",
)
@_SUBTOPIC
@click.option(
    "--level-from",
    metavar="REGEX",
    help="Take each line's level from the named group 'level' of REGEX, e.g."
    " '\\[(?P<level>\\w+)\\]' for nginx's error log; a line it does not match, or whose"
    " group names no known level, gets --level.",
)
@click.option(
    "-F",
    "--follow",
    is_flag=True,
    help="Like tail -F: keep reading as the files grow, across rename-and-recreate rotation and truncation.",
)
@click.option("--from-end", is_flag=True, help="With --follow: ship only lines written from now on.")
@click.option(
    "--timeout",
    type=float,
    default=0.0,
    show_default=True,
    metavar="S",
    help="Give up (exit 75) when no collector takes a record for S seconds; 0 waits as long as it takes.",
)
@_MAX_RECORD_BYTES
@_CURVE_SERVER_KEY
@_CURVE_CLIENT_CERT
@_TRACEBACK
def ship(files: tuple[str, ...], traceback: bool, **flags: Any) -> None:
    """Send each line of FILEs (stdin for - or no FILE) to a collector as one record.

    For what is not a Python app: nginx logs, cron output, shell scripts. The
    whole line is the message. Nothing is dropped: ship waits for a collector
    to subscribe and, when the collector falls behind, reads no further; a
    finite input is delivered whole before ship exits 0. Records carry
    sequence numbers, so the collector counts any loss in transit.

    \b
    Levels: DEBUG, INFO, NOTICE (=INFO), WARNING/WARN, ERROR/ERR,
    CRITICAL/CRIT/FATAL/ALERT/EMERG/PANIC, any case.
    Invalid UTF-8 and NUL bytes are sent escaped as \\xNN, never skipped.
    A line longer than the collector's record limit is cut, with a note.
    A named pipe is read across writers that come and go, until stopped.
    On a terminal, a finite file shows a progress bar on stderr.
    TERM/INT stop it: lines already read are sent first.
    With --curve-server-key and --curve-client-cert the connection is CURVE
    (authenticated, encrypted); a wrong server key or a client key the
    collector does not allow looks like no collector at all: ship waits.
    Exit: 0 all sent, 66 an input is missing or unreadable, 75 no collector
    took the records in time (--timeout) or stopped before they left,
    78 a bad option or key file.
    """
    from zlogcollect.ship import ShipOptions, run_ship

    _ship_or_send(lambda: run_ship(files, ShipOptions(**flags)), traceback)


@cli.command()
@click.argument("level")
@click.argument("message")
@_CONNECT
@_APP
@_SUBTOPIC
@click.option(
    "--timeout",
    type=float,
    default=5.0,
    show_default=True,
    metavar="S",
    help="Most seconds to wait for a collector to subscribe and take the record.",
)
@_MAX_RECORD_BYTES
@_CURVE_SERVER_KEY
@_CURVE_CLIENT_CERT
@_TRACEBACK
def send(level: str, message: str, traceback: bool, **flags: Any) -> None:
    """Send one record, like logger(1): MESSAGE at LEVEL (INFO, WARNING, ERROR, ...).

    MESSAGE is sent as it is ('::' in it stays in the text); the subtopic
    comes only from --subtopic.

    Exits 0 only once a subscribed collector took the record within --timeout,
    else 75 (EX_TEMPFAIL) with one line on stderr (also for a wrong CURVE
    server key or a client key the collector does not allow); 78 for a bad
    option or key file.
    """
    from zlogcollect.ship import ShipOptions, run_send

    _ship_or_send(lambda: run_send(message, ShipOptions(level=level, **flags)), traceback)


@cli.command()
@click.argument("patterns", nargs=-1, metavar="[PATTERN]...")
@click.option(
    "--connect",
    "endpoint",
    default=PUBLISH_ENDPOINT,
    show_default=True,
    metavar="ENDPOINT",
    help="A collector's --publish endpoint.",
)
@click.option(
    "--format",
    "fmt",
    default=DEFAULT_FORMAT,
    show_default=True,
    metavar="FMT",
    help="%-style line format, as the collector's --format (the files' default; records with a"
    " CURVE peer get the peer column after the source, as the files do).",
)
@click.option("--json", is_flag=True, help="One JSON object per record, as the collector's --json.")
@click.option("--utc", is_flag=True, help="Times in UTC rather than local time.")
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Exit 0 after N records (that match the patterns).",
)
@click.option(
    "--color/--no-color",
    default=None,
    help="Colour lines by level; by default only when stdout is a terminal (and NO_COLOR is unset).",
)
@click.option(
    "--level",
    "levels",
    multiple=True,
    callback=_levels,
    metavar="NAME=NUMBER",
    help="A custom level the senders use in topics, as the collector's --level (e.g. TRACE=5). Repeatable.",
)
@_CURVE_SERVER_KEY
@_CURVE_CLIENT_CERT
@_TRACEBACK
def tail(
    patterns: tuple[str, ...],
    endpoint: str,
    fmt: str,
    json: bool,
    utc: bool,
    count: int | None,
    color: bool | None,
    levels: dict[str, int] | None,
    curve_server_key: str | None,
    curve_client_cert: str | None,
    traceback: bool,
) -> None:
    """Print the records a collector republishes (--publish) as they arrive, formatted like its files.

    PATTERNs select by topic with AMQP wildcards, as --route does: '*' is one
    word, '#' zero or more (app3.#, *.ERROR.#); a record matching any of them
    is shown; no PATTERN shows every record.

    \b
    A live view, not history: only records published while tail is connected
    arrive (the files have the rest). A collector not yet running is waited for.
    When tail (or another subscriber) cannot keep up, the collector drops records
    for its subscribers and counts them (published.dropped); the files get every one.
    With --curve-server-key (the publishing collector's) and --curve-client-cert
    tail connects as a CURVE client; a wrong key shows nothing, as no collector.
    Exit: 0 after --count records, on Ctrl-C or TERM, or when stdout is closed
    (tail | head); 78 a bad endpoint, pattern, --format, --level or key file.
    """
    import os

    # First: a TERM while tail starts (imports, key files) ends it with 0, as it does later.
    signal.signal(signal.SIGTERM, _exit_on_term)

    from zlogcollect.display import View, ViewError
    from zlogcollect.keys import KeyFileError, client_curve
    from zlogcollect.tail import TailError, run_tail

    if color is None:
        color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    try:
        view = View(patterns, fmt, json, utc, color, levels or {})
        curve = client_curve(
            curve_server_key, curve_client_cert, ("--curve-server-key", "--curve-client-cert")
        )
        status = run_tail(endpoint, view, count or 0, curve)
    except (ViewError, KeyFileError) as exc:
        _fail(str(exc), ExitStatus.CONFIG, traceback)
    except TailError as exc:
        _fail(str(exc), exc.status, traceback)
    sys.exit(int(status))


@cli.command()
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    default=".",
    show_default=True,
    metavar="DIR",
    help="Where to write the two files (created, mode 0700, if missing).",
)
@click.option("--force", is_flag=True, help="Replace NAME.key and NAME.key_secret if they exist.")
@_TRACEBACK
def keygen(name: str, directory: str, force: bool, traceback: bool) -> None:
    """Write a CURVE certificate pair: DIR/NAME.key (public) and DIR/NAME.key_secret (mode 0600).

    The files are pyzmq's certificate format (zmq.auth). The public key goes
    to the collector's allow-list directory, the secret file stays with the
    app or collector it names. Prints the public key on stdout and where the
    files went on stderr. Exit: 0 written, 73 a file exists (without --force)
    or cannot be written, 78 a bad NAME.
    """
    from zlogcollect.keys import KeygenError
    from zlogcollect.keys import keygen as write_keys

    try:
        keys = write_keys(name, directory, force)
    except KeygenError as exc:
        _fail(str(exc), exc.status, traceback)
    click.echo(keys.public_key)
    click.echo(f"public key: {keys.public_file}  secret key: {keys.secret_file} (mode 0600)", err=True)


@cli.group()
def topology() -> None:
    """Set up RabbitMQ for more than one collector (see docs/SCALING.md)."""


@topology.command("declare")
@click.argument("url", required=False, metavar="[URL]")
@click.option(
    "--url-file",
    type=click.Path(),  # read by config.read_url_file: a bad file is exit 78, not click's 2
    metavar="FILE",
    help="Read the URL (with its password) from the first line of FILE instead: it stays out of ps.",
)
@click.option(
    "--shards",
    type=int,
    default=DEFAULT_SHARDS,
    show_default=True,
    metavar="N",
    help="Number of queues (one active writer each); a source's records all go to one of them.",
)
@click.option(
    "--exchange",
    default=DEFAULT_EXCHANGE,
    show_default=True,
    metavar="NAME",
    help="The consistent-hash exchange to declare.",
)
@click.option(
    "--queue-prefix",
    default=DEFAULT_QUEUE_PREFIX,
    show_default=True,
    metavar="P",
    help="Queue names: P.0 .. P.N-1.",
)
@click.option(
    "--source-exchange",
    default=DEFAULT_SOURCE_EXCHANGE,
    show_default=True,
    metavar="NAME",
    help="The exchange the bridges publish to (their --exchange).",
)
@click.option(
    "--source-exchange-type",
    type=click.Choice(["topic", "fanout"]),
    default="topic",
    show_default=True,
    help="Its type (the bridges' --exchange-type).",
)
@click.option(
    "--declare-source-exchange",
    is_flag=True,
    help="Declare the source exchange too (durable); otherwise it must exist (amq.* always do).",
)
@click.option("--dry-run", is_flag=True, help="Print what would be declared; connect to nothing.")
@_TRACEBACK
def topology_declare(
    url: str | None,
    url_file: str | None,
    dry_run: bool,
    traceback: bool,
    **flags: Any,
) -> None:
    """Declare the sharded topology on a running broker: idempotent, so run it again at will.

    \b
    bridges -> SOURCE-EXCHANGE --#--> EXCHANGE (x-consistent-hash on the
      "source" header) --equal weights--> P.0 .. P.N-1 (quorum queues,
      single active consumer)

    Every record of one source goes to one queue, in order; each queue is read
    by one writer at a time, and a standby writer takes over when it dies.
    Needs the plugin rabbitmq_consistent_hash_exchange (ships with RabbitMQ:
    rabbitmq-plugins enable rabbitmq_consistent_hash_exchange). Lowering
    --shards later leaves the extra queues bound: delete them by hand once
    drained. Exit: 0 declared, 69 broker unreachable, 78 bad options,
    credentials, missing plugin or a clash with an existing queue or exchange.
    """
    from zlogcollect.config import ConfigError, read_url_file, redact, validate_amqp_url
    from zlogcollect.topology import TopologyError, TopologyOptions, plan, queue_names

    try:
        if url and url_file:
            raise ConfigError("give either URL or --url-file, not both")
        if url_file:
            url = read_url_file(url_file)
        if not url:
            raise ConfigError("give the broker's URL (amqp://USER:PASSWORD@HOST[:PORT]/VHOST) or --url-file")
        validate_amqp_url(url)
        options = TopologyOptions(**flags)
        steps = plan(options)
    except (ConfigError, TopologyError) as exc:
        _fail(str(exc), ExitStatus.CONFIG, traceback)
    if dry_run:
        click.echo(f"would declare on {redact(url)}:")
        for step in steps:
            click.echo(f"  {step.describe()}")
        return
    from zlogcollect.topology_declare import DeclareError, declare

    stale = queue_names(options.shards + 1, options.queue_prefix)[-1]
    try:
        extra = declare(url, steps, lambda line: click.echo(f"declared {line}"), stale)
    except DeclareError as exc:
        _fail(str(exc), exc.status, traceback)
    click.echo(
        f"topology ready on {redact(url)}: {options.shards} shard{'s' if options.shards != 1 else ''}",
        err=True,
    )
    if extra:
        click.echo(
            f"zlogcollect: warning: queue {stale!r} exists (an earlier declare had more shards) and is"
            f" still bound to {options.exchange!r}: unbind or delete the extra queues once drained",
            err=True,
        )


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="zlogcollect")
