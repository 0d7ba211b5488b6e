"""A trivial, test-only dm-log-userspace server: every region is always in sync and clean.

Why it exists: (1) to drive the real kernel through the protocol so that its datagrams
can be captured as golden fixtures (``--capture``), and (2) as the "trivial responder"
baseline that the project's benchmarks compare real designs against, so it does as
little per request as a correct server can. It keeps only what the answers need,
per (uuid, luid): the region size and region count parsed from the CTR string.

It answers every request with a full reply (``cn_msg.len = 160 + data_size``), echoing
``dm_ulog_request.seq``, which is what the kernel matches on (protocol.md §1.2):

=====================  ==================================================
CTR                    0, no data (also for a replayed or repeated CTR)
GET_REGION_SIZE        u64 region size from the CTR string
IS_CLEAN, IN_SYNC      s64 1
GET_RESYNC_WORK        {i = 0, r = 0}: nothing to recover
GET_SYNC_COUNT         u64 region_count
STATUS_INFO            "1 clustered-core" plus NUL
STATUS_TABLE           "clustered-core <region_size> " plus NUL (never asked)
IS_REMOTE_RECOVERING   {0, region_count}
everything else        0, no data
=====================  ==================================================

A request for a log it never saw a CTR for gets ``-EINVAL`` (like cmirrord), except
DTR and the suspend/resume calls, which need no state. Besides the standard library it
uses only the bridge's codec (bridge/wire.py) and the table of request types
(dmulog/requests.py), so it speaks exactly the format the bridge does. Needs root
(CAP_NET_ADMIN to join the group, CAP_SYS_ADMIN for the kernel to accept replies) in
the initial network namespace, i.e. run it inside the test VM::

    python -m harness.responder --ready-file /tmp/ready [--capture DIR] [-v]

It counts requests by type and prints the counts to stderr on SIGUSR1 and at exit
(``responder: requests <total>: CTR=1 FLUSH=...``), so a benchmark can read them
between workloads without the cost of a line per request.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import sys
import types
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bridge.netlink import NETLINK_ADD_MEMBERSHIP, NETLINK_CONNECTOR, SOL_NETLINK
from bridge.wire import (
    CN_IDX_DM,
    CN_MSG,
    CN_VAL_DM_USERSPACE_LOG,
    DM_ULOG_REQUEST,
    DM_ULOG_REQUEST_MASK,
    HEADER_SIZE,
    NLMSG_DONE,
    NLMSGHDR,
    REGION_SYNC,
    REMOTE_RECOVERING,
    RESYNC_WORK,
    S64,
    U64,
    RequestType,
)
from dmulog.requests import REQUESTS

REQUEST_TYPES = {int(t): t.name for t in RequestType}
# The instance's lifecycle requests (CTR, DTR, suspend, resume) need no state of the log.
_STATELESS = {s.name for s in REQUESTS if s.lifecycle.ends_latch}


@dataclass(frozen=True)
class Request:
    """One kernel request, decoded; ``raw`` is the datagram exactly as received."""

    raw: bytes
    nlmsg_seq: int
    cn_seq: int
    luid: int
    uuid: bytes
    version: int
    seq: int
    request_type: int
    data: bytes

    @property
    def type_name(self) -> str:
        """``CTR`` ... ``IS_REMOTE_RECOVERING``, or ``TYPE<n>`` for an unknown value."""
        return REQUEST_TYPES.get(self.request_type, f"TYPE{self.request_type}")


@dataclass(frozen=True)
class LogState:
    """All this policy needs to know about one log."""

    region_size: int
    region_count: int


def parse_request(raw: bytes) -> Request | None:
    """Decode a datagram, or None if it is not a dm-log-userspace request."""
    if len(raw) < HEADER_SIZE:
        return None
    _len, _type, _flags, nlmsg_seq, _pid = NLMSGHDR.unpack_from(raw, 0)
    idx, val, cn_seq, _ack, cn_len, _cn_flags = CN_MSG.unpack_from(raw, NLMSGHDR.size)
    if (idx, val) != (CN_IDX_DM, CN_VAL_DM_USERSPACE_LOG) or cn_len < DM_ULOG_REQUEST.size:
        return None
    luid, uuid, version, _error, seq, request_type, data_size = DM_ULOG_REQUEST.unpack_from(
        raw, NLMSGHDR.size + CN_MSG.size
    )
    if HEADER_SIZE + data_size > len(raw):
        return None
    return Request(
        raw=raw,
        nlmsg_seq=nlmsg_seq,
        cn_seq=cn_seq,
        luid=luid,
        uuid=uuid.split(b"\0", 1)[0],
        version=version,
        seq=seq,
        request_type=request_type & DM_ULOG_REQUEST_MASK,
        data=raw[HEADER_SIZE : HEADER_SIZE + data_size],
    )


def encode_reply(req: Request, error: int, payload: bytes, port_id: int = 0) -> bytes:
    """A full reply to ``req``: same luid/uuid/seq/type, ``error`` (0 or -errno), payload."""
    cn_len = DM_ULOG_REQUEST.size + len(payload)
    return (
        NLMSGHDR.pack(NLMSGHDR.size + CN_MSG.size + cn_len, NLMSG_DONE, 0, req.nlmsg_seq, port_id)
        + CN_MSG.pack(CN_IDX_DM, CN_VAL_DM_USERSPACE_LOG, req.cn_seq, 0, cn_len, 0)
        + DM_ULOG_REQUEST.pack(req.luid, req.uuid, req.version, error, req.seq, req.request_type, len(payload))
        + payload
    )


def parse_ctr(data: bytes) -> LogState:
    """Region size and count from ``"<sectors> clustered-core <region_size> [nosync|sync]"``.

    The string may or may not carry a trailing NUL (the replay CTR after a server
    restart does). For ``clustered-disk`` the region size follows the device.
    Raises ValueError for anything else.
    """
    words = data.split(b"\0", 1)[0].decode("ascii").split()
    if len(words) < 3 or words[1] not in ("clustered-core", "clustered-disk"):
        raise ValueError(f"unsupported CTR string {words!r}")
    sectors = int(words[0])
    region_size = int(words[2] if words[1] == "clustered-core" else words[3])
    if sectors <= 0 or region_size <= 0:
        raise ValueError(f"bad sizes in CTR string {words!r}")
    return LogState(region_size=region_size, region_count=-(-sectors // region_size))


class Responder:
    """Answers kernel requests from in-memory state; one instance per socket."""

    def __init__(self) -> None:
        self.logs: dict[tuple[bytes, int], LogState] = {}
        self.counts: Counter[str] = Counter()

    def answer(self, req: Request) -> tuple[int, bytes]:
        """``(error, payload)`` for one request under the always-in-sync policy."""
        name = req.type_name
        self.counts[name] += 1
        key = (req.uuid, req.luid)
        if name == "CTR":
            try:
                self.logs[key] = parse_ctr(req.data)
            except (ValueError, UnicodeDecodeError, IndexError):
                return -errno.EINVAL, b""
            return 0, b""
        if name == "DTR":
            self.logs.pop(key, None)
            return 0, b""
        if name in _STATELESS:
            return 0, b""
        log = self.logs.get(key)
        if log is None:
            return -errno.EINVAL, b""
        if name == "GET_REGION_SIZE":
            return 0, U64.pack(log.region_size)
        if name in ("IS_CLEAN", "IN_SYNC"):
            return 0, S64.pack(1)
        if name == "GET_RESYNC_WORK":
            return 0, RESYNC_WORK.pack(0, 0)
        if name == "GET_SYNC_COUNT":
            return 0, U64.pack(log.region_count)
        if name == "STATUS_INFO":
            return 0, b"1 clustered-core\0"
        if name == "STATUS_TABLE":
            return 0, f"clustered-core {log.region_size} ".encode() + b"\0"
        if name == "IS_REMOTE_RECOVERING":
            return 0, REMOTE_RECOVERING.pack(0, log.region_count)
        if name in ("FLUSH", "MARK_REGION", "CLEAR_REGION", "SET_REGION_SYNC"):
            return 0, b""
        return -errno.EINVAL, b""


class ResyncingResponder(Responder):
    """The same, except that a log without ``nosync`` starts out of sync and is resynced.

    For recording a realistic trace (bench/record_trace.py): the kernel copies
    every region (GET_RESYNC_WORK, SET_REGION_SYNC) before the workload, as for
    any new mirror, and IN_SYNC and GET_SYNC_COUNT tell the truth. One region
    is handed out at a time, in order.
    """

    def __init__(self) -> None:
        super().__init__()
        self.synced: dict[tuple[bytes, int], set[int]] = {}

    def answer(self, req: Request) -> tuple[int, bytes]:
        """Track sync bits; defer everything else to the always-in-sync answers."""
        name, key = req.type_name, (req.uuid, req.luid)
        if name == "CTR":
            error, payload = super().answer(req)
            if error == 0 and key not in self.synced:
                created = self.logs[key]
                nosync = b"nosync" in req.data.split(b"\0", 1)[0].split()
                self.synced[key] = set(range(created.region_count)) if nosync else set()
            return error, payload
        log, synced = self.logs.get(key), self.synced.get(key)
        if log is None or synced is None or name not in _RESYNC_ANSWERS:
            return super().answer(req)
        self.counts[name] += 1
        if name == "IN_SYNC":
            return 0, S64.pack(U64.unpack(req.data)[0] in synced)
        if name == "GET_SYNC_COUNT":
            return 0, U64.pack(len(synced))
        if name == "GET_RESYNC_WORK":
            todo = next((r for r in range(log.region_count) if r not in synced), None)
            return 0, RESYNC_WORK.pack(0, 0) if todo is None else RESYNC_WORK.pack(1, todo)
        if name == "IS_REMOTE_RECOVERING":
            return 0, REMOTE_RECOVERING.pack(0, len(synced) if len(synced) == log.region_count else 0)
        region, in_sync = REGION_SYNC.unpack(req.data)  # SET_REGION_SYNC
        (synced.add if in_sync else synced.discard)(region)
        return 0, b""


_RESYNC_ANSWERS = {"IN_SYNC", "GET_SYNC_COUNT", "GET_RESYNC_WORK", "IS_REMOTE_RECOVERING", "SET_REGION_SYNC"}


class Capture:
    """Writes each datagram as ``<index>-<TYPE>-{req,rep}.hex`` (hex text, 16 bytes a line).

    Numbering continues after the highest index already in the directory, so a
    restarted responder appends to the same capture instead of overwriting it.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        indexes = [int(p.name.split("-", 1)[0]) for p in directory.glob("*-req.hex")]
        self.next_index = max(indexes, default=-1) + 1

    def write(self, req_name: str, request: bytes, reply: bytes | None) -> None:
        """Store one request and, when one was sent, its reply."""
        stem = f"{self.next_index:06d}-{req_name}"
        self.next_index += 1
        (self.directory / f"{stem}-req.hex").write_text(to_hex(request))
        if reply is not None:
            (self.directory / f"{stem}-rep.hex").write_text(to_hex(reply))


def to_hex(data: bytes) -> str:
    """The capture/fixture text format; ``bytes.fromhex`` reads it back."""
    return "".join(data[i : i + 16].hex() + "\n" for i in range(0, len(data), 16))


def open_socket() -> socket.socket:
    """A NETLINK_CONNECTOR socket that receives the dm-log-userspace multicast group.

    Bound with no groups and then joined to group 7 (CN_IDX_DM) by setsockopt, because
    ``nl_groups`` in bind is a bitmask (7 would mean groups 1-3), while
    NETLINK_ADD_MEMBERSHIP takes the group number.
    """
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
    sock.bind((0, 0))
    sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, CN_IDX_DM)
    return sock


def serve(sock: socket.socket, responder: Responder, capture: Capture | None, verbose: bool) -> None:
    """Answer requests until killed. One reply per datagram; never batch replies."""
    port_id = sock.getsockname()[0]
    while True:
        try:
            raw = sock.recv(65536)
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:  # we fell behind; the kernel will retry
                print("responder: ENOBUFS, requests were dropped", file=sys.stderr, flush=True)
                continue
            raise
        req = parse_request(raw)
        if req is None:
            print(f"responder: ignoring {len(raw)}-byte datagram {raw[:48].hex()}", file=sys.stderr, flush=True)
            if capture is not None:
                capture.write("UNPARSED", raw, None)
            continue
        error, payload = responder.answer(req)
        reply = encode_reply(req, error, payload, port_id)
        sock.send(reply)
        if capture is not None:
            capture.write(req.type_name, raw, reply)
        if verbose:
            got, sent = req.data.hex() or "-", payload.hex() or "-"
            print(f"responder: seq={req.seq} {req.type_name} {got} -> {error} {sent}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; runs until SIGTERM/SIGINT, then prints request counts."""
    parser = argparse.ArgumentParser(prog="python -m harness.responder", description=__doc__.splitlines()[0])
    parser.add_argument("--capture", type=Path, metavar="DIR", help="write every datagram in and out to DIR")
    parser.add_argument("--ready-file", type=Path, help="create this file once the socket listens")
    parser.add_argument("-v", "--verbose", action="store_true", help="one stderr line per request")
    parser.add_argument("--resync", action="store_true", help="logs without nosync start out of sync and resync")
    args = parser.parse_args(argv)

    def stop(signum: int, _frame: types.FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    sock = open_socket()
    responder = ResyncingResponder() if args.resync else Responder()
    signal.signal(signal.SIGUSR1, lambda _signum, _frame: print_counts(responder))
    capture = Capture(args.capture) if args.capture else None
    if args.ready_file:
        tmp = args.ready_file.with_name(args.ready_file.name + ".tmp")
        tmp.write_text(f"{os.getpid()}\n")
        tmp.replace(args.ready_file)
    try:
        serve(sock, responder, capture, args.verbose)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        print_counts(responder)
    return 0


def print_counts(responder: Responder) -> None:
    """One stderr line with the requests answered so far, by type.

    Written with a single ``os.write``: it also runs from a signal handler, which may
    interrupt a ``print`` of the serve loop, and buffered text I/O is not reentrant.
    """
    counts = " ".join(f"{k}={v}" for k, v in sorted(responder.counts.items()))
    line = f"responder: requests {sum(responder.counts.values())}: {counts}\n"
    os.write(sys.stderr.fileno(), line.encode())


if __name__ == "__main__":
    raise SystemExit(main())
