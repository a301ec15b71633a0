"""A private, throw-away RabbitMQ node for tests and benchmarks (this project's and apps' own).

Runs Debian's ``rabbitmq-server`` (3.10.x) directly, without systemd and without
touching ``/etc/rabbitmq`` or ``/var/lib/rabbitmq``: every file lives in a temp dir,
every port (AMQP, Erlang distribution, epmd, CLI distribution) is private, and
the node gets its own epmd so nothing outlives the tests.

Usage::

    node = RabbitNode()
    node.start()
    ...  # connect to node.url
    node.close()  # stop and delete the temp dir
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

__all__ = ["RabbitCluster", "RabbitNode", "RabbitNodeError", "free_port_block", "port_bindable"]

# Not /usr/sbin: those wrappers `su rabbitmq` and cd to /var/lib/rabbitmq, which
# changes HOME (hence the Erlang cookie) and drops part of our environment.
BIN_DIR = Path("/usr/lib/rabbitmq/bin")
SERVER = BIN_DIR / "rabbitmq-server"
CTL = BIN_DIR / "rabbitmqctl"

# Ports: AMQP, server distribution, epmd, then CTL_PORTS ports for the CLI's own
# distribution listener (each rabbitmqctl call is a short-lived Erlang node).
_CTL_PORTS = 11
_BLOCK = 3 + _CTL_PORTS
_LOG_TAIL_LINES = 40


class RabbitNodeError(RuntimeError):
    """The node could not be started, stopped or queried."""


def _state(stat_path: Path) -> str | None:
    try:
        stat = stat_path.read_text()
    except OSError:
        return None
    # The state follows the parenthesised command name, which may contain spaces.
    return stat.rpartition(")")[2].split()[0]


def _pid_alive(pid: int) -> bool:
    """True while any thread of process `pid` exists and is not a zombie.

    Orphans that exited stay zombies until PID 1 reaps them, which in sandboxes can
    take long or never happen, so `kill -0` would report them alive. And the main
    thread of a SIGKILLed multi-threaded VM turns zombie before its other threads
    are gone, while they still hold its sockets (the ports are not free yet), so
    every thread is checked.
    """
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    return any(_state(task / "stat") not in (None, "Z", "X") for task in tasks)


def _port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def port_bindable(port: int) -> bool:
    """True if a listener could bind *port* on 127.0.0.1 now (a port in TIME_WAIT counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like the Erlang and epmd listeners do: a port whose last connection is
        # still in TIME_WAIT (after every stop) is reusable, a live listener is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block(size: int) -> int:
    """First port of `size` consecutive free ports below the ephemeral range.

    Below the ephemeral range so that no outgoing connection (e.g. a test's client
    socket) can grab one of them between a stop() and a restart().
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    # An unusually wide ephemeral range leaves no room below it: take any port then.
    bottom, top = (10000, low - size) if low - size > 12000 else (1024, 65536 - size)
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(bottom, top)
        if all(port_bindable(port) for port in range(base, base + size)):
            return base
    raise RabbitNodeError(f"no block of {size} free ports found on 127.0.0.1")


def _epmd_names(port: int) -> list[str] | None:
    """Node names registered with the epmd on `port` (NAMES_REQ of the epmd protocol).

    Cheaper than spawning `epmd -names` every poll; None if epmd does not answer.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"\x00\x01n")  # 2-byte length, then NAMES_REQ (110)
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
    except OSError:
        return None
    # 4-byte epmd port, then lines "name NAME at port N".
    text = b"".join(chunks)[4:].decode("utf-8", "replace")
    return [line.split()[1] for line in text.splitlines() if line.startswith("name ")]


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # start_new_session=True: the group id is the script's pid and the VM is in
    # that group. Its helpers (erl_child_setup, inet_gethost) setsid themselves
    # but exit as soon as the VM is gone.
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


class NodeLayout:
    """Where one private node lives: its directory, its ports and names, and the files and
    environment that point the server and the CLI at them (never at /etc/rabbitmq)."""

    def __init__(
        self,
        directory: Path,
        port: int,
        *,
        epmd_port: int | None = None,
        cookie: str | None = None,
        plugins: Sequence[str] = (),
    ) -> None:
        self.dir = directory
        self.port = port
        self.dist_port = port + 1
        # A cluster's nodes share one epmd (the cluster's): each finds the others'
        # distribution ports there. A lone node has its own at port + 2.
        self.epmd_port = port + 2 if epmd_port is None else epmd_port
        self.cookie = cookie
        """The Erlang cookie (a cluster's nodes share one); None: a random one per node."""
        self.plugins = tuple(plugins)
        self.ctl_port_min = port + 3
        self.ctl_port_max = port + 3 + _CTL_PORTS - 1
        # @localhost: the default @$(hostname -s) depends on /etc/hosts.
        self.short_name = f"zlc{port}"
        self.nodename = f"{self.short_name}@localhost"
        self.pid_file = directory / "rabbitmq.pid"
        self.server_out = directory / "server.out"
        self.epmd_out = directory / "epmd.out"
        self.log_file = directory / "log" / f"{self.nodename}.log"

    def environment(self) -> dict[str, str]:
        """The environment the server and every CLI call run in: everything points into the dir."""
        # Drop inherited RABBITMQ_*/ERL_* settings: they could point the node or
        # the CLI at another config, cookie or epmd.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        d = self.dir
        env.update(
            {
                "HOME": str(d),  # .erlang.cookie is read (or created) in $HOME
                "LC_ALL": "C.UTF-8",  # the Elixir CLI warns or fails under latin1
                "LANG": "C.UTF-8",
                # An empty env file of our own, so /etc/rabbitmq/rabbitmq-env.conf is ignored.
                "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
                "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
                "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
                "RABBITMQ_LOG_BASE": str(d / "log"),
                "RABBITMQ_PID_FILE": str(self.pid_file),
                "RABBITMQ_NODENAME": self.nodename,
                "RABBITMQ_USE_LONGNAME": "false",
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                # Each CLI call is an Erlang node too; private ports so that parallel
                # test nodes (or a system broker) do not collide on 35672-35682.
                "RABBITMQ_CTL_DIST_PORT_MIN": str(self.ctl_port_min),
                "RABBITMQ_CTL_DIST_PORT_MAX": str(self.ctl_port_max),
                # Distribution listener on loopback only (default 0.0.0.0).
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
                # Server and CLI both find (and, if it is missing, spawn) epmd here.
                "ERL_EPMD_PORT": str(self.epmd_port),
                "ERL_EPMD_ADDRESS": "127.0.0.1",
            }
        )
        return env

    def write_files(self, keep_data: bool) -> None:
        """Config, plugins and cookie files; with *keep_data* off, a fresh mnesia and log."""
        d = self.dir
        if not keep_data:
            for sub in ("mnesia", "log"):
                shutil.rmtree(d / sub, ignore_errors=True)
        for path in (self.pid_file, self.server_out, self.epmd_out):
            path.unlink(missing_ok=True)
        (d / "mnesia").mkdir(exist_ok=True)
        (d / "log").mkdir(exist_ok=True)
        d.chmod(0o700)
        (d / "rabbitmq-env.conf").write_text("")
        # Written before start: the same as `rabbitmq-plugins --offline enable`.
        (d / "enabled_plugins").write_text(f"[{','.join(self.plugins)}].\n")
        (d / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            # CI disks can be nearly full; do not let the disk alarm block publishers.
            "disk_free_limit.absolute = 50MB\n"
            "log.file.level = info\n"
        )
        cookie = d / ".erlang.cookie"
        if not cookie.exists():
            # Written before anything starts, else erl creates a random one itself;
            # mode 400 or erl refuses it.
            fd = os.open(cookie, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(fd, "w") as f:
                f.write(self.cookie or secrets.token_hex(20).upper())

    def beam_pid(self) -> int | None:
        """The VM's pid from its pid file, if there is one."""
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None


class RabbitNode:
    """One private RabbitMQ node: its own temp dir, ports, cookie and epmd."""

    def __init__(
        self,
        *,
        start_timeout: float = 60.0,
        stop_timeout: float = 30.0,
        epmd_port: int | None = None,
        cookie: str | None = None,
        plugins: Sequence[str] = (),
    ) -> None:
        """*epmd_port*: an epmd someone else runs (a :class:`RabbitCluster`'s); None: the node
        starts and stops its own. *plugins* are enabled before start; *cookie* is the Erlang
        cookie (a random one if None)."""
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._own_epmd = epmd_port is None
        # Short path under /tmp: long paths make the Erlang logs unreadable and
        # pytest's tmp_path can be very deep.
        self.layout = NodeLayout(
            Path(tempfile.mkdtemp(prefix="rmq-", dir="/tmp")),
            free_port_block(_BLOCK),
            epmd_port=epmd_port,
            cookie=cookie,
            plugins=plugins,
        )
        self.dir, self.port, self.nodename = self.layout.dir, self.layout.port, self.layout.nodename
        self.last_start_seconds: float | None = None
        self.last_stop_seconds: float | None = None
        self._server: subprocess.Popen[bytes] | None = None
        self._epmd: subprocess.Popen[bytes] | None = None
        self._env = self.layout.environment()

    # -- public API ------------------------------------------------------------

    @classmethod
    def available(cls) -> bool:
        """Whether Debian's rabbitmq-server is installed."""
        return os.access(SERVER, os.X_OK) and os.access(CTL, os.X_OK) and shutil.which("epmd") is not None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.poll() is None

    def start(self, keep_data: bool = False) -> None:
        """Start the node and wait until it accepts AMQP connections.

        keep_data=False wipes the message store (fresh broker); True restarts on the
        existing one, so durable queues and persistent messages survive.
        """
        if self._server is not None or self._epmd is not None:
            raise RabbitNodeError(f"node {self.nodename} is already started; stop() it first")
        if not self.available():
            raise RabbitNodeError(f"{SERVER} is not installed (apt-get install rabbitmq-server)")
        t0 = time.monotonic()
        ports = (self.port, self.layout.dist_port) + ((self.layout.epmd_port,) if self._own_epmd else ())
        for port in ports:
            # A short grace period: a VM killed by someone else may still be exiting.
            while not port_bindable(port):
                if time.monotonic() - t0 > 5:
                    raise RabbitNodeError(f"port {port} on 127.0.0.1 is already in use")
                time.sleep(0.1)
        deadline = t0 + self.start_timeout
        self.layout.write_files(keep_data)
        try:
            if self._own_epmd:
                self._start_epmd(deadline)
            self._start_server()
            self._wait(
                "epmd registration",
                lambda: self.layout.short_name in (_epmd_names(self.layout.epmd_port) or []),
                deadline,
            )
            # await_startup fails at once (exit 69) if the node is not registered
            # yet, hence the epmd wait above; it then waits for the full boot.
            left = max(1, int(deadline - time.monotonic()))
            self.ctl("await_startup", "--timeout", str(left), timeout=left + 15)
            self._wait("the AMQP listener", lambda: _port_accepts(self.port), deadline)
        except BaseException:
            # Never leave half a node (or its epmd) behind, whatever went wrong.
            self._kill_all()
            raise
        self.last_start_seconds = time.monotonic() - t0

    def stop(self) -> None:
        """Stop the node gracefully (TERM/KILL as fallback) and kill our epmd; keeps the data."""
        t0 = time.monotonic()
        server = self._server
        if server is not None and server.poll() is None:
            try:
                # With the pid file, `stop` returns only once the beam process exited.
                self.ctl("stop", str(self.layout.pid_file), timeout=self.stop_timeout)
            except RabbitNodeError:
                # Only the script: it traps TERM and stops the VM itself.
                server.terminate()
            try:
                server.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                _signal_group(server, signal.SIGKILL)
        self._kill_all()
        self.last_stop_seconds = time.monotonic() - t0

    def crash(self) -> None:
        """Simulate a broker crash: SIGKILL the whole server process group, then clean up."""
        server = self._server
        if server is None:
            raise RabbitNodeError(f"node {self.nodename} is not started")
        _signal_group(server, signal.SIGKILL)
        self._kill_all()

    def restart(self, keep_data: bool = True) -> None:
        """Stop (if running) and start again, on the same ports and, by default, the same data."""
        if self._server is not None or self._epmd is not None:
            self.stop()
        self.start(keep_data=keep_data)

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run rabbitmqctl against this node; return its stdout, raise RabbitNodeError on failure or timeout."""
        if self._own_epmd and (self._epmd is None or self._epmd.poll() is not None):
            # The CLI itself runs `epmd -daemon` when none answers (rabbit_nodes_common:
            # ensure_epmd, whatever -start_epmd says), which would outlive us.
            raise RabbitNodeError(f"node {self.nodename} is not running")
        try:
            proc = subprocess.run(
                [str(CTL), "-n", self.nodename, *args],
                env=self._env,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise self._error(f"rabbitmqctl {' '.join(args)} did not finish within {timeout} s") from exc
        if proc.returncode != 0:
            raise RabbitNodeError(
                f"rabbitmqctl {' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}\n{self.log_tail()}"
            )
        return proc.stdout

    def log_tail(self) -> str:
        """The last lines of the server's stdout and log file, for error messages."""
        parts = []
        for path in (self.layout.server_out, self.layout.log_file, self.layout.epmd_out):
            tail = _tail(path)
            if tail:
                parts.append(f"--- tail of {path}\n{tail}")
        return "\n".join(parts) or f"(no log output in {self.dir})"

    def close(self) -> None:
        """Stop the node and delete its temp dir."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RabbitNode:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RabbitNode {self.nodename} {self.url} {state} dir={self.dir}>"

    # -- internals --------------------------------------------------------------

    def _start_epmd(self, deadline: float) -> None:
        # Our own epmd, started by us so we own its pid (erl would start a
        # `-daemon` one that outlives everything).
        epmd = self._epmd = self._spawn(
            [shutil.which("epmd") or "epmd", "-port", str(self.layout.epmd_port), "-address", "127.0.0.1"],
            self.layout.epmd_out,
        )

        def ready() -> bool:
            if epmd.poll() is not None:
                raise self._error(f"epmd exited with status {epmd.returncode} during start-up")
            # A real request, not a bare connect, which epmd logs as a "partial packet".
            return _epmd_names(self.layout.epmd_port) is not None

        # The server must find our epmd listening, or it spawns a `-daemon` one of its own.
        self._wait("epmd to listen", ready, min(deadline, time.monotonic() + 10))

    def _start_server(self) -> None:
        # Foreground mode (not -detached): the script stays our child, so its
        # process group (a new session) holds the whole VM for crash()/KILL.
        self._server = self._spawn([str(SERVER)], self.layout.server_out)

    def _spawn(self, command: list[str], output: Path) -> subprocess.Popen[bytes]:
        """*command* in the node's environment and directory, in a new session, output to *output*."""
        with output.open("wb") as out:
            return subprocess.Popen(
                command,
                env=self._env,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait(self, what: str, condition: Callable[[], bool], deadline: float) -> None:
        t0 = time.monotonic()
        while not condition():
            server = self._server
            if server is not None and server.poll() is not None:
                raise self._error(
                    f"rabbitmq-server exited with status {server.returncode} while waiting for {what}"
                )
            if time.monotonic() >= deadline:
                raise self._error(f"timed out after {time.monotonic() - t0:.1f} s waiting for {what}")
            time.sleep(0.1)

    def _error(self, message: str) -> RabbitNodeError:
        return RabbitNodeError(f"RabbitMQ node {self.nodename} ({self.dir}): {message}\n{self.log_tail()}")

    def _kill_all(self) -> None:
        """Make sure neither the VM, the server script nor our epmd survives; reap them."""
        server, self._server = self._server, None
        epmd, self._epmd = self._epmd, None
        try:
            if server is not None:
                if server.poll() is None:
                    _signal_group(server, signal.SIGKILL)
                # Reap our direct child; also keeps Popen from warning in __del__.
                server.wait(timeout=10)
            self._kill_beam()
        finally:
            # epmd last: a live VM whose epmd vanished would spawn a `-daemon` one.
            if epmd is not None and epmd.poll() is None:
                epmd.terminate()
                try:
                    epmd.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    epmd.kill()
                    epmd.wait(timeout=5)

    def _kill_beam(self) -> None:
        """SIGKILL the VM named in the pid file if it outlived its script, and wait for it."""
        beam = self.layout.beam_pid()
        if beam is None:
            return
        try:
            comm = Path(f"/proc/{beam}/comm").read_text().strip()
        except OSError:
            comm = ""
        # The pid file outlives the VM: never kill a recycled pid.
        if comm.startswith("beam") and _pid_alive(beam):
            try:
                os.kill(beam, signal.SIGKILL)
            except ProcessLookupError:
                pass
            # The VM is the script's child, not ours, so we cannot reap it: wait
            # until it is gone or a zombie.
            deadline = time.monotonic() + 10
            while _pid_alive(beam) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _pid_alive(beam):
                raise self._error(f"beam process {beam} survived SIGKILL")
        self.layout.pid_file.unlink(missing_ok=True)


CONSISTENT_HASH_PLUGIN = "rabbitmq_consistent_hash_exchange"


class RabbitCluster:
    """A RabbitMQ cluster of *size* private nodes on 127.0.0.1, for tests of replicated queues.

    Each node is a :class:`RabbitNode` (its own directory, AMQP and distribution
    ports, node name); they share one Erlang cookie and one epmd, which the
    cluster starts and owns (a node finds the others' distribution ports there).
    Nodes 2.. join node 1 with ``stop_app`` / ``join_cluster`` / ``start_app``.
    *plugins* (by default the consistent-hash exchange) are enabled on every node
    before it starts. Usage::

        with RabbitCluster(size=3) as cluster:
            cluster.start()
            ...  # cluster.urls: one AMQP URL per node
            cluster.stop_node(2)  # graceful; start_node(2) brings it back into the cluster
    """

    def __init__(
        self,
        size: int = 3,
        *,
        plugins: Sequence[str] = (CONSISTENT_HASH_PLUGIN,),
        start_timeout: float = 90.0,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster has at least one node")
        self.dir = Path(tempfile.mkdtemp(prefix="rmq-cluster-", dir="/tmp"))
        self.epmd_port = free_port_block(1)
        self._epmd: subprocess.Popen[bytes] | None = None
        cookie = secrets.token_hex(20).upper()
        self.nodes = [
            RabbitNode(start_timeout=start_timeout, epmd_port=self.epmd_port, cookie=cookie, plugins=plugins)
            for _ in range(size)
        ]
        self.last_start_seconds: float | None = None

    @property
    def urls(self) -> list[str]:
        """One AMQP URL per node, node 1's first."""
        return [node.url for node in self.nodes]

    @property
    def running(self) -> bool:
        return self._epmd is not None and all(node.running for node in self.nodes)

    def start(self) -> None:
        """Start every node (in parallel, fresh data), then join nodes 2.. to node 1."""
        if self._epmd is not None:
            raise RabbitNodeError("the cluster is already started; close() it first")
        t0 = time.monotonic()
        try:
            self._start_epmd()
            with ThreadPoolExecutor(len(self.nodes)) as pool:
                # Start all, then collect: list() re-raises the first node's error.
                list(pool.map(lambda node: node.start(keep_data=False), self.nodes))
            first = self.nodes[0].nodename
            for node in self.nodes[1:]:
                node.ctl("stop_app")
                node.ctl("join_cluster", first)
                node.ctl("start_app")
        except BaseException:
            self.stop()
            raise
        self.last_start_seconds = time.monotonic() - t0

    def stop_node(self, index: int) -> None:
        """Stop node *index* (0-based) gracefully; it stays a member and keeps its data."""
        self.nodes[index].stop()

    def crash_node(self, index: int) -> None:
        """SIGKILL node *index*'s VM."""
        self.nodes[index].crash()

    def start_node(self, index: int) -> None:
        """Start a stopped or crashed node again on its data: it rejoins the cluster."""
        self.nodes[index].start(keep_data=True)

    def ctl(self, *args: str, node: int = 0, timeout: float = 60.0) -> str:
        """rabbitmqctl against node *node*."""
        return self.nodes[node].ctl(*args, timeout=timeout)

    def stop(self) -> None:
        """Stop every node, then the shared epmd; keeps the directories."""
        try:
            # In parallel: a node that stops last waits for nothing, and each stop is ~2 s.
            with ThreadPoolExecutor(len(self.nodes)) as pool:
                list(pool.map(lambda node: node.stop(), self.nodes))
        finally:
            epmd, self._epmd = self._epmd, None
            if epmd is not None and epmd.poll() is None:
                epmd.terminate()
                try:
                    epmd.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    epmd.kill()
                    epmd.wait(timeout=5)

    def close(self) -> None:
        """Stop everything and delete every node's directory and the cluster's."""
        try:
            self.stop()
        finally:
            for node in self.nodes:
                shutil.rmtree(node.dir, ignore_errors=True)
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RabbitCluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<RabbitCluster {len(self.nodes)} nodes {self.urls} epmd={self.epmd_port}>"

    def _start_epmd(self) -> None:
        if not port_bindable(self.epmd_port):
            raise RabbitNodeError(f"port {self.epmd_port} on 127.0.0.1 is already in use")
        with (self.dir / "epmd.out").open("wb") as out:
            epmd = self._epmd = subprocess.Popen(
                [shutil.which("epmd") or "epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 10
        while _epmd_names(self.epmd_port) is None:
            if epmd.poll() is not None or time.monotonic() > deadline:
                raise RabbitNodeError(f"the cluster's epmd did not listen on port {self.epmd_port}")
            time.sleep(0.05)
