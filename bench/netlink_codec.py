"""Decode cost of a kernel datagram: dmulog's codec against pyroute2's connector marshal.

pyroute2 ships connector support (``pyroute2.netlink.connector.cn_msg``,
``ConnectorSocket``), built on its generic netlink message classes. The
bridge uses a plain socket and its own ``struct`` codec instead; this prints
what that choice buys, as a ratio measured in one run (absolute times on a
shared machine mean little). Run: ``.venv/bin/python -m bench.netlink_codec``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pyroute2.netlink.connector import cn_msg

from bridge import wire
from harness.report import add_out_option, tee

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "unit" / "fixtures" / "kernel"


class dm_ulog_msg(cn_msg):
    """cn_msg + struct dm_ulog_request, declared the pyroute2 way."""

    fields = (
        *cn_msg.fields,
        ("luid", "Q"),
        ("uuid", "129s"),
        ("padding", "3s"),
        ("version", "I"),
        ("error", "i"),
        ("seq", "I"),
        ("request_type", "I"),
        ("data_size", "I"),
    )


def _pyroute2(buf: bytes) -> tuple[int, int, bytes]:
    msg = dm_ulog_msg(buf)
    msg.decode()
    size = msg["data_size"]
    return msg["seq"], msg["request_type"], buf[196 : 196 + size]


def _dmulog(buf: bytes) -> tuple[int, int, bytes]:
    req = wire.decode_request(buf)
    return req.seq, req.request_type, req.data


def _time(fn: Callable[[bytes], object], datagrams: list[bytes], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for d in datagrams:
            fn(d)
        samples.append((time.perf_counter() - start) / len(datagrams))
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    """Print per-datagram decode times and their ratio."""
    parser = argparse.ArgumentParser(prog="python -m bench.netlink_codec", description=__doc__.splitlines()[0])
    add_out_option(parser, "bench-codec")
    args = parser.parse_args(argv)
    datagrams = [bytes.fromhex(p.read_text()) for p in sorted(FIXTURES.glob("*.hex"))] * 200
    for d in datagrams[:19]:
        assert _pyroute2(d) == _dmulog(d), "both decoders must agree"
    with tee(args.out):
        ours = _time(_dmulog, datagrams, 15)
        theirs = _time(_pyroute2, datagrams, 15)
        print(f"dmulog bench.netlink_codec  {time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}")
        print(f"datagrams: {len(datagrams)} real kernel captures per round, median of 15 rounds")
        print(f"{'decoder':<28} {'us/datagram':>12} {'ratio':>8}")
        print(f"{'dmulog bridge.wire':<28} {ours * 1e6:>12.2f} {1.0:>8.2f}")
        print(f"{'pyroute2 cn_msg marshal':<28} {theirs * 1e6:>12.2f} {theirs / ours:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
