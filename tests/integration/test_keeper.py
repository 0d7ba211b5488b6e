"""``dmulog bridge --respawn`` on this host's real NETLINK_CONNECTOR socket.

The host kernel has no dm-log-userspace, but it has the connector: a second
netlink socket can unicast to the bridge's port, which is enough to show that
a datagram queued while the bridge is dead is read by the next one (and
ignored there, as it does not come from the kernel).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge import host
from bridge.netlink import NETLINK_CONNECTOR, STANDBY_FD_ENV, open_kernel_socket
from bridge.wire import CN_IDX_DM
from harness.servers import ServiceProcess, start_bridge

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="joining the connector group needs root")


@pytest.fixture
def keeper(tmp_path: Path) -> Iterator[ServiceProcess]:
    """A running ``dmulog bridge --respawn`` and its JSON log; killed at the end whatever happened."""
    if host.other_listeners(CN_IDX_DM, 0):
        pytest.skip("another process on this host listens to connector group 7")
    k = start_bridge(tmp_path / "bridge.log", f"unix:{tmp_path}/no-logsvc.sock", "--respawn",
                     "--journal-dir", str(tmp_path / "inflight"), new_session=True)  # fmt: skip
    yield k
    with contextlib.suppress(ProcessLookupError):
        os.killpg(k.proc.pid, signal.SIGKILL)  # the keeper and its bridges
    k.proc.wait()
    deadline = time.monotonic() + 10
    while host.other_listeners(CN_IDX_DM, 0) and time.monotonic() < deadline:
        time.sleep(0.05)  # the bridges' sockets close as they die


def test_a_killed_bridge_is_replaced_on_the_same_socket_and_queued_datagrams_survive(keeper: ServiceProcess) -> None:
    """SIGKILL of the bridge: the keeper starts another on the same port, which reads what was sent meanwhile."""
    [first] = keeper.wait_for("bridge_listening", 1)
    [started] = keeper.wait_for("keeper_started_bridge", 1)
    keeper.wait_for("keeper_started_standby", 1)
    assert True is first["inherited"]
    assert "stream" == first["transport"]

    os.kill(int(started["pid"]), signal.SIGKILL)
    sender = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
    sender.bind((0, 0))
    sender.sendto(b"\0" * 40, (int(first["port_id"]), 0))

    second = keeper.wait_for("bridge_listening", 2)[1]
    ignored = keeper.wait_for("datagram_not_from_kernel", 1)
    assert second["port_id"] == first["port_id"]
    # The standby took over: it was started before the kill, so no start-up time was lost.
    [standby] = keeper.events("keeper_started_standby")[:1]
    assert standby["pid"] == keeper.events("keeper_started_bridge")[1]["pid"]
    assert sender.getsockname()[0] == ignored[0]["sender_port"]
    assert 1 == len(keeper.events("keeper_bridge_exited"))
    sender.close()


def test_the_first_standby_starts_once_the_first_bridge_serves(keeper: ServiceProcess) -> None:
    """Not beside it: two bridges importing at once would slow the start the node's mirrors wait for."""
    [standby] = keeper.wait_for("keeper_started_standby", 1)
    keeper.wait_for("bridge_listening", 1)

    assert True is standby["joined"]
    assert [int(keeper.events("bridge_listening")[0]["port_id"])] == host.other_listeners(CN_IDX_DM, 0)


def test_sigterm_stops_keeper_and_bridge(keeper: ServiceProcess) -> None:
    """SIGTERM to the keeper stops its bridge and itself, with status 0, and frees the host lock."""
    keeper.wait_for("bridge_listening", 1)
    [started] = keeper.wait_for("keeper_started_bridge", 1)

    keeper.proc.send_signal(signal.SIGTERM)

    assert 0 == keeper.proc.wait(timeout=20), keeper.text()
    assert not Path(f"/proc/{started['pid']}").exists() or "Z" in Path(f"/proc/{started['pid']}/stat").read_text()
    assert 1 == len(keeper.events("bridge_stopping"))
    host.hold_instance_lock().close()


def test_a_bridge_joins_the_connector_group_only_once_it_reads(tmp_path: Path) -> None:
    """A started bridge waiting for its turn leaves the socket out of group 7; serving, it joins.

    Until a socket is in the group the kernel finds no listener and retries its
    CTR every 2 s; a request queued on a socket that nobody reads yet would wait
    out the kernel's 15 s instead. The bridge gets the socket as the keeper
    passes it (LISTEN_FDS on descriptor 3, the go-pipe on 4), opened here.
    """
    if host.other_listeners(CN_IDX_DM, 0):
        pytest.skip("another process on this host listens to connector group 7")
    sock = open_kernel_socket()
    go_read, go_write = os.pipe()
    log = tmp_path / "bridge.log"
    command = (f'LISTEN_PID=$$ exec "$0" -m dmulog --log-format json bridge --logsvc unix:{tmp_path}/none.sock '
               f'--journal-dir {tmp_path}/inflight 3<&{sock.fileno()} 4<&{go_read}')  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(["bash", "-c", command, sys.executable], pass_fds=(sock.fileno(), go_read),
                                env={**os.environ, "LISTEN_FDS": "1", STANDBY_FD_ENV: "4"},
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out)  # fmt: skip
    os.close(go_read)
    bridge = ServiceProcess(proc, log)
    try:
        bridge.wait_for("standby_ready")
        assert [] == host.other_listeners(CN_IDX_DM, 0), "in the group before the bridge reads"

        os.write(go_write, b"1")
        [listening] = bridge.wait_for("bridge_listening")

        assert sock.port_id == listening["port_id"]
        assert [sock.port_id] == host.other_listeners(CN_IDX_DM, 0)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        os.close(go_write)
        sock.close()
