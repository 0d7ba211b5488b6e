"""Least privilege on the real kernel: what the bridge needs, at which moment, and that it keeps no more.

One boot. First a probe (this module, run in the guest as ``python -m
tests.kernel.test_privileges probe LEG0 LEG1``) does each privileged step of
the bridge in a child process that dropped capabilities with the bridge's own
code (bridge/privileges.py) and reports what failed with which errno:

* ``netlink``: open, SO_RCVBUFFORCE, bind, join group 7; and on a socket joined
  beforehand, leave by NETLINK_DROP_MEMBERSHIP, else by binding again with no
  groups;
* ``reply``: the probe is the log server of a clustered-core mirror ``p`` it
  creates (harness/responder.py answers); three of the kernel's requests are
  answered each by a child with other capabilities. A reply is taken when the
  kernel's next request follows, dropped when none comes within ``WINDOW`` s
  (the kernel still waits for it: the probe then answers again with every
  capability, and the next one comes). CTR is followed by GET_REGION_SIZE
  inside the kernel itself, so that verdict needs no userspace to go on;
* ``dm``: the device-mapper ioctl (DM_VERSION) and ``dmsetup suspend``/``resume``
  of that mirror, as the bridge's fence runs them.

Then a socket in a new network namespace: it joins, but reaches no kernel
(hostNetwork). Then the bridge itself: it holds exactly what bridge/privileges.py says, in
every thread, with no_new_privs; it serves a ``dmulog`` mirror; and it fences
itself with what it kept (logsvc frozen: no renewal gets through, the bridge
suspends the mirror with its own dmsetup, and resumes it once logsvc is back).
A bridge started without CAP_SYS_ADMIN still refuses to start, naming it. Last,
``--respawn``: the keeper, its bridge and the standby hold what they should.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.netlink import NETLINK_ADD_MEMBERSHIP, NETLINK_CONNECTOR, NETLINK_DROP_MEMBERSHIP, RECV_BUFFER, SOL_NETLINK
from bridge.privileges import BRIDGE, CAP_NAMES, KEEPER, CapSets, Keep, keep_only, mask
from bridge.wire import CN_IDX_DM
from harness.guest import GuestRun, run_guest
from harness.responder import Responder, encode_reply, parse_request, serve

pytestmark = pytest.mark.kernel

#: Seconds a probe waits for the kernel's next request before it calls a reply dropped (the kernel waits 15).
WINDOW = 8.0
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
#: _IOWR(0xfd, DM_VERSION_CMD, struct dm_ioctl): struct dm_ioctl is 312 bytes.
DM_IOCTL_SIZE = 312
DM_VERSION = (3 << 30) | (DM_IOCTL_SIZE << 16) | (0xFD << 8)
ALL = frozenset(CAP_NAMES)

GUEST = r"""#!/bin/bash
. harness/guest/lib.sh
# caps_of PID NAME: the capability lines of every thread of PID, one file a thread.
caps_of() {
  for t in /proc/$1/task/*; do grep -E '^(Cap|NoNewPrivs)' $t/status > "$R/caps-$2-${t##*/}.txt"; done
}
# pid_of EVENT: the pid field of the first EVENT line in $R/bridge.log.
pid_of() { grep "\"$1\"" $R/bridge.log | head -1 | sed 's/.*"pid": \([0-9]*\).*/\1/'; }
# to_kernel [unshare ARGS]: open, bind, join group 7 and send one (empty) message to the kernel; the step
# that failed and its errno, or ok.
to_kernel() {
  "$@" python -c 'import errno, socket, sys
s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 11)
for step, call in (("bind", lambda: s.bind((0, 0))), ("join", lambda: s.setsockopt(270, 1, 7)),
                   ("send", lambda: s.sendto(bytes(36), (0, 0)))):
    try:
        call()
    except OSError as e:
        sys.exit(f"{step} {errno.errorcode[e.errno]}")
print("ok")' 2>&1
}

# logsvc and a bridge without CAP_SYS_ADMIN start meanwhile (neither opens a netlink socket).
dmulog --log-format json logsvc --listen "unix:$SOCK" --state-dir /tmp/dmulog-state --lease-ttl 10 \
  >> $R/logsvc.log 2>&1 &
LOGSVC_PID=$!
( setpriv --bounding-set=-sys_admin dmulog bridge --logsvc "unix:$SOCK" > $R/missing.txt 2>&1
  echo $? > /tmp/missing.rc ) &

make_legs
timeout 300 python -m tests.kernel.test_privileges probe $L0 $L1 >> $R/probe.jsonl 2>> $R/probe.err; note probe_rc $?
note initial_netns "$(to_kernel)"
note new_netns "$(to_kernel unshare -n)"

wait_log /tmp/missing.rc . 120; note missing_rc "$(cat /tmp/missing.rc)"
wait_log $R/logsvc.log logsvc_listening 120 || die "logsvc did not start"
start_bridge
caps_of $BRIDGE_PID bridge
$T dmsetup create m --table "$(mirror_table $SECTORS "$(log_words privileges dmulog "$REGION nosync")" "$L0 0 $L1 0")"
note create_rc $?
dmsetup mknodes m
wait_sync m 180
write m 4k 8 100
note served "$(dmsetup status m)"
kill -STOP $LOGSVC_PID
wait_log $R/bridge.log '"self_fenced"' 90; note fenced $?
note fenced_state "$(dmsetup info -c --noheadings -o suspended m)"
kill -CONT $LOGSVC_PID
wait_log $R/bridge.log self_fence_lifted 120; note lifted $?
note lifted_state "$(dmsetup info -c --noheadings -o suspended m)"
write m 4k 8 2000
sync
note legs_identical "$(legs_identical)"
caps_of $BRIDGE_PID bridge-after
$T dmsetup remove m; note remove_rc $?
kill $BRIDGE_PID; wait $BRIDGE_PID; note bridge_rc $?

mv $R/bridge.log $R/bridge-plain.log
RESPAWN=1 start_bridge
wait_standby 180 || die "no standby"
caps_of $BRIDGE_PID keeper
caps_of "$(pid_of keeper_started_bridge)" respawned
caps_of "$(pid_of keeper_started_standby)" standby
kill $BRIDGE_PID; wait $BRIDGE_PID; note keeper_rc $?
kill $LOGSVC_PID; wait $LOGSVC_PID
note done yes
"""


# ------------------------------------------------------------------ the probe, in the guest


def _say(probe: str, mode: str, step: str, ok: bool, err: str | None = None, **more: Any) -> None:
    """One result line on stdout (os.write: unbuffered, so nothing is written twice across a fork)."""
    line = json.dumps({"probe": probe, "mode": mode, "step": step, "ok": ok, "errno": err, **more})
    os.write(1, (line + "\n").encode())


def _drop(mode: str) -> None:
    """``full``, ``without:CAP_X`` (every capability but one) or ``only:bridge|keeper|none``."""
    kind, _, arg = mode.partition(":")
    if kind == "full":
        return
    if kind == "without":
        keep = Keep(ALL - {arg}, ALL - {arg})
    else:
        keep = {"bridge": BRIDGE, "keeper": KEEPER, "none": Keep(frozenset(), frozenset())}[arg]
    if keep_only(keep, f"probe {mode}") is None:
        raise SystemExit(f"probe {mode}: the drop failed")


def _step(probe: str, mode: str, step: str, call: Callable[[], Any], **more: Any) -> Any:
    """Run one step; report it (with its errno if it failed); its value, or None."""
    try:
        value = call()
    except OSError as e:
        _say(probe, mode, step, False, errno.errorcode.get(e.errno or 0, str(e.errno)), **more)
        return None
    _say(probe, mode, step, True, **more)
    return value if value is not None else True


def _member(port: int) -> bool:
    """Whether the NETLINK_CONNECTOR socket of ``port`` is in group 7 (/proc/net/netlink, its Groups mask)."""
    for line in Path("/proc/net/netlink").read_text().splitlines()[1:]:
        cols = line.split()
        if cols[1] == str(NETLINK_CONNECTOR) and cols[2] == str(port):
            return bool(int(cols[3], 16) >> (CN_IDX_DM - 1) & 1)
    return False


def _in_child(run: Callable[[], None]) -> int:
    """``run`` in a forked child (the drop is for good); the child's exit status."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            run()
        except BaseException as e:  # noqa: BLE001 (a child must never return into the parent's loop)
            os.write(2, f"probe child: {e!r}\n".encode())
            code = 1
        os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _netlink_from_start(mode: str) -> None:
    _drop(mode)
    sock = _step("netlink", mode, "open", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM,
                                                                  NETLINK_CONNECTOR))  # fmt: skip
    if sock is None:
        return
    forced = _step("netlink", mode, "rcvbufforce", lambda: sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE,
                                                                           RECV_BUFFER))  # fmt: skip
    if forced is None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
    _say("netlink", mode, "rcvbuf", True, bytes=sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
    if _step("netlink", mode, "bind", lambda: sock.bind((0, 0))) is None:
        return
    port = sock.getsockname()[0]
    joined = _step("netlink", mode, "join", lambda: sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, CN_IDX_DM))
    _say("netlink", mode, "member_after_join", _member(port) == bool(joined), member=_member(port))
    sock.close()


def _netlink_leave(mode: str, sock: socket.socket) -> None:
    _drop(mode)
    port = sock.getsockname()[0]
    _step("netlink", mode, "leave", lambda: sock.setsockopt(SOL_NETLINK, NETLINK_DROP_MEMBERSHIP, CN_IDX_DM))
    left = not _member(port)
    _say("netlink", mode, "left", left)
    if not left:
        _step("netlink", mode, "leave_by_rebind", lambda: sock.bind((port, 0)))
        _say("netlink", mode, "left_by_rebind", not _member(port))


def probe_netlink() -> None:
    """Each moment of the socket's life, with each set of capabilities."""
    for mode in ("full", "without:CAP_NET_ADMIN", "without:CAP_SYS_ADMIN", "only:bridge", "only:keeper", "only:none"):
        _in_child(lambda: _netlink_from_start(mode))  # noqa: B023 (run before the loop moves on)
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        sock.bind((0, 0))
        sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, CN_IDX_DM)
        _in_child(lambda: _netlink_leave(mode, sock))  # noqa: B023
        sock.close()


def _next_request(sock: socket.socket, timeout: float) -> bool:
    """Whether a datagram is queued within ``timeout`` s (it stays queued)."""
    return bool(select.select([sock], [], [], timeout)[0])


def probe_reply(table: str) -> int:
    """Be the log of mirror ``p`` (``table``); answer three of its requests from children with other capabilities.

    Returns the pid of the child that answers the rest of the mirror's requests, with every capability, until killed.
    """
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
    sock.bind((0, 0))
    sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, CN_IDX_DM)
    port, responder = sock.getsockname()[0], Responder()
    create = subprocess.Popen(["dmsetup", "create", "p", "--table", table])
    for mode in ("without:CAP_SYS_ADMIN", "only:bridge", "without:CAP_NET_ADMIN"):
        if not _next_request(sock, 120):
            raise SystemExit("probe reply: no request from the kernel")
        req = parse_request(sock.recv(65536))
        assert req is not None
        error, payload = responder.answer(req)
        reply = encode_reply(req, error, payload, port)

        def answer(mode: str = mode, name: str = req.type_name, reply: bytes = reply) -> None:
            _drop(mode)
            sent = _step("reply", mode, f"send {name}", lambda: sock.send(reply))
            taken = sent is not None and _next_request(sock, WINDOW)
            _say("reply", mode, f"taken {name}", taken)
            if not taken:
                raise SystemExit(3)

        if _in_child(answer) != 0:
            sock.send(reply)
            _say("reply", "full", f"taken {req.type_name} again", _next_request(sock, WINDOW))
    server = os.fork()
    if server == 0:  # a child answers the rest, with every capability, until killed
        serve(sock, responder, None, False)
        os._exit(0)
    sock.close()
    if create.wait(timeout=120) != 0:
        raise SystemExit("probe reply: dmsetup create failed")
    return server


def _dmsetup(*args: str) -> tuple[int, str]:
    done = subprocess.run(["dmsetup", *args], capture_output=True, text=True, timeout=120)
    return done.returncode, (done.stdout + done.stderr).strip()[-300:]


def _dm(mode: str, name: str) -> None:
    _drop(mode)

    def version() -> None:
        with open("/dev/mapper/control", "rb+", buffering=0) as control:
            fcntl.ioctl(control, DM_VERSION, bytearray(struct.pack("<3I2I", 4, 0, 0, DM_IOCTL_SIZE, DM_IOCTL_SIZE)
                                                       .ljust(DM_IOCTL_SIZE, b"\0")))  # fmt: skip

    _step("dm", mode, "ioctl DM_VERSION", version)
    for args in (("info", "-c", "--noheadings", "-o", "name,suspended"), ("suspend", name), ("resume", name)):
        rc, out = _dmsetup(*args)
        _say("dm", mode, f"dmsetup {args[0]}", rc == 0, rc=rc, output=out)


def probe_dm(name: str) -> None:
    """The device-mapper ioctl and the fence's dmsetup calls, with each set of capabilities."""
    for mode in ("without:CAP_SYS_ADMIN", "only:bridge", "only:keeper"):
        _in_child(lambda: _dm(mode, name))  # noqa: B023


def main(argv: list[str]) -> int:
    """``probe LEG0 LEG1``: every probe, in one process (Python starts slowly in the guest); JSON lines on stdout."""
    if len(argv) != 3 or argv[0] != "probe":
        print(main.__doc__, file=sys.stderr)
        return 2
    probe_netlink()
    server = probe_reply(f"0 16384 mirror userspace 3 probe clustered-core 1024 2 {argv[1]} 0 {argv[2]} 0")
    try:
        probe_dm("p")
        rc, out = _dmsetup("remove", "p")
        if rc != 0:
            raise SystemExit(f"probe: dmsetup remove p: {out}")
    finally:
        os.kill(server, signal.SIGKILL)
        os.waitpid(server, 0)
    return 0


# ------------------------------------------------------------------ the test, on the host


@pytest.fixture(scope="module")
def boot(tmp_path_factory: pytest.TempPathFactory) -> GuestRun:
    """The one boot: probes, then the bridge, then the keeper."""
    return run_guest(GUEST, timeout=900, memory="1500M", results_dir=tmp_path_factory.mktemp("privileges"))


def _results(run: GuestRun) -> dict[tuple[str, str, str], dict[str, Any]]:
    path = run.results_dir / "probe.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return {(r["probe"], r["mode"], r["step"]): r for r in map(json.loads, lines)}


def _held(run: GuestRun, name: str) -> list[CapSets]:
    files = sorted(run.results_dir.glob(f"caps-{name}-*.txt"))
    assert files, f"no capabilities read for {name}"
    return [CapSets.from_status(f.read_text()) for f in files]


def _outcome(r: dict[tuple[str, str, str], dict[str, Any]], probe: str, mode: str, step: str) -> tuple[bool, Any]:
    got = r.get((probe, mode, step))
    assert got is not None, (probe, mode, step, sorted(r))
    return got["ok"], got["errno"]


def test_the_boot_completes(boot: GuestRun) -> None:
    """Every step ran, and the kernel logged nothing alarming: no reply was lost for good."""
    assert 0 == boot.rc, boot.describe()
    assert ("0", "yes") == (boot.outcome().get("probe_rc"), boot.outcome().get("done")), boot.describe()
    assert [] == boot.problems


def test_the_socket_needs_net_admin_only_to_join_and_leave(boot: GuestRun) -> None:
    """Opening and binding need nothing; joining and leaving group 7 need CAP_NET_ADMIN (EPERM), as SO_RCVBUFFORCE."""
    r = _results(boot)
    for mode in ("only:none", "without:CAP_NET_ADMIN", "without:CAP_SYS_ADMIN", "only:bridge"):
        assert (True, None) == _outcome(r, "netlink", mode, "open") == _outcome(r, "netlink", mode, "bind"), mode
    for mode in ("only:none", "without:CAP_NET_ADMIN"):
        assert (False, "EPERM") == _outcome(r, "netlink", mode, "join"), mode
        assert (False, "EPERM") == _outcome(r, "netlink", mode, "rcvbufforce"), mode
        assert (False, "EPERM") == _outcome(r, "netlink", mode, "leave"), mode
        # Binding again without groups leaves the group, and needs nothing.
        assert (True, None) == _outcome(r, "netlink", mode, "leave_by_rebind") == _outcome(
            r, "netlink", mode, "left_by_rebind"), mode  # fmt: skip
    for mode in ("full", "without:CAP_SYS_ADMIN", "only:bridge", "only:keeper"):
        for step in ("rcvbufforce", "join", "member_after_join", "leave", "left"):
            assert (True, None) == _outcome(r, "netlink", mode, step), (mode, step)
    forced, capped = r[("netlink", "only:bridge", "rcvbuf")]["bytes"], r[("netlink", "only:none", "rcvbuf")]["bytes"]
    assert forced >= 2 * RECV_BUFFER > capped, (forced, capped)


def test_the_kernel_is_reached_from_the_initial_network_namespace_only(boot: GuestRun) -> None:
    """A socket in another namespace opens and joins, but nothing there takes a message to the kernel (hostNetwork)."""
    out = boot.outcome()
    assert ("ok", "send ECONNREFUSED") == (out.get("initial_netns"), out.get("new_netns")), out


def test_the_kernel_takes_replies_only_from_a_sender_with_sys_admin(boot: GuestRun) -> None:
    """Without CAP_SYS_ADMIN the send succeeds and the kernel drops the reply; with the bridge's set it takes it."""
    r = _results(boot)
    assert (True, None) == _outcome(r, "reply", "without:CAP_SYS_ADMIN", "send CTR")
    assert (False, None) == _outcome(r, "reply", "without:CAP_SYS_ADMIN", "taken CTR")
    assert (True, None) == _outcome(r, "reply", "full", "taken CTR again")
    assert (True, None) == _outcome(r, "reply", "only:bridge", "taken GET_REGION_SIZE")
    [net_admin] = [step for (probe, mode, step) in r if (probe, mode) == ("reply", "without:CAP_NET_ADMIN")
                   and step.startswith("taken ")]  # fmt: skip
    assert (True, None) == _outcome(r, "reply", "without:CAP_NET_ADMIN", net_admin)


def test_device_mapper_needs_sys_admin(boot: GuestRun) -> None:
    """Every dm ioctl needs CAP_SYS_ADMIN (EACCES), so the fence's dmsetup does; with the bridge's set it works."""
    r = _results(boot)
    assert (False, "EACCES") == _outcome(r, "dm", "without:CAP_SYS_ADMIN", "ioctl DM_VERSION")
    assert (False, "EACCES") == _outcome(r, "dm", "only:keeper", "ioctl DM_VERSION")
    for step in ("dmsetup info", "dmsetup suspend"):
        assert not r[("dm", "without:CAP_SYS_ADMIN", step)]["ok"], r[("dm", "without:CAP_SYS_ADMIN", step)]
        assert "Permission denied" in r[("dm", "without:CAP_SYS_ADMIN", step)]["output"]
    for step in ("ioctl DM_VERSION", "dmsetup info", "dmsetup suspend", "dmsetup resume"):
        assert r[("dm", "only:bridge", step)]["ok"], r[("dm", "only:bridge", step)]


def test_a_bridge_without_sys_admin_refuses_to_start(boot: GuestRun) -> None:
    """The check at start still names what is missing, and exits with the permission status."""
    assert "6" == boot.outcome().get("missing_rc"), boot.describe()
    assert "needs CAP_SYS_ADMIN" in (boot.results_dir / "missing.txt").read_text()


def _expected(keep: Keep, bounding: frozenset[str]) -> CapSets:
    handed = mask(keep.for_exec)
    return CapSets(effective=mask(keep.effective), permitted=mask(keep.permitted), inheritable=handed,
                   bounding=mask(bounding), ambient=handed, no_new_privs=True)  # fmt: skip


def test_the_bridge_holds_only_what_it_kept_in_every_thread(boot: GuestRun) -> None:
    """CapEff = CapPrm = {NET_ADMIN, SYS_ADMIN}, CapInh = CapAmb = CapBnd = {SYS_ADMIN}, NoNewPrivs 1, to the end."""
    want = _expected(BRIDGE, BRIDGE.for_exec)
    for name in ("bridge", "bridge-after"):
        held = _held(boot, name)
        assert len(held) > 1, "the gRPC client's threads are there too"
        assert all(want == h for h in held), (name, [h.described() for h in held])
    log = (boot.results_dir / "bridge-plain.log").read_text()
    [dropped] = [json.loads(line) for line in log.splitlines() if '"privileges_dropped"' in line]
    assert (True, 1) == (dropped["as_planned"], dropped["threads"]), dropped
    assert "CAP_SYS_MODULE" in dropped["dropped"] and set(dropped["kept"]) == BRIDGE.permitted


def test_the_bridge_serves_and_fences_itself_with_what_it_kept(boot: GuestRun) -> None:
    """The mirror resyncs and is written; logsvc frozen, the bridge suspends it, and resumes it after."""
    out = boot.outcome()
    assert "0" == out.get("create_rc") and re.fullmatch(r"0 65536 mirror 2 7:\d+ 7:\d+ 64/64 1 AA 1 dmulog",
                                                         out.get("served", "")), out  # fmt: skip
    assert ("0", "Suspended", "0", "Active") == (out.get("fenced"), out.get("fenced_state"), out.get("lifted"),
                                                 out.get("lifted_state")), out  # fmt: skip
    assert "yes" == out.get("legs_identical"), out
    log = (boot.results_dir / "bridge-plain.log").read_text().splitlines()
    [fenced] = [json.loads(line) for line in log if '"self_fenced"' in line]
    [lifted] = [json.loads(line) for line in log if '"self_fence_lifted"' in line]
    assert {"m": "suspended"} == fenced["devices"], fenced
    assert (["m"], []) == (lifted["resumed"], lifted["failed"]), lifted
    assert not any('"mirror_not_suspended"' in line or '"mirror_not_resumed"' in line for line in log)


def test_the_keeper_and_its_bridges_hold_what_they_kept(boot: GuestRun) -> None:
    """The keeper: effective NET_ADMIN only, both handed on; its bridges: the bridge's set, bounding as handed."""
    assert [_expected(KEEPER, KEEPER.for_exec)] == _held(boot, "keeper")
    # A respawned bridge has no CAP_SETPCAP to shrink the bounding set the keeper handed it.
    want = _expected(BRIDGE, KEEPER.for_exec)
    for name in ("respawned", "standby"):
        held = _held(boot, name)
        assert all(want == h for h in held), (name, [h.described() for h in held])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
