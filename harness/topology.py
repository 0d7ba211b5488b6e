"""Nodes that can really crash: Redis and logsvc on the host, kernels and bridges in guests.

Everything whose state must outlive a node runs on the host as a subprocess: a real
``redis-server`` (AOF, ``appendfsync always``) and one or more ``dmulog logsvc``
replicas serving gRPC on Unix sockets, each started by :mod:`harness.servers` as the
tests and benchmarks start theirs. A node is a qemu guest (:mod:`harness.guest`)
running the real kernel and ``dmulog bridge --logsvc 10.0.2.100:7000 --node node-<i>``
(with two replicas ``--logsvc ipv4:10.0.2.100:7000,10.0.2.100:7001``). A guest reaches
logsvc only through qemu user-mode networking with ``restrict=on`` and one ``guestfwd``
rule per replica that runs ``socat STDIO UNIX-CONNECT:<logsvc socket>`` for each guest
connection; there is no other network. Each guest has a network of its own, so every
node sees logsvc at the same address.

The disks (two legs and a small log device for ``clustered-disk``) are host image
files shared by every guest of the topology: each guest opens them with
``cache=none`` and ``aio=threads``, so every write a guest saw complete is in the host
file even when its qemu is killed, and with ``file.locking=off`` and ``share-rw=on``,
without which qemu refuses a second guest on the same image. Guests see them in the
order of :data:`DISKS` (``/dev/vda``, ``/dev/vdb``, ``/dev/vdc``). A guest's page
cache knows nothing of another guest's writes: read those with ``O_DIRECT``.

Node ``i`` is named ``node-<i>`` in every boot, so a new boot of it is a new
incarnation (a new boot id) of the same node for the log. A boot can be crashed
(SIGKILL of qemu mid-I/O, nothing flushed), frozen and thawed (SIGSTOP and SIGCONT of
qemu: the node stops answering without dying) and rebooted (crashed, then booted
again on the same images).

Typical use::

    with Topology(workdir) as topo:
        topo.make_images()
        boots = [topo.boot(f"n{i}", guest_script("two-nodes.sh"), node=i, env={...}, timeout=240)
                 for i in range(2)]
        boots[0].wait_for(lambda: boots[0].count_lines("writes.log", "D ") >= 20, 120)
        boots[0].crash()
        run = boots[0].join()
        state = topo.log_state(uuid)
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import grpc

from dmulog.v1 import dmulog_pb2 as pb
from dmulog.v1 import dmulog_pb2_grpc as pb_grpc
from harness.guest import REPO, GuestRun, run_guest
from harness.redis_ha import SentinelGroup
from harness.servers import LogsvcProcess, RedisProcess, ServerError, start_logsvc

__all__ = ["DISKS", "GUEST_HOST", "GUEST_PORT", "Boot", "Topology", "TopologyError", "node_name"]

#: Where a guest finds logsvc replica 0 (replica i: port 7000 + i): an address that
#: exists only inside qemu's user network.
GUEST_HOST, GUEST_PORT = "10.0.2.100", 7000
#: Guest disks, in the order the guest sees them (/dev/vda, /dev/vdb, /dev/vdc).
DISKS = ("leg0", "leg1", "logdev")


def node_name(node: int) -> str:
    """The name of node ``node`` (``--node`` of its bridge): the same in every boot of it."""
    return f"node-{node}"


class TopologyError(RuntimeError):
    """A host service or a guest did not come up, or a wait timed out."""


def _wait(cond: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TopologyError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclasses.dataclass
class Boot:
    """One boot of one node, running in a background thread.

    Attributes:
        name: label, also the results directory's name.
        index: the node's number ``i``.
        node: the node's name (``node-<i>``).
        results_dir: the guest's ``/results``.
        started: monotonic time qemu was started.
        qmp_socket: qemu's QMP socket (see :meth:`qmp`).
        crashed_at: monotonic time of :meth:`crash`, None before.
    """

    name: str
    index: int
    node: str
    results_dir: Path
    started: float
    qmp_socket: Path
    _thread: threading.Thread
    _box: dict[str, object]
    crashed_at: float | None = None

    def alive(self) -> bool:
        """Whether qemu is still running (a frozen qemu is)."""
        return self._thread.is_alive()

    def path(self, name: str) -> Path:
        """A file in the guest's results directory."""
        return self.results_dir / name

    def text(self, name: str) -> str:
        """A results file's text, empty when missing."""
        try:
            return self.path(name).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def outcome(self) -> dict[str, str]:
        """The ``key=value`` lines the guest wrote to ``/results/outcome`` so far."""
        return dict(line.split("=", 1) for line in self.text("outcome").splitlines() if "=" in line)

    def count_lines(self, name: str, prefix: str) -> int:
        """Lines of a results file that start with ``prefix``."""
        return sum(1 for line in self.text(name).splitlines() if line.startswith(prefix))

    def wait_for(self, cond: Callable[[], bool], timeout: float, what: str = "the guest") -> None:
        """Wait until ``cond()``; raise if it times out or the guest ends first."""

        def check() -> bool:
            if cond():
                return True
            if not self.alive():
                raise TopologyError(f"{self.name}: guest ended while waiting for {what}; see {self.results_dir}")
            return False

        _wait(check, timeout, f"{self.name}: {what}", interval=0.1)

    def wait_file(self, name: str, timeout: float) -> None:
        """Wait until the guest created ``/results/<name>``."""
        self.wait_for(lambda: self.path(name).exists(), timeout, f"/results/{name}")

    def tell(self, name: str) -> None:
        """Create ``/results/<name>`` for the guest, which waits for it with ``wait_host`` (lib.sh)."""
        self.path(name).touch()

    def qmp(self, command: str, **arguments: object) -> object:
        """Run one QMP command on this boot's qemu; return its ``return`` value."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(self.qmp_socket))
            stream = sock.makefile("rwb")

            def call(execute: str, args: dict[str, object]) -> object:
                stream.write(json.dumps({"execute": execute, "arguments": args}).encode() + b"\n")
                stream.flush()
                while True:  # skip asynchronous events
                    reply = json.loads(stream.readline() or b"{}")
                    if "return" in reply:
                        return reply["return"]
                    if "error" in reply or not reply:
                        raise TopologyError(f"QMP {execute}: {reply.get('error', 'connection closed')}")

            json.loads(stream.readline())  # greeting
            call("qmp_capabilities", {})
            return call(command, arguments)

    def throttle_writes(self, disk: str, iops: int) -> None:
        """Limit writes to ``disk`` (``leg0``, ``leg1``) to ``iops`` per second; 0 lifts the limit."""
        limits = {k: 0 for k in ("bps", "bps_rd", "bps_wr", "iops", "iops_rd")}
        self.qmp("block_set_io_throttle", device=disk, iops_wr=iops, **limits)

    def qemu_pid(self, timeout: float = 30) -> int:
        """The pid of qemu itself, from its pidfile (qemu writes it once it has started)."""
        pidfile = self.path("qemu.pid")
        self.wait_for(lambda: pidfile.exists() and pidfile.read_text().strip().isdigit(), timeout, "qemu's pidfile")
        return int(pidfile.read_text().strip())

    def crash(self) -> None:
        """SIGKILL qemu itself: the node dies mid-I/O, nothing is flushed."""
        pid = self.qemu_pid()
        self.crashed_at = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def freeze(self, timeout: float = 10) -> None:
        """SIGSTOP qemu; return once it is stopped: the node's kernel, bridge and disks stop where they are.

        Its connections stay open, so to logsvc the node is there but never answers.
        """
        os.kill(self.qemu_pid(), signal.SIGSTOP)
        _wait(self.frozen, timeout, f"{self.name}: qemu stopped")

    def thaw(self) -> None:
        """SIGCONT qemu: a frozen node goes on as if nothing happened (its clocks jump)."""
        os.kill(self.qemu_pid(), signal.SIGCONT)

    def frozen(self) -> bool:
        """Whether qemu is stopped (by :meth:`freeze`), as the host kernel reports its state."""
        try:
            stat = Path(f"/proc/{self.qemu_pid()}/stat").read_text()
        except FileNotFoundError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")

    def join(self, timeout: float | None = None) -> GuestRun:
        """Wait for the boot to end; return what :func:`~harness.guest.run_guest` returned."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TopologyError(f"{self.name}: run_guest did not return")
        if "error" in self._box:
            raise self._box["error"]  # type: ignore[misc]
        return self._box["run"]  # type: ignore[return-value]


SENTINEL_FLAGS = ["--min-replicas-to-write", "1", "--min-replicas-max-lag", "2"]
"""The data nodes' settings of a Sentinel topology (docs/durability.md: a cut-off primary refuses writes)."""


class Topology:
    """Host redis-server + host logsvc + shared disk images; boots guests (nodes) against them.

    Args:
        workdir: host directory for images, Redis data, logs and guest results (kept).
        leg_bytes: size of each leg image.
        memory: guest RAM, for every guest.
        replicas: logsvc processes, all on the same Redis.
        trace: record every Redis command (``redis-cli monitor``) for diagnosing a
            failure; MONITOR slows Redis down, so a benchmark turns it off.
        lease_ttl: every logsvc's ``--lease-ttl`` (its default when None).
        sentinel: Redis is a Valkey primary with two replicas and three Sentinels
            (harness/redis_ha.py, ``min-replicas-to-write 1``) instead of one
            redis-server, and logsvc runs on its ``redis+sentinel://`` URL with
            ``--redis-durable-replicas 1`` (docs/durability.md); no trace then.
    """

    def __init__(self, workdir: Path, *, leg_bytes: int = 32 << 20, memory: str = "1G", replicas: int = 1,
                 trace: bool = True, lease_ttl: float | None = None, sentinel: bool = False):  # fmt: skip
        self.workdir = Path(workdir).resolve()
        self.lease_ttl = lease_ttl
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.leg_bytes = leg_bytes
        self.memory = memory
        self.redis = RedisProcess(self.workdir / "redis")
        self.sentinels = SentinelGroup(self.workdir / "redis-ha", extra=SENTINEL_FLAGS) if sentinel else None
        # A short private directory for the sockets (sun_path is 108 bytes) with no comma
        # in it (the guestfwd option would split there).
        self._sockdir = Path(tempfile.mkdtemp(prefix="dmulog-topo-"))
        self.sockets = [self._sockdir / f"logsvc{i}.sock" for i in range(replicas)]
        self.logsvcs: list[LogsvcProcess | None] = [None] * replicas
        self._logsvc_logs = [self.workdir / f"logsvc{i}.log" for i in range(replicas)]
        #: Every command Redis executes (``redis-cli monitor``), for diagnosing a failure.
        self.trace = self.workdir / "redis-monitor.txt"
        self._tracing = trace and not sentinel
        self._monitor: subprocess.Popen[bytes] | None = None
        self._qmp_ids = itertools.count()
        self._boots: list[Boot] = []

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> Topology:
        try:
            self.start()
        except BaseException:
            # A logsvc that does not come up must not leave its Redis (or the
            # replicas started before it) running past the test.
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def guest_logsvc(self) -> str:
        """The bridge's ``--logsvc`` inside a guest: every replica."""
        if len(self.sockets) == 1:
            return f"{GUEST_HOST}:{GUEST_PORT}"
        return "ipv4:" + ",".join(f"{GUEST_HOST}:{GUEST_PORT + i}" for i in range(len(self.sockets)))

    def start(self) -> None:
        """Start redis-server (and its trace), then every logsvc replica."""
        self.start_redis()
        for i in range(len(self.sockets)):
            self.start_logsvc(i)

    def close(self) -> None:
        """Kill any guest still running, stop logsvc and Redis, remove the socket directory (the workdir is kept)."""
        for boot in self._boots:
            if boot.alive():
                with contextlib.suppress(OSError, TopologyError):
                    boot.thaw()
                    boot.crash()
                with contextlib.suppress(TopologyError, OSError):
                    boot.join(60)
        for i in range(len(self.sockets)):
            self.kill_logsvc(i)
        self.kill_redis()
        shutil.rmtree(self._sockdir, ignore_errors=True)

    def ensure_running(self) -> None:
        """Start whichever of Redis and logsvc is not running (after a failed fault injection)."""
        if self.sentinels is not None:
            for node in self.sentinels.nodes:
                if not node.running():
                    self.sentinels.restart(node)
        elif self.redis.proc is None or self.redis.proc.poll() is not None:
            self.start_redis()
        for i, svc in enumerate(self.logsvcs):
            if svc is None or not svc.running():
                self.start_logsvc(i)

    # ------------------------------------------------------------------- logsvc

    def start_logsvc(self, replica: int = 0, timeout: float = 30) -> None:
        """Start replica ``replica``: ``dmulog logsvc --listen unix:<socket> --redis <url>``; wait until it listens."""
        running = self.logsvcs[replica]
        if running is not None and running.running():
            raise TopologyError(f"logsvc {replica} already running")
        try:
            self.logsvcs[replica] = start_logsvc(self._logsvc_logs[replica], listen=f"unix:{self.sockets[replica]}",
                                                 redis_url=self.redis_url, timeout=timeout,
                                                 extra=self._logsvc_flags())  # fmt: skip
        except ServerError as e:
            raise TopologyError(f"logsvc {replica}: {e}") from e

    @property
    def redis_url(self) -> str:
        """What logsvc's ``--redis`` is: the redis-server, or the Sentinels' URL."""
        return self.sentinels.url if self.sentinels is not None else self.redis.url

    def _logsvc_flags(self) -> list[str]:
        flags = [] if self.lease_ttl is None else ["--lease-ttl", str(self.lease_ttl)]
        return flags + (["--redis-durable-replicas", "1"] if self.sentinels is not None else [])

    def kill_logsvc(self, replica: int = 0) -> None:
        """SIGKILL replica ``replica`` (a crash, not a shutdown)."""
        svc = self.logsvcs[replica]
        if svc is not None:
            svc.kill()

    # -------------------------------------------------------------------- redis

    def kill_redis(self) -> None:
        """SIGKILL redis-server: whatever it acknowledged is in its AOF (appendfsync always); with Sentinels, all."""
        if self.sentinels is not None:
            self.sentinels.close()
        self.redis.kill()
        self._stop_monitor()

    def fail_over_redis(self) -> float:
        """SIGKILL the Sentinels' primary; once a replica took over, start it again as a replica.

        Returns the seconds from the kill until every Sentinel named the new primary.
        """
        if self.sentinels is None:
            raise TopologyError("fail_over_redis needs Topology(sentinel=True)")
        old = self.sentinels.primary()
        t0 = time.monotonic()
        old.kill()
        self.sentinels.wait_for_failover(old.port, timeout=60)
        took = time.monotonic() - t0
        self.sentinels.restart(old, timeout=60)
        self.sentinels.wait_ready(timeout=60)
        return took

    def start_redis(self) -> None:
        """Start redis-server (again: same port and data directory, so it replays its AOF); or the Sentinel group."""
        if self.sentinels is not None:
            self.sentinels.start()
            return
        self.redis.start()
        cli = shutil.which("redis-cli")
        if cli is not None and self._tracing:
            with self.trace.open("ab") as out:
                self._monitor = subprocess.Popen(
                    [cli, "-p", str(self.redis.port), "monitor"], stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.DEVNULL,
                )  # fmt: skip

    def _stop_monitor(self) -> None:
        if self._monitor is not None and self._monitor.poll() is None:
            self._monitor.kill()
            self._monitor.wait()

    # ------------------------------------------------------------------- images

    def image(self, name: str) -> Path:
        """Host path of a guest disk image (``leg0``, ``leg1``, ``logdev``)."""
        return self.workdir / f"{name}.img"

    def make_images(self) -> None:
        """Fresh zeroed images: two legs of ``leg_bytes`` and a 1 MiB device for clustered-disk."""
        for name in DISKS:
            path = self.image(name)
            path.unlink(missing_ok=True)
            with path.open("wb") as f:
                f.truncate(self.leg_bytes if name.startswith("leg") else 1 << 20)

    def network_args(self) -> list[str]:
        """The restricted user network with a forward to each logsvc: a guest's only way out."""
        fwd = ",".join(f"guestfwd=tcp:{GUEST_HOST}:{GUEST_PORT + i}-cmd:socat STDIO UNIX-CONNECT:{sock}"
                       for i, sock in enumerate(self.sockets))  # fmt: skip
        return ["-netdev", f"user,id=n0,restrict=on,{fwd}", "-device", "virtio-net-pci,netdev=n0"]

    def disk_args(self) -> list[str]:
        """The disks, each opened so that every guest of the topology can have it at once.

        The drive id is the disk's name, which QMP commands take (:meth:`Boot.throttle_writes`).
        """
        args = []
        for name in DISKS:
            path = str(self.image(name)).replace(",", ",,")
            args += ["-drive", f"file={path},if=none,id={name},format=raw,cache=none,aio=threads,file.locking=off",
                     "-device", f"virtio-blk-pci,drive={name},share-rw=on"]  # fmt: skip
        return args

    def qemu_args(self, qmp: Path) -> list[str]:
        """The network (:meth:`network_args`), the disks (:meth:`disk_args`), a QMP socket."""
        return [*self.network_args(), *self.disk_args(), "-qmp", f"unix:{qmp},server=on,wait=off"]

    # -------------------------------------------------------------------- guest

    def boot(self, name: str, script: Path | str, *, env: Mapping[str, str], timeout: float, node: int = 0) -> Boot:
        """Boot node ``node`` on the images in a background thread; returns at once.

        Several boots may run at once, of different nodes (a node runs one boot at a
        time: its name and bridge are its own). The guest script gets ``DMULOG_LOGSVC``,
        ``DMULOG_NODE`` (``node-<node>``) and ``DMULOG_NODE_INDEX`` besides ``env``.
        """
        results = self.workdir / name
        if results.exists():
            shutil.rmtree(results)
        results.mkdir(parents=True)
        running = [b.name for b in self._boots if b.node == node_name(node) and b.alive()]
        if running:
            raise TopologyError(f"{node_name(node)} is still running as {running[0]}")
        full_env = {"DMULOG_LOGSVC": self.guest_logsvc, "DMULOG_NODE": node_name(node),
                    "DMULOG_NODE_INDEX": str(node), **env}  # fmt: skip
        box: dict[str, object] = {}
        qmp = self._sockdir / f"qmp-{next(self._qmp_ids)}.sock"

        def run() -> None:
            try:
                box["run"] = run_guest(
                    script, timeout=timeout, results_dir=results, qemu_extra=self.qemu_args(qmp),
                    memory=self.memory, env=full_env, cwd=REPO,
                )  # fmt: skip
            except BaseException as e:  # noqa: BLE001 - handed to the joining thread
                box["error"] = e

        thread = threading.Thread(target=run, name=f"guest-{name}", daemon=True)
        boot = Boot(name=name, index=node, node=node_name(node), results_dir=results, started=time.monotonic(),
                    qmp_socket=qmp, _thread=thread, _box=box)  # fmt: skip
        self._boots.append(boot)
        thread.start()
        return boot

    def reboot(self, boot: Boot, name: str, script: Path | str, *, env: Mapping[str, str], timeout: float) -> Boot:
        """Crash ``boot`` if it still runs, then boot its node again on the same images (a new boot id)."""
        if boot.alive():
            with contextlib.suppress(OSError):
                boot.thaw()
            boot.crash()
        boot.join(60)
        return self.boot(name, script, env=env, timeout=timeout, node=boot.index)

    # -------------------------------------------------------------------- state

    def log_state(self, uuid: str, timeout: float = 30) -> pb.GetLogStateResponse:
        """GetLogState of ``uuid`` from the host logsvc (replica 0)."""
        with grpc.insecure_channel(f"unix:{self.sockets[0]}") as channel:
            stub = pb_grpc.DirtyLogStub(channel)
            return stub.GetLogState(pb.GetLogStateRequest(uuid=uuid), timeout=timeout, wait_for_ready=True)
