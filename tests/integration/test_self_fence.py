"""Self-fencing (bridge/fence.py) against a real logsvc that goes away and comes back.

The production bridge (KernelStandIn: Bridge, LeaseKeeper, LogWatcher,
SelfFence) holds a lease from a real logsvc on a real Redis; ``dmsetup`` is a
script that records each call with the time it was made, and lists two mirrors
on userspace logs (one already suspended by someone else), a mirror on a core
log and a linear device. The real kernel's side of it is
tests/kernel/test_fencing.py.
"""

from __future__ import annotations

import asyncio
import errno
import stat
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from bridge.fence import FENCE_FRACTION
from dmulog.requests import RequestType
from harness.kernel_side import KernelStandIn
from harness.servers import RedisProcess, logsvc_server, redis_process

TTL = 2.0
"""Seconds a lease lasts here: the stand-in dmsetup takes a Python start-up per call."""
REAPER = 0.05

TABLE = """\
m1: 0 65536 mirror userspace 3 LVM-one dmulog 1024 2 7:0 0 7:1 0
m2: 0 8192 mirror userspace 3 LVM-two dmulog 1024 2 7:2 0 7:3 0
core: 0 8192 mirror core 1 1024 2 7:6 0 7:7 0
lin: 0 2048 linear 7:8 0
"""
INFO = "m1 Active\nm2 Suspended\ncore Active\nlin Active\n"


def fake_dmsetup(tmp_path: Path) -> tuple[Path, Path]:
    """A dmsetup that prints TABLE and INFO and appends ``<monotonic> <args>`` to the calls file."""
    calls = tmp_path / "calls"
    exe = tmp_path / "dmsetup"
    exe.write_text(
        "#!/usr/bin/env python3\n"
        "import sys, time\n"
        f"open({str(calls)!r}, 'a').write(f'{{time.monotonic()}} {{\" \".join(sys.argv[1:])}}\\n')\n"
        f"if sys.argv[1] == 'table': print({TABLE!r}, end='')\n"
        f"if sys.argv[1] == 'info': print({INFO!r}, end='')\n"
    )  # fmt: skip
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe, calls


def read_calls(calls: Path) -> list[tuple[float, str]]:
    """(monotonic time, arguments) of every dmsetup call so far."""
    if not calls.exists():
        return []
    return [(float(t), rest) for t, _, rest in (line.partition(" ") for line in calls.read_text().splitlines())]


def suspended_in_time(calls: list[tuple[float, str]], lease_expires: float) -> bool:
    """The checker: every suspend of the fence was made before the lease could expire."""
    suspends = [t for t, args in calls if args.startswith("suspend ")]
    return bool(suspends) and max(suspends) < lease_expires


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float = 10.0) -> None:
    """Until ``check()`` holds (polled every 10 ms); fails the test after ``timeout``."""
    start = time.monotonic()
    while True:
        got = check()
        if await got if isinstance(got, Awaitable) else got:
            return
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(0.01)


async def _outage(redis: RedisProcess, tmp_path: Path, fraction: float) -> tuple[KernelStandIn, list[tuple[float,
                                                                                                       str]], float]:
    """Lease held, logsvc gone for 3 TTLs, back: (the stand-in after, dmsetup calls, when the lease could expire).

    Another replica, which the bridge does not reach, keeps running its reaper,
    so the bridge's lease expires meanwhile (one replica alone would have seen
    an outage of everyone, which expires no one).
    """
    exe, calls = fake_dmsetup(tmp_path)
    listen = f"unix:{tmp_path / 'logsvc.sock'}"
    async with logsvc_server(redis.url, f"unix:{tmp_path / 'reaper.sock'}", lease_ttl=TTL, reaper_interval=REAPER):
        return await _cut_off(redis, listen, exe, calls, fraction)


async def _cut_off(redis: RedisProcess, listen: str, exe: Path, calls: Path,
                   fraction: float) -> tuple[KernelStandIn, list[tuple[float, str]], float]:  # fmt: skip
    async with logsvc_server(redis.url, listen, lease_ttl=TTL, reaper_interval=REAPER):
        bridge = KernelStandIn(listen, leased=True, dmsetup=str(exe), fence_fraction=fraction, budget=0.5,
                               attempt_timeout=0.2)  # fmt: skip
        await bridge.__aenter__()
        assert bridge.keeper is not None and bridge.fence is not None
        await eventually(lambda: bridge.keeper is not None and bridge.keeper.enabled)
        first_epoch = bridge.keeper.node.epoch
    # logsvc is gone: no renewal gets through from here on.
    expires = bridge.keeper.safe_until
    try:
        await eventually(lambda: bridge.fence is not None and bridge.fence.active, 3 * TTL)
        # The suspend's own PRESUSPEND and POSTSUSPEND are answered here, logsvc or not;
        # any other request still waits for logsvc (and gets -EAGAIN after the budget).
        for rtype in (RequestType.PRESUSPEND, RequestType.POSTSUSPEND):
            reply = await bridge.ask(int(rtype), uuid="LVM-one", timeout=1.0)
            assert reply.error == 0, reply
        reply = await bridge.ask(int(RequestType.MARK_REGION), (1).to_bytes(8, "little"), uuid="LVM-one",
                                 timeout=5.0)  # fmt: skip
        assert reply.error == -errno.EAGAIN, reply
        await asyncio.sleep(TTL)  # the other replica expires the lease meanwhile
        assert bridge.fence.active
        async with logsvc_server(redis.url, listen, lease_ttl=TTL, reaper_interval=REAPER):
            await eventually(lambda: not (bridge.fence is not None and bridge.fence.active), 5 * TTL)
            await eventually(lambda: any(a == "resume m1" for _, a in read_calls(calls)), 5 * TTL)
            assert bridge.keeper.node.epoch > first_epoch  # the lease had expired: a new incarnation
    finally:
        await bridge.__aexit__()
    return bridge, read_calls(calls), expires


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A Redis of this test's own: the session's holds leases of earlier tests, whose expiries would load the loop."""
    with redis_process(tmp_path / "redis") as r:
        yield r


@pytest.mark.parametrize("fraction", [FENCE_FRACTION])
async def test_a_node_cut_off_suspends_its_mirrors_before_its_lease_can_expire(own_redis: RedisProcess, tmp_path: Path,
                                                                               fraction: float) -> None:  # fmt: skip
    """Every active mirror on a userspace log is suspended in time, and only those; resumed once a lease is back."""
    bridge, calls, expires = await _outage(own_redis, tmp_path, fraction)
    assert suspended_in_time(calls, expires), (calls, expires)
    assert [args for _, args in calls if not args.startswith(("table", "info"))] == ["suspend m1", "resume m1"]
    assert bridge.fence is not None and bridge.fence.fences == 1


async def test_the_checker_catches_a_fence_that_comes_after_the_lease(own_redis: RedisProcess, tmp_path: Path) -> None:
    """A fence at 1.5 TTL (deliberately too late) is caught by the same checker."""
    _, calls, expires = await _outage(own_redis, tmp_path, 1.5)
    assert not suspended_in_time(calls, expires), (calls, expires)
