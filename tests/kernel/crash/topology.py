"""A topology that survives a node crash: services on the host, kernel and bridge in a guest.

Everything whose state must outlive the node runs on the host as a subprocess: a real
``redis-server`` (AOF, ``appendfsync always``) and one or more ``dmulog logsvc``
replicas serving gRPC on Unix sockets. The node is a qemu guest (:mod:`tests.kernel.vm`)
running the real kernel and ``dmulog bridge --logsvc 10.0.2.100:7000 --node crashnode``
(with two replicas ``--logsvc ipv4:10.0.2.100:7000,10.0.2.100:7001``). The guest reaches
logsvc only through qemu user-mode networking with ``restrict=on`` and one ``guestfwd``
rule per replica that runs ``socat STDIO UNIX-CONNECT:<logsvc socket>`` for each guest
connection; there is no other network.

The mirror legs are host image files attached as virtio disks with ``cache=none`` and
``aio=threads``, so every write the guest saw complete is in the host file even when
qemu is killed. "Crash the node" is SIGKILL of qemu (by its pidfile) mid-I/O; "restart
the node" is a new boot on the same images: a new boot id, hence a new node
incarnation for the log, under the same node name.

Typical use::

    with Topology(workdir) as topo:
        topo.make_images()
        boot = topo.boot("crash-1", SCRIPT, env={...}, timeout=240)
        boot.wait_for(lambda: boot.count_lines("writes.log", "D ") >= 20, 120)
        boot.crash()
        run = boot.join()
        state = topo.log_state(uuid)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import grpc

from dmulog.v1 import dmulog_pb2 as pb
from dmulog.v1 import dmulog_pb2_grpc as pb_grpc
from tests.kernel.vm import GuestRun, run_guest
from tests.servers import RedisProcess

__all__ = ["NODE", "REPO", "Boot", "Topology", "TopologyError"]

REPO = Path(__file__).resolve().parents[3]
VENV = Path(sys.executable).parent.parent
DMULOG = VENV / "bin" / "dmulog"
#: Where the guest finds logsvc replica 0 (replica i: port 7000 + i): an address that
#: exists only inside qemu's user network.
GUEST_HOST, GUEST_PORT = "10.0.2.100", 7000
#: The node's name: the same for every boot, so a restart is a new incarnation of one node.
NODE = "crashnode"
#: Guest disks, in the order the guest sees them (/dev/vda, /dev/vdb, /dev/vdc).
DISKS = ("leg0", "leg1", "logdev")


class TopologyError(RuntimeError):
    """A host service or the guest did not come up, or a wait timed out."""


def _wait(cond: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TopologyError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclasses.dataclass
class Boot:
    """One boot of the node, running in a background thread.

    Attributes:
        name: label, also the results directory's name.
        results_dir: the guest's ``/results``.
        started: monotonic time qemu was started.
        qmp_socket: qemu's QMP socket (see :meth:`qmp`).
    """

    name: str
    results_dir: Path
    started: float
    qmp_socket: Path
    _thread: threading.Thread
    _box: dict[str, object]
    crashed_at: float | None = None

    def alive(self) -> bool:
        """Whether qemu is still running."""
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

    def crash(self) -> None:
        """SIGKILL qemu itself (by its pidfile): the node dies mid-I/O, nothing is flushed."""
        pid = int(self.path("qemu.pid").read_text().strip())
        self.crashed_at = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def join(self, timeout: float | None = None) -> GuestRun:
        """Wait for the boot to end; return what :func:`run_guest` returned."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TopologyError(f"{self.name}: run_guest did not return")
        if "error" in self._box:
            raise self._box["error"]  # type: ignore[misc]
        return self._box["run"]  # type: ignore[return-value]


class Topology:
    """Host redis-server + host logsvc + leg images; boots guests against them.

    Args:
        workdir: host directory for images, Redis data, logs and guest results (kept).
        leg_bytes: size of each leg image.
        memory: guest RAM.
        replicas: logsvc processes, all on the same Redis.
        trace: record every Redis command (``redis-cli monitor``) for diagnosing a
            failure; MONITOR slows Redis down, so a benchmark turns it off.
    """

    def __init__(self, workdir: Path, *, leg_bytes: int = 32 << 20, memory: str = "1G", replicas: int = 1,
                 trace: bool = True):  # fmt: skip
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.leg_bytes = leg_bytes
        self.memory = memory
        self.redis = RedisProcess(self.workdir / "redis")
        # A short private directory for the socket (sun_path is 108 bytes) with no comma
        # in it (the guestfwd option would split there).
        self._sockdir = Path(tempfile.mkdtemp(prefix="dmulog-crash-"))
        self.sockets = [self._sockdir / f"logsvc{i}.sock" for i in range(replicas)]
        self.logsvcs: list[subprocess.Popen[bytes] | None] = [None] * replicas
        self._logsvc_logs = [self.workdir / f"logsvc{i}.log" for i in range(replicas)]
        #: Every command Redis executes (``redis-cli monitor``), for diagnosing a failure.
        self.trace = self.workdir / "redis-monitor.txt"
        self._tracing = trace
        self._monitor: subprocess.Popen[bytes] | None = None

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> Topology:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def guest_logsvc(self) -> str:
        """The bridge's ``--logsvc`` inside the guest: every replica."""
        if len(self.sockets) == 1:
            return f"{GUEST_HOST}:{GUEST_PORT}"
        return "ipv4:" + ",".join(f"{GUEST_HOST}:{GUEST_PORT + i}" for i in range(len(self.sockets)))

    def start(self) -> None:
        """Start redis-server (and its trace), then every logsvc replica."""
        self.start_redis()
        for i in range(len(self.sockets)):
            self.start_logsvc(i)

    def close(self) -> None:
        """Stop logsvc and Redis; remove the socket directory (the workdir is kept)."""
        for i in range(len(self.sockets)):
            self.kill_logsvc(i)
        self.kill_redis()
        shutil.rmtree(self._sockdir, ignore_errors=True)

    def ensure_running(self) -> None:
        """Start whichever of Redis and logsvc is not running (after a failed fault injection)."""
        if self.redis.proc is None or self.redis.proc.poll() is not None:
            self.start_redis()
        for i, proc in enumerate(self.logsvcs):
            if proc is None or proc.poll() is not None:
                self.start_logsvc(i)

    # ------------------------------------------------------------------- logsvc

    def start_logsvc(self, replica: int = 0, timeout: float = 30) -> None:
        """Start replica ``replica``: ``dmulog logsvc --listen unix:<socket> --redis <url>``; wait until it listens."""
        running = self.logsvcs[replica]
        if running is not None and running.poll() is None:
            raise TopologyError(f"logsvc {replica} already running")
        before = self._listening_lines(replica)
        with self._logsvc_logs[replica].open("ab") as log:
            proc = subprocess.Popen(
                [str(DMULOG), "--log-format", "json", "logsvc", "--listen", f"unix:{self.sockets[replica]}",
                 "--redis", self.redis.url],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=REPO,
            )  # fmt: skip
        self.logsvcs[replica] = proc

        def up() -> bool:
            if proc.poll() is not None:
                raise TopologyError(f"logsvc exited with {proc.returncode}; see {self._logsvc_logs[replica]}")
            return self._listening_lines(replica) > before

        _wait(up, timeout, f"logsvc {replica} listening")

    def _listening_lines(self, replica: int) -> int:
        try:
            return self._logsvc_logs[replica].read_text(errors="replace").count('"logsvc_listening"')
        except FileNotFoundError:
            return 0

    def kill_logsvc(self, replica: int = 0) -> None:
        """SIGKILL replica ``replica`` (a crash, not a shutdown)."""
        proc = self.logsvcs[replica]
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    # -------------------------------------------------------------------- redis

    def kill_redis(self) -> None:
        """SIGKILL redis-server: whatever it acknowledged is in its AOF (appendfsync always)."""
        self.redis.kill()
        self._stop_monitor()

    def start_redis(self) -> None:
        """Start redis-server (again: same port and data directory, so it replays its AOF)."""
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
        """The restricted user network with a forward to each logsvc: the guest's only way out."""
        fwd = ",".join(f"guestfwd=tcp:{GUEST_HOST}:{GUEST_PORT + i}-cmd:socat STDIO UNIX-CONNECT:{sock}"
                       for i, sock in enumerate(self.sockets))  # fmt: skip
        return ["-netdev", f"user,id=n0,restrict=on,{fwd}", "-device", "virtio-net-pci,netdev=n0"]

    def qemu_args(self, qmp: Path) -> list[str]:
        """The network (:meth:`network_args`), the three disks, a QMP socket."""
        args = self.network_args()
        for name in DISKS:
            path = str(self.image(name)).replace(",", ",,")
            args += ["-drive", f"file={path},if=virtio,format=raw,cache=none,aio=threads,id={name}"]
        return [*args, "-qmp", f"unix:{qmp},server=on,wait=off"]

    # -------------------------------------------------------------------- guest

    def boot(self, name: str, script: Path | str, *, env: Mapping[str, str], timeout: float) -> Boot:
        """Boot a guest on the images in a background thread; returns at once.

        The guest script gets ``DMULOG_VENV``, ``DMULOG_LOGSVC`` and ``DMULOG_NODE`` besides
        ``env``, and runs from the repository root.
        """
        results = self.workdir / name
        if results.exists():
            shutil.rmtree(results)
        results.mkdir(parents=True)
        full_env = {"DMULOG_VENV": str(VENV), "DMULOG_LOGSVC": self.guest_logsvc, "DMULOG_NODE": NODE, **env}
        box: dict[str, object] = {}
        qmp = self._sockdir / f"qmp-{len(list(self._sockdir.glob('qmp-*')))}.sock"

        def run() -> None:
            try:
                box["run"] = run_guest(
                    script, timeout=timeout, results_dir=results, qemu_extra=self.qemu_args(qmp),
                    memory=self.memory, env=full_env, cwd=REPO,
                )  # fmt: skip
            except BaseException as e:  # noqa: BLE001 - handed to the joining thread
                box["error"] = e

        thread = threading.Thread(target=run, name=f"guest-{name}", daemon=True)
        boot = Boot(name=name, results_dir=results, started=time.monotonic(), qmp_socket=qmp, _thread=thread, _box=box)
        thread.start()
        return boot

    # -------------------------------------------------------------------- state

    def log_state(self, uuid: str, timeout: float = 30) -> pb.GetLogStateResponse:
        """GetLogState of ``uuid`` from the host logsvc (replica 0)."""
        with grpc.insecure_channel(f"unix:{self.sockets[0]}") as channel:
            stub = pb_grpc.DirtyLogStub(channel)
            return stub.GetLogState(pb.GetLogStateRequest(uuid=uuid), timeout=timeout, wait_for_ready=True)
