"""Process concerns: start-up order, the ready line, signals, drain with a deadline, exit status."""

from __future__ import annotations

import fcntl
import logging
import os
import resource
import signal
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import gevent

from zlogcollect import formatting, privileges
from zlogcollect.access import (
    AccessError,
    Gate,
    Policy,
    load_allow_list,
    load_secret_certificate,
    parse_networks,
)
from zlogcollect.collector import Collector, StartupError
from zlogcollect.config import CollectorConfig, parse_queue, redact
from zlogcollect.exits import ExitStatus
from zlogcollect.health import AmqpView, Health
from zlogcollect.helpers import JSON_ENCODER, atomic_write
from zlogcollect.republish import RepublishBindError, Republisher
from zlogcollect.routing import LOCK_FILE, PUBLISHERS_FILE, STATS_FILE, Router
from zlogcollect.sdnotify import READY, STOPPING, Notifier, reloading
from zlogcollect.sinks import Sink
from zlogcollect.sinks.files import FileSink, Rotation
from zlogcollect.stats import Stats
from zlogcollect.terminal import DiagnosticsHandler, Progress, announce
from zlogcollect.wire import escape_text

if TYPE_CHECKING:
    from zlogcollect.httpd import HttpServer
    from zlogcollect.sinks.amqp import AmqpSink as AmqpSinkType
    from zlogcollect.writer import AmqpWriter as AmqpWriterType

log = logging.getLogger("zlogcollect")

LOW_FD_LIMIT = 4096
"""Below this many descriptors a few thousand publishers (each one a connection) cannot all connect."""


class DaemonStartupError(Exception):
    """A start-up failure with the exit status it deserves."""

    def __init__(self, message: str, status: ExitStatus) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class SignalState:
    """What the signal handlers asked for; the receive loop acts on it between batches.

    The ``request_*`` methods are those handlers: they only set state.
    """

    stop: str | None = None
    reopen: bool = False
    report: bool = False

    def request_stop(self, name: str) -> None:
        self.stop = name

    def request_reopen(self) -> None:
        self.reopen = True

    def request_report(self) -> None:
        self.report = True

    def stopping_check(self, stop_requested: Callable[[], str | None]) -> Callable[[], bool]:
        """Whether a stop was asked, here or (*stop_requested*) before these handlers existed."""

        def stopping() -> bool:
            if self.stop is None:
                self.stop = stop_requested()
            return self.stop is not None

        return stopping

    def install(self) -> list[Any]:
        """The gevent signal handlers that set this state (cancel each when done): SIGTERM and
        SIGINT stop, SIGHUP reopens, SIGUSR1 reports."""
        return [
            gevent.signal_handler(signal.SIGTERM, self.request_stop, "SIGTERM"),
            gevent.signal_handler(signal.SIGINT, self.request_stop, "SIGINT"),
            gevent.signal_handler(signal.SIGHUP, self.request_reopen),
            gevent.signal_handler(signal.SIGUSR1, self.request_report),
        ]


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit and return it.

    Every connected publisher holds a descriptor; systemd's default soft limit
    (1,024) runs out with a few hundred of them.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        # Linux refuses a soft limit above fs.nr_open, so "unlimited" means that.
        try:
            with open("/proc/sys/fs/nr_open", encoding="ascii") as handle:
                target = int(handle.read())
        except (OSError, ValueError):
            target = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError) as exc:
            log.warning("cannot raise the file descriptor limit from %d to %d: %s", soft, target, exc)
    log.debug("file descriptor limit: %d (hard limit %s)", soft, "unlimited" if hard < 0 else hard)
    if 0 <= soft < LOW_FD_LIMIT:
        log.warning(
            "only %d file descriptors: each connected publisher and each open file needs one;"
            " raise the hard limit (LimitNOFILE=65536 under systemd, ulimit -Hn otherwise)",
            soft,
        )
    return int(soft)


def check_ipc_directories(endpoints: tuple[str, ...]) -> None:
    """Refuse an ipc endpoint whose directory is missing, naming the directory to create."""
    for endpoint in endpoints:
        if not endpoint.startswith("ipc://"):
            continue
        path = endpoint[len("ipc://") :]
        if path in ("", "*") or path.startswith("@"):  # generated or abstract: no directory
            continue
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise DaemonStartupError(
                f"cannot bind {endpoint}: directory {directory} does not exist; create it"
                f" (mkdir -p {directory}, or RuntimeDirectory= in the systemd unit)",
                ExitStatus.UNAVAILABLE,
            )


def check_directory(path: str, mode: int = 0o750, user: privileges.ServiceUser | None = None) -> str:
    """Create the log directory if needed (the last part with *mode*, whatever the umask) and
    prove it is writable (by *user*, the account dropped to, if any)."""
    full = os.path.abspath(path)
    try:
        if not os.path.isdir(full):
            os.makedirs(full, mode, exist_ok=True)
            os.chmod(full, mode)
        with tempfile.TemporaryFile(dir=full):
            pass
    except OSError as exc:
        by = f" by user {user.name}" if user is not None else ""
        raise DaemonStartupError(
            f"dir {path!r} is not writable{by}: {exc.strerror or exc}", ExitStatus.CANTCREAT
        ) from None
    return full


_HELD: list[int] = []
"""Descriptors of the --dir locks this process holds: kept open until it exits (the kernel lets go then,
SIGKILL included)."""


def lock_directory(directory: str, mode: int = 0o640) -> None:
    """Hold *directory* for this process: a second zlogcollect on the same --dir is refused.

    Two processes on one --dir would mix their state files (``_publishers.json`` and its
    journal, the writer's ``_seen.journal``) and write each other's records again. The
    lock is an ``flock`` on ``_zlogcollect.lock``, which holds the holder's pid.
    """
    path = os.path.join(directory, LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    except OSError as exc:
        raise DaemonStartupError(
            f"dir {directory!r}: cannot open {LOCK_FILE}: {exc.strerror or exc}", ExitStatus.CANTCREAT
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise DaemonStartupError(
            f"dir {directory!r} is in use by another zlogcollect (pid {escape_text(holder)}): one process "
            "per --dir, or their state files would mix; give this one a --dir of its own",
            ExitStatus.TEMPFAIL,
        ) from None
    os.fchmod(fd, mode)  # whatever the umask: a state file's mode (at most 0640)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD.append(fd)


def claim_directory(config: CollectorConfig, user: privileges.ServiceUser | None) -> str:
    """--dir checked as the user who writes it (:func:`check_directory`), then held (:func:`lock_directory`)."""
    directory = check_directory(config.dir, config.dir_mode_value, user)
    lock_directory(directory, privileges.state_mode(config.file_mode_value))
    return directory


def check_root_policy(
    config: CollectorConfig, euid: int | None = None
) -> tuple[privileges.ServiceUser | None, str | None]:
    """Apply the root policy before anything is bound: the ``--user`` to drop to, and a warning.

    As root, endpoints other hosts can reach need ``--user`` or ``--allow-root``
    (else exit 77); loopback and ipc only are allowed with a warning, which the
    caller logs once the collector is ready, so a start-up error stays one line.
    """
    euid = os.geteuid() if euid is None else euid
    address = config.http_address
    reachable = []
    if euid == 0:  # only root needs to know (a host name costs a lookup)
        reachable = privileges.exposed(
            (*config.bind, *config.publish),
            address[0] if address else None,
            privileges.host_is_loopback,
            config.http,
        )
    try:
        warning = privileges.root_policy(euid, reachable, config.user, config.allow_root)
        user = privileges.lookup_user(config.user) if config.user else None
    except privileges.PolicyError as exc:
        raise DaemonStartupError(str(exc), exc.status) from None
    return user, warning


def open_log_dir(
    collector: Collector,
    config: CollectorConfig,
    file_sink: FileSink | None,
    user: privileges.ServiceUser | None,
) -> None:
    """After binding (and dropping to *user*): check --dir as the user who writes it, load the saved state."""
    if file_sink is not None:
        claim_directory(config, user)
    if collector.state is not None:
        collector.state.mode = privileges.state_mode(config.file_mode_value)
    collector.load_state()


def log_root_warning(warning: str | None) -> None:
    """Say once, when ready, that it runs as root (only on loopback and ipc, or it would have refused)."""
    if warning is not None:
        log.warning("%s", warning)


def become(user: privileges.ServiceUser) -> None:
    """Drop to *user* for good: called once every socket is bound, before any file under --dir is opened."""
    try:
        privileges.drop_to(user)
    except OSError as exc:
        raise DaemonStartupError(
            f"user = {user.name!r}: cannot drop to uid {user.uid}: {exc.strerror or exc}", ExitStatus.NOPERM
        ) from None
    log.debug("dropped to user %s (uid %d, gid %d)", user.name, user.uid, user.gid)


def build_file_sink(config: CollectorConfig, stats: Stats) -> FileSink:
    """The rotating-file sink from a validated config (--dir is checked by :func:`start`)."""
    directory = os.path.abspath(config.dir)
    fmt = config.format
    if fmt == formatting.DEFAULT_FORMAT:
        fmt = formatting.default_format(curve=bool(config.curve_secret))  # CURVE on: the line names the peer
    render = (
        formatting.json_formatter(config.utc)
        if config.json
        else formatting.text_formatter(fmt, config.utc, config.multiline)
    )
    rotation = Rotation(
        when=config.when,
        interval=config.interval,
        backup_count=config.backup_count,
        utc=config.utc,
        at_time=config.at_time_value,
        compress=config.compress,
        file_mode=config.file_mode_value,
        dir_mode=config.dir_mode_value,
    )
    return FileSink(
        directory,
        Router(config.routes, config.default_source),
        render,
        rotation,
        stats,
        max_files=config.max_files,
    )


@dataclass
class Access:
    """The security of the receive socket and of ``--publish`` (CURVE, ``--allow-ip``); SIGHUP reloads."""

    receive: Policy | None
    publish: Policy | None
    allow_keys: str
    publish_allow_keys: str

    def reload(self) -> None:
        """Re-read the allow-list directories: new keys admitted, removed ones refused (new connections).

        A directory that cannot be read (or has no key left) keeps the previous list, with one line.
        """
        for policy, directory, what in (
            (self.receive, self.allow_keys, "allow_keys"),
            (self.publish, self.publish_allow_keys, "publish_allow_keys"),
        ):
            if policy is None or policy.gate.allow is None:
                continue
            before = policy.gate.allow
            try:
                after = load_allow_list(directory, what)
            except AccessError as exc:
                log.error("SIGHUP: %s; keeping the %d keys allowed before", exc, len(before))
                continue
            policy.gate.reload(after)
            added = sorted(set(after.names.values()) - set(before.names.values()))
            removed = sorted(set(before.names.values()) - set(after.names.values()))
            log.info(
                "SIGHUP: %s re-read: %d keys allowed (added: %s; removed: %s)",
                what,
                len(after),
                ", ".join(added) or "none",
                ", ".join(removed) or "none",
            )


def build_access(config: CollectorConfig) -> Access | None:
    """Read the CURVE certificate and allow-lists, parse --allow-ip; None when all are off."""
    if not (config.curve_secret or config.allow_ip):
        return None
    try:
        networks = parse_networks(config.allow_ip)
        secret = None
        receive_keys = publish_keys = None
        if config.curve_secret:
            import zmq

            if not zmq.has("curve"):
                raise AccessError("curve_secret: this libzmq has no CURVE support (install pyzmq's wheel)")
            secret = load_secret_certificate(config.curve_secret)
            receive_keys = load_allow_list(config.allow_keys)
            if config.publish_allow_keys:
                publish_keys = load_allow_list(config.publish_allow_keys, "publish_allow_keys")
    except AccessError as exc:
        raise DaemonStartupError(str(exc), ExitStatus.CONFIG) from None
    for allow in (receive_keys, publish_keys):
        if allow is not None and allow.duplicates:
            log.warning(
                "%s: %s hold a key an earlier file already holds; the earlier name is used",
                allow.directory,
                ", ".join(allow.duplicates),
            )
    publish = Policy(Gate(publish_keys, networks), secret) if publish_keys is not None else None
    if publish is None and networks and config.publish:
        publish = Policy(Gate(None, networks))  # --allow-ip guards --publish too
    return Access(
        Policy(Gate(receive_keys, networks), secret), publish, config.allow_keys, config.publish_allow_keys
    )


def build_amqp_sink(config: CollectorConfig, stats: Stats) -> AmqpSinkType:
    """The AMQP bridge sink; pika is imported only when it is asked for."""
    try:
        from zlogcollect.sinks.amqp import AmqpSettings, AmqpSink, QueueSpec
    except ImportError as exc:
        raise DaemonStartupError(
            f"amqp_url needs pika: install zlogcollect with its amqp extra, pip install '/path/to/checkout[amqp]' ({exc})",
            ExitStatus.CONFIG,
        ) from None
    settings = AmqpSettings(
        url=config.amqp_url,
        nodes=config.amqp_node,
        exchange=config.exchange,
        exchange_type=config.exchange_type,
        declare_exchange=config.declare_exchange,
        routing_key=config.routing_key or None,
        only=config.only,
        queues=tuple(QueueSpec(*parse_queue(spec)) for spec in config.declare_queue),
        queue_type=config.queue_type,
        queue_arguments=config.queue_arguments,
        buffer=config.buffer,
        overflow=config.overflow,
        refresh=config.refresh,
        heartbeat=config.heartbeat,
        mandatory=config.mandatory,
        close_timeout=max(config.drain_timeout, 1.0),
    )
    try:
        return AmqpSink(settings, stats)
    except ValueError as exc:  # pika rejects URL query options it cannot parse
        raise DaemonStartupError(f"amqp_url: {exc}", ExitStatus.CONFIG) from None


def _never() -> str | None:
    return None


def connect_amqp(amqp_sink: AmqpSinkType, stopping: Callable[[], bool]) -> None:
    """Try the first broker connection now; a stop signal meanwhile abandons it at once."""
    from zlogcollect.sinks.amqp import AmqpSetupError

    def watch() -> None:
        # The connection waits in the hub for up to connect_timeout; a stop must not.
        while True:
            if stopping():
                amqp_sink.abort_start()
            gevent.sleep(0.05)

    watcher = gevent.spawn(watch)
    try:
        # Credentials, TLS and a missing exchange are configuration errors: find out now.
        amqp_sink.start(wait=amqp_sink.settings.connect_timeout)
    except AmqpSetupError as exc:
        raise DaemonStartupError(f"amqp_url: {exc}", ExitStatus.CONFIG) from None
    finally:
        watcher.kill()


def save_counters(path: str, stats: Stats, files: bool, mode: int = privileges.STATE_MODE_MAX) -> None:
    """Write the counters as JSON (``--stats-file``), whole or not at all; a failure is only logged."""
    try:
        atomic_write(path, JSON_ENCODER.encode(stats.as_dict(files)) + "\n", mode=mode)
    except (OSError, ValueError) as exc:
        stats.errors["stats_file"] += 1
        log.warning("cannot write the counters to %s: %s", path, escape_text(str(exc)))


def build_http(
    config: CollectorConfig,
    stats: Stats,
    health: Health,
    files: bool,
    environ: Mapping[str, str] | None = None,
) -> HttpServer | None:
    """The ``--http`` server with its live window, not yet listening; its credentials (if any) read
    from ``--http-auth-file`` or *environ* now, so a bad one is exit 78 before anything is bound.
    prometheus_client and the stream are imported only when asked for."""
    address = config.http_address
    if address is None:
        return None
    from zlogcollect.history import History, LineFormat
    from zlogcollect.httpd import HttpServer
    from zlogcollect.stream import LiveStream
    from zlogcollect.webauth import AuthError, load_auth, world_readable
    from zlogcollect.window import Window

    history = None
    if files:
        fmt = LineFormat(
            config.level_table,
            config.utc,
            peer=config.format == formatting.DEFAULT_PEER_FORMAT
            or (config.format == formatting.DEFAULT_FORMAT and bool(config.curve_secret)),
            plain_continuations=config.multiline == "plain",
        )
        history = History(os.path.abspath(config.dir), fmt, config.errors_file, config.default_routes)
    try:
        auth = load_auth(config.http_auth_file, os.environ if environ is None else environ)
    except AuthError as exc:
        raise DaemonStartupError(str(exc), ExitStatus.CONFIG) from None
    if config.http_auth_file and world_readable(config.http_auth_file):
        log.warning("http_auth_file %r can be read by every user: chmod 600 it", config.http_auth_file)
    directory = os.path.abspath(config.dir) if files and config.default_routes else None
    live = LiveStream(
        Window(config.http_window, config.utc), stats, config.level_table, directory, config.errors_file
    )
    return HttpServer(address, stats, health, files, live, auth, config.http_open_metrics, history)


def feed_live(collector: Collector, http: HttpServer | None, republisher: Republisher) -> None:
    """Hand the collector its per-record and per-drain steps: ``--publish``'s flush always, and with
    ``--http`` the live window's append (per record) and commit and wake-up (per drain)."""
    live = http.live if http is not None else None
    if live is None:
        collector.after_drain = republisher.flush  # sends what a drain queued (nothing without --publish)
        return
    collector.accepted = live.window.add
    flush, commit = republisher.flush, live.after_drain

    def after_drain() -> None:
        flush()
        commit()

    collector.after_drain = after_drain


def start_http(http: HttpServer) -> None:
    """Listen on ``--http``: a wrong address is a configuration error, a taken port is unavailable."""
    from zlogcollect.httpd import HttpBindError

    try:
        http.start()
    except HttpBindError as exc:
        raise DaemonStartupError(
            str(exc), ExitStatus.CONFIG if exc.config else ExitStatus.UNAVAILABLE
        ) from None


def start(
    collector: Collector,
    config: CollectorConfig,
    amqp_sink: AmqpSinkType | None,
    stopping: Callable[[], bool],
    http: HttpServer | None = None,
    republisher: Republisher | None = None,
    access: Access | None = None,
    file_sink: FileSink | None = None,
    user: privileges.ServiceUser | None = None,
) -> None:
    """Start-up in order: bind, publish, HTTP, drop to --user, --dir and the saved state, then the
    broker; each step skipped once a stop came."""
    if not stopping():
        check_ipc_directories(config.bind)
        try:
            collector.bind(config.bind, config.subscribe)
        except StartupError as exc:
            raise DaemonStartupError(str(exc), ExitStatus.UNAVAILABLE) from None
    if republisher is not None and config.publish and not stopping():
        check_ipc_directories(config.publish)
        guard = None
        publish_policy = access.publish if access is not None else None
        if publish_policy is not None:
            guard = partial(collector.guard_publish, access=publish_policy)
        try:
            republisher.bind(config.publish, collector.context, guard)
        except RepublishBindError as exc:
            raise DaemonStartupError(str(exc), ExitStatus.UNAVAILABLE) from None
    if http is not None and not stopping():
        start_http(http)
    if user is not None:
        # Every socket is bound and no file under --dir was opened yet; even after a stop
        # signal, so that the counters file written on the way out is not root's.
        become(user)
    if not stopping():
        open_log_dir(collector, config, file_sink, user)
    if amqp_sink is not None and not stopping():
        connect_amqp(amqp_sink, stopping)
        collector.sinks.append(amqp_sink)


def announce_ready(
    collector: Collector,
    config: CollectorConfig,
    file_sink: FileSink | None,
    amqp_sink: AmqpSinkType | None,
    http: HttpServer | None = None,
    republisher: Republisher | None = None,
    access: Access | None = None,
) -> None:
    """The ready line: where it listens, whom it admits, where records go, where metrics are, its pid."""
    targets = []
    if access is not None and access.receive is not None:
        allow = access.receive.gate.allow
        if allow is not None:
            targets.append(f"CURVE on, {len(allow)} key{'s' if len(allow) != 1 else ''} allowed")
        if access.receive.gate.networks:
            targets.append(f"only from {' '.join(str(net) for net in access.receive.gate.networks)}")
    if file_sink is not None:
        targets.append(f"writing to {file_sink.directory}")
    if amqp_sink is not None:
        targets.append(f"forwarding to {redact(config.amqp_url)} exchange {config.exchange}")
    if republisher is not None and republisher.endpoints:
        targets.append(f"publishing on {' '.join(republisher.endpoints)}")
    if http is not None:
        targets.append(f"metrics on http://{http.address}/metrics")
        if http.live is not None:
            targets.append(f"live stream on http://{http.address}/events")
        if http.auth_kinds:
            targets.append(f"HTTP auth: {http.auth_kinds}")
    announce(
        "ready: listening on %s, %s (pid %d)",
        " ".join(collector.endpoints),
        ", ".join(targets),
        os.getpid(),
    )


def counters_path(config: CollectorConfig, file_sink: FileSink | None) -> str:
    """Where the counters JSON goes: ``--stats-file``, else beside the files (a bridge: nowhere)."""
    stats_path = config.stats_file
    if not stats_path and file_sink is not None:
        stats_path = os.path.join(file_sink.directory, STATS_FILE)
    return stats_path


def act_on_requests(
    state: SignalState,
    collector: Collector,
    summary: Callable[[], str],
    notifier: Notifier | None = None,
    access: Access | None = None,
) -> None:
    """Between batches: SIGHUP reopens the files and re-reads the allow-lists (telling systemd it
    reloads), SIGUSR1 announces the counters line."""
    if state.reopen:
        state.reopen = False
        log.info("SIGHUP: reopening files")
        if notifier is not None:
            notifier.notify(reloading())
        collector.reopen()
        if access is not None:
            access.reload()
        if notifier is not None:
            notifier.notify(READY)
    if state.report:
        state.report = False
        announce("counters: %s", summary())


def run(
    config: CollectorConfig,
    files: bool = True,
    diagnostics: DiagnosticsHandler | None = None,
    stop_requested: Callable[[], str | None] = _never,
) -> ExitStatus:
    """Run until SIGTERM/SIGINT; raise :class:`DaemonStartupError` if it cannot start.

    With *files* off this is the bridge: the same receive side, AMQP only.
    *stop_requested* reports a stop signal caught before this function's own
    handlers exist; such a stop, or one during start-up, skips the rest of the
    start-up and exits 0 with the counters line like any other stop.
    """
    state = SignalState()
    stopping = state.stopping_check(stop_requested)

    user, root_warning = check_root_policy(config)
    raise_fd_limit()
    stats = Stats()
    # The AMQP settings first: a bad URL must fail before --dir is created.
    amqp_sink = build_amqp_sink(config, stats) if config.amqp_url else None
    access = build_access(config)  # before --dir too: a bad key file changes nothing on disk
    file_sink = build_file_sink(config, stats) if files else None
    sinks: list[Sink] = [file_sink] if file_sink is not None else []
    collector = Collector(
        sinks,
        stats,
        levels=config.level_table,
        max_bytes=config.max_record_bytes,
        rcvhwm=config.rcvhwm,
        state_path=os.path.join(file_sink.directory, PUBLISHERS_FILE) if file_sink is not None else None,
        access=access.receive if access is not None else None,
        source_from_peer=config.source_from_peer,
    )
    if file_sink is not None and collector.state is not None:
        file_sink.before_write = collector.state.intend  # the journal's write-ahead entry
        file_sink.track_marks = True  # with the records of its lines, for a write cut short
    health = Health(
        stats,
        pending_lines=(lambda: file_sink.pending_lines) if file_sink is not None else (lambda: 0),
        amqp=AmqpView(lambda: amqp_sink.connected, lambda: amqp_sink.pending, config.buffer)
        if amqp_sink is not None
        else None,
    )
    http = build_http(config, stats, health, files)
    republisher = Republisher(stats.published, config.publish_hwm)  # binds only with --publish
    feed_live(collector, http, republisher)
    notifier = Notifier()
    try:
        start(
            collector, config, amqp_sink, stopping, http, republisher, access, file_sink=file_sink, user=user
        )
    except DaemonStartupError:
        republisher.close()  # first: it may share the collector's context
        collector.close()
        if http is not None:
            http.stop()
        raise

    handlers = state.install()

    progress = Progress(stats, diagnostics)

    stats_path = counters_path(config, file_sink)

    def summary() -> str:
        """The counters line, after writing the same counters as JSON (so a reader of the
        line finds the file already up to date)."""
        # A bridge writes no files: file counters would only be noise on its line.
        if stats_path:
            save_counters(stats_path, stats, files, privileges.state_mode(config.file_mode_value))
        return stats.summary(files=files)

    next_stats = time.monotonic() + config.stats_interval

    def act_on_signals() -> None:
        nonlocal next_stats
        progress.tick()
        health.tick()
        # Subscriptions are read here, never per record; nobody listening costs one None check.
        collector.republish = republisher.send if republisher.poll() else None
        act_on_requests(state, collector, summary, notifier, access)
        if config.stats_interval and time.monotonic() >= next_stats:
            # A heartbeat for operators tailing the journal: the collector is alive and counting.
            next_stats = time.monotonic() + config.stats_interval
            announce("counters: %s", summary())

    try:
        if stopping():
            log.info("%s during start-up: stopping before accepting records", state.stop)
            notifier.notify(STOPPING)
        else:
            log_root_warning(root_warning)
            announce_ready(collector, config, file_sink, amqp_sink, http, republisher, access)
            health.tick()
            notifier.notify(READY)
            collector.serve(stopping, config.flush_interval, act_on_signals, config.flush_delay)
            health.stopping = True
            notifier.notify(STOPPING)
            log.info("%s: draining for up to %.1f s", state.stop, config.drain_timeout)
            collector.drain_until_quiet(time.monotonic() + config.drain_timeout)
    finally:
        health.stopping = True
        collector.republish = None
        republisher.flush()
        republisher.close()
        collector.close()
        if http is not None:
            http.stop()
        for handler in handlers:
            handler.cancel()
    progress.done()
    announce("stopped: %s", summary())
    return ExitStatus.SUCCESS


def _writer_parts(config: CollectorConfig, stats: Stats) -> tuple[FileSink, AmqpWriterType]:
    """The file sink and the writer from a validated config (nothing connected or opened yet)."""
    try:
        from zlogcollect.writer import AmqpWriter, WriterSettings
    except ImportError as exc:
        raise DaemonStartupError(
            f"from_amqp needs pika: install zlogcollect with its amqp extra, pip install '/path/to/checkout[amqp]' ({exc})",
            ExitStatus.CONFIG,
        ) from None
    file_sink = build_file_sink(config, stats)
    settings = WriterSettings(
        url=config.from_amqp,
        queues=config.queue,
        nodes=config.amqp_node,
        prefetch=config.prefetch,
        window=config.dedup_window,
        heartbeat=config.heartbeat,
    )
    try:
        writer = AmqpWriter(settings, file_sink, stats, privileges.state_mode(config.file_mode_value))
    except ValueError as exc:  # pika rejects URL query options it cannot parse
        raise DaemonStartupError(f"from_amqp: {exc}", ExitStatus.CONFIG) from None
    return file_sink, writer


def _start_writer(
    config: CollectorConfig,
    writer: AmqpWriterType,
    http: HttpServer | None,
    user: privileges.ServiceUser | None,
    stopping: Callable[[], bool],
) -> None:
    """--http, drop to --user, check --dir, then the broker: 78 for what the operator must fix, 69 if down."""
    from zlogcollect.sinks.amqp_link import AmqpSetupError
    from zlogcollect.writer import WriterUnavailable

    try:
        if http is not None and not stopping():
            start_http(http)
        if user is not None:
            become(user)
        claim_directory(config, user)
        try:
            writer.start(stopping)
        except AmqpSetupError as exc:
            raise DaemonStartupError(f"from_amqp: {exc}", ExitStatus.CONFIG) from None
        except WriterUnavailable as exc:
            raise DaemonStartupError(str(exc), ExitStatus.UNAVAILABLE) from None
    except DaemonStartupError:
        if http is not None:
            http.stop()
        raise


class WriterTimers:
    """The writer's between-batches step: SIGHUP, SIGUSR1 and the heartbeat counters line."""

    def __init__(
        self,
        config: CollectorConfig,
        state: SignalState,
        file_sink: FileSink,
        stats: Stats,
        notifier: Notifier,
    ) -> None:
        self._config, self._state, self._sink, self._stats = config, state, file_sink, stats
        self._notifier = notifier
        self._path = counters_path(config, file_sink)
        self._mode = privileges.state_mode(config.file_mode_value)
        self._next_stats = time.monotonic() + config.stats_interval

    def summary(self) -> str:
        """The counters line, after saving the same counters as JSON."""
        save_counters(self._path, self._stats, True, self._mode)
        return self._stats.summary(files=True)

    def __call__(self) -> None:
        state = self._state
        if state.reopen:
            state.reopen = False
            log.info("SIGHUP: reopening files")
            self._notifier.notify(reloading())
            self._sink.reopen()
            self._notifier.notify(READY)
        if state.report:
            state.report = False
            announce("counters: %s", self.summary())
        now = time.monotonic()
        if self._config.stats_interval and now >= self._next_stats:
            self._next_stats = now + self._config.stats_interval
            announce("counters: %s", self.summary())


def run_writer(
    config: CollectorConfig,
    diagnostics: DiagnosticsHandler | None = None,
    stop_requested: Callable[[], str | None] = _never,
) -> ExitStatus:
    """``collect --from-amqp``: write what the bridges sent to the queues, until SIGTERM/SIGINT.

    The files, counters, ``--http``, SIGHUP and SIGUSR1 are the collector's; records
    come from :class:`zlogcollect.writer.AmqpWriter` instead of a socket. Raises
    :class:`DaemonStartupError`: 78 for credentials, vhost or a missing queue, 69
    when no node of the broker answers.
    """
    state = SignalState()
    stopping = state.stopping_check(stop_requested)

    user, root_warning = check_root_policy(config)
    stats = Stats()
    file_sink, writer = _writer_parts(config, stats)
    health = Health(
        stats,
        pending_lines=lambda: file_sink.pending_lines,
        amqp=AmqpView(lambda: writer.connected, lambda: 0, config.prefetch, writer=True),
    )
    http = build_http(config, stats, health, True)
    _start_writer(config, writer, http, user, stopping)
    handlers = state.install()
    progress = Progress(stats, diagnostics)
    notifier = Notifier()
    timers = WriterTimers(config, state, file_sink, stats, notifier)

    def between() -> None:
        progress.tick()
        health.tick()
        timers()

    try:
        if stopping():
            log.info("%s during start-up: stopping before consuming", state.stop)
            notifier.notify(STOPPING)
        else:
            log_root_warning(root_warning)
            metrics = f", metrics on http://{http.address}/metrics" if http is not None else ""
            announce(
                "ready: consuming %s from %s (prefetch %d), writing to %s%s (pid %d)",
                " ".join(config.queue),
                redact(writer.url),
                config.prefetch,
                file_sink.directory,
                metrics,
                os.getpid(),
            )
            health.tick()
            notifier.notify(READY)
            writer.serve(stopping, between)
            notifier.notify(STOPPING)
            log.info("%s: writing and acking what was taken, then stopping", state.stop)
    finally:
        health.stopping = True
        try:
            writer.close()
        finally:
            file_sink.close()
            if http is not None:
                http.stop()
            for handler in handlers:
                handler.cancel()
    progress.done()
    announce("stopped: %s", timers.summary())
    return ExitStatus.SUCCESS
