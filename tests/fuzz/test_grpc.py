"""Door 3: the gRPC API, every RPC of DirtyLog, against a real logsvc on a redis-server of its own.

Every field of every request bent every way tests/fuzz/messages.py knows,
then random combinations of them, sent as raw bytes on a generic channel.
Each answer is OK or a refusal with a message (INVALID_ARGUMENT,
RESOURCE_EXHAUSTED, NOT_FOUND, FAILED_PRECONDITION, ALREADY_EXISTS), never
INTERNAL or UNKNOWN, and never OK for a request no valid one looks like; a
refused request leaves every key's DUMP as it was (checked on a sample);
and at the end every key in Redis is one that logsvc/keys.py names for a log
that was really created or a node that was really answered.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis

from dmulog.v1 import dmulog_pb2 as pb
from harness.servers import RedisProcess, logsvc_server, redis_process
from logsvc.decoding import lenient
from logsvc.keys import events_key, lease_keys, lease_logs_key, log_keys
from tests.fuzz import budget
from tests.fuzz.messages import METHODS, Case, Target, base_request, cases, ctr_cases, random_case

S = grpc.StatusCode
REFUSALS = frozenset({S.INVALID_ARGUMENT, S.RESOURCE_EXHAUSTED, S.NOT_FOUND, S.FAILED_PRECONDITION, S.ALREADY_EXISTS})
_BY_VALUE = {c.value[0]: c for c in S}
TARGET = Target(uuid="fuzz-log", luid=1, node="node-a", boot="boot-1", sectors=1024, log_type="clustered-core",
                args=("16",))  # fmt: skip
OTHER_TARGETS = (
    Target(uuid="fuzz-disk", luid=2, node="node-a", boot="boot-1", sectors=1024, log_type="clustered-disk",
           args=("/dev/vg/mlog", "16", "nosync"), devices={"/dev/vg/mlog": "253:2"}),
    Target(uuid="fuzz-dmulog", luid=3, node="node-b", boot="boot-2", sectors=4096, log_type="dmulog",
           args=("8", "sync")),
)  # fmt: skip
"""Targets of other log types, whose CTR is bent too: their arguments are parsed another way."""
SNAPSHOT_EVERY = 3
"""One refused request in this many gets its keys' DUMPs compared before and after."""


@dataclass
class Outcome:
    """How one call ended, and the Exchange results it carried."""

    code: grpc.StatusCode
    details: str
    results: list[pb.ExchangeResult] = field(default_factory=list)


@dataclass
class Ledger:
    """What OK answers may legitimately have put in Redis: logs constructed, nodes answered."""

    uuids: set[str] = field(default_factory=set)
    nodes: set[str] = field(default_factory=set)

    def allowed(self) -> set[str]:
        """Every key logsvc/keys.py names for them."""
        keys = {*lease_keys(), events_key(), *(lease_logs_key(n) for n in self.nodes)}
        for u in self.uuids:
            keys.update(log_keys(u))
        return keys


async def send(channel: grpc.aio.Channel, case: Case) -> Outcome:
    """One case on the wire, whatever kind of RPC it is; raw bytes both ways."""
    m = case.method
    try:
        if not m.client_streaming and not m.server_streaming:
            await channel.unary_unary(case.path)(case.data, timeout=60)
            return Outcome(S.OK, "")
        if not m.client_streaming:
            call = channel.unary_stream(case.path)(case.data, timeout=60)
            if m.name == "WatchLogs":  # endless: its first event says it took the request
                first = await call.read()
                code = await call.code() if first is grpc.aio.EOF else S.OK
                call.cancel()
                return Outcome(code, await call.details() if first is grpc.aio.EOF else "")
            async for _ in call:
                pass
            return Outcome(S.OK, "")
        stream = channel.stream_stream(case.path)(timeout=60)
        await stream.write(case.data)
        await stream.done_writing()
        results = [r for raw in [x async for x in stream] for r in pb.ExchangeResponse.FromString(raw).results]
        return Outcome(await stream.code(), await stream.details() or "", results)
    except grpc.aio.AioRpcError as e:
        return Outcome(e.code(), e.details() or "")


def judge(case: Case, out: Outcome) -> list[str]:
    """What is wrong with ``out`` as the answer to ``case``."""
    where = f"{case.method.name} [{case.what}]"
    problems: list[str] = []
    timeout_bent = "timeout_ms" in case.what
    if out.code is not S.OK and out.code not in REFUSALS:
        problems.append(f"{where}: {out.code.name} {out.details!r}")
    elif out.code is not S.OK and not out.details:
        problems.append(f"{where}: {out.code.name} without a message")
    elif out.code is S.OK and case.invalid and case.method.name != "Exchange":
        problems.append(f"{where}: OK for a request no valid one looks like")
    if case.method.name != "Exchange" or out.code is not S.OK:
        return problems
    calls = list(case.message.calls) if case.message is not None else []
    if case.message is not None and sorted(r.id for r in out.results) != sorted(c.id for c in calls):
        problems.append(f"{where}: results for ids {[r.id for r in out.results]}, calls {[c.id for c in calls]}")
    for r in out.results:
        code = _BY_VALUE.get(r.code)
        if code is S.OK and case.invalid:
            problems.append(f"{where}: call {r.id} OK for a request no valid one looks like")
        elif code is not S.OK and (code not in REFUSALS and not (timeout_bent and code is S.DEADLINE_EXCEEDED)):
            problems.append(f"{where}: call {r.id} ended {code} {r.message!r}")
        elif code is not S.OK and not r.message:
            problems.append(f"{where}: call {r.id} ended {code} without a message")
    return problems


def record(case: Case, out: Outcome, ledger: Ledger) -> None:
    """Note what an OK answer may have stored."""
    msg: Any = case.message
    if case.method.name == "Exchange":
        # Read as the service reads an envelope with unreadable calls: strings as bytes.
        envelope: Any = msg if msg is not None else lenient(pb.ExchangeRequest.DESCRIPTOR, case.data)
        ok = {r.id for r in out.results if r.code == 0}
        for call in envelope.calls if envelope is not None else ():
            if call.id in ok and call.WhichOneof("request") == "ctr":
                try:  # a call not in UTF-8 was refused, whatever another call of its id got
                    uuid, node = _text(call.ctr.log.uuid), _text(call.ctr.node.name)
                except UnicodeDecodeError:
                    continue
                ledger.uuids.add(uuid)
                ledger.nodes.add(node)
        return
    if msg is None:
        return
    if out.code is not S.OK:
        return
    if case.method.name == "Ctr":
        ledger.uuids.add(msg.log.uuid)
    if msg.DESCRIPTOR.fields_by_name.get("node") is not None and msg.HasField("node"):
        ledger.nodes.add(msg.node.name)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def generation_bent(case: Case) -> bool:
    """Whether the case claims a generation the log never gave.

    Then the log takes it that it lost writes and turns every region out of
    sync before it answers (proto: LogRef.generation), whatever the answer:
    a change by design, so such refusals are left out of the DUMP check.
    """
    return any(p.strip().startswith("log.generation=") and not p.strip().endswith("=0")
               for part in case.what.split("+") for p in part.split(":")[-1:])  # fmt: skip


def refused(case: Case, out: Outcome) -> bool:
    """Whether nothing of ``case`` was carried out, by its own answer."""
    if case.method.name == "Exchange" and out.code is S.OK:
        return all(r.code != 0 for r in out.results)
    return out.code is not S.OK


async def snapshot(client: aioredis.Redis) -> dict[bytes, bytes | None]:
    """Every key's DUMP, read in one pipeline."""
    keys = [k async for k in client.scan_iter(count=1000)]
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.dump(k)
    return dict(zip(keys, await pipe.execute(), strict=True))


def changed(before: dict[bytes, bytes | None], after: dict[bytes, bytes | None]) -> list[str]:
    """Keys created, deleted or changed between two snapshots."""
    return sorted(k.decode(errors="replace") for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def foreign_keys(keys: Iterable[bytes], ledger: Ledger) -> list[str]:
    """Keys in Redis that no function of logsvc/keys.py names for what the ledger holds."""
    allowed = {k.encode() for k in ledger.allowed()}
    return sorted(k.decode(errors="replace") for k in keys if k not in allowed)


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[str, RedisProcess]]:
    """A logsvc on a redis-server of its own (every key in it is this test's), leases that never expire meanwhile."""
    with redis_process(tmp_path / "redis") as r:
        async with logsvc_server(r.url, lease_ttl=3600, reaper_interval=3600) as target:
            yield target, r


async def reset(channel: grpc.aio.Channel, ledger: Ledger) -> None:
    """The target log constructed and resumed again, whatever the last cases did to it."""
    for name in ("Ctr", "Resume"):
        method = next(m for m in METHODS if m.name == name)
        case = Case(method, base_request(method.input_type, TARGET).SerializeToString(), "reset", False,
                    base_request(method.input_type, TARGET))  # fmt: skip
        out = await send(channel, case)
        record(case, out, ledger)


async def run(channel: grpc.aio.Channel, client: aioredis.Redis, todo: Iterable[Case], ledger: Ledger,
              problems: list[str], *, snapshot_every: int,
              reset_every: int | None = None) -> tuple[int, int]:  # fmt: skip
    """Send each case, judging its answer and, for a sample of the refused ones, its effect.

    The target log is constructed again at each new RPC, or every
    ``reset_every`` cases, so that later cases still find it. Returns how
    many cases were sent and how many refusals were checked for changes.
    """
    sent, method, refusals, compared = 0, None, 0, 0
    for case in todo:
        if (case.method is not method) if reset_every is None else sent % reset_every == 0:
            method = case.method
            await reset(channel, ledger)
        before = await snapshot(client) if refusals % snapshot_every == 0 else None
        out = await send(channel, case)
        problems += judge(case, out)
        record(case, out, ledger)
        if refused(case, out):
            if before is not None and not generation_bent(case):
                compared += 1
                if diff := changed(before, await snapshot(client)):
                    problems.append(f"{case.method.name} [{case.what}] refused ({out.code.name}) but changed {diff}")
            refusals += 1
        sent += 1
        if len(problems) >= 20:
            break
    return sent, compared


async def test_every_rpc_with_every_field_bent(service: tuple[str, RedisProcess]) -> None:
    """Every case of every RPC, then the budget's random ones; then no key outside keys.py's namespaces."""
    target, redis = service
    ledger, problems = Ledger(), list[str]()
    client = aioredis.Redis.from_url(redis.url)
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            todo = itertools.chain(cases(TARGET), *(ctr_cases(t) for t in OTHER_TARGETS))
            systematic, compared = await run(channel, client, todo, ledger, problems,
                                             snapshot_every=SNAPSHOT_EVERY)  # fmt: skip
            rng = budget.rng("grpc")
            extra = budget.scaled(0.05, minimum=100, cap=50_000)
            _, more = await run(channel, client, (random_case(rng, TARGET) for _ in range(extra)), ledger, problems,
                                snapshot_every=SNAPSHOT_EVERY * 2, reset_every=50)  # fmt: skip
        keys = [k async for k in client.scan_iter(count=1000)]
    finally:
        await client.aclose()
    hint = f"\nreplay: {budget.replay_hint()}"
    assert not problems, "\n".join(problems[:20]) + hint
    assert systematic > 1000 and compared + more > 200, (systematic, compared, more)
    assert {TARGET.uuid, "{a}", *(t.uuid for t in OTHER_TARGETS)} <= ledger.uuids, "the cases never constructed a log"
    assert not (stray := foreign_keys(keys, ledger)), f"keys outside logsvc/keys.py's namespaces: {stray}{hint}"


def test_every_rpc_of_the_proto_has_cases() -> None:
    """The list of RPCs comes from the descriptor, and each gets bent cases beyond its valid request."""
    per_method: dict[str, int] = {}
    for case in cases(TARGET, huge=False):
        per_method[case.method.name] = per_method.get(case.method.name, 0) + 1
    assert set(per_method) == {m.name for m in pb.DESCRIPTOR.services_by_name["DirtyLog"].methods}
    assert min(per_method.values()) >= 5, per_method


# --- The checkers fail on broken answers ---------------------------------------------------------------------


def _case(name: str, invalid: bool, what: str = "x") -> Case:
    method = next(m for m in METHODS if m.name == name)
    message = base_request(method.input_type, TARGET)
    return Case(method, message.SerializeToString(), what, invalid, message)


def test_judge_reports_internal_unknown_silent_and_wrongly_accepted_answers() -> None:
    """INTERNAL, UNKNOWN, a refusal without a message, OK for an invalid request: each a problem."""
    assert judge(_case("InSync", False), Outcome(S.INTERNAL, "boom"))
    assert judge(_case("InSync", False), Outcome(S.UNKNOWN, "x"))
    assert judge(_case("InSync", False), Outcome(S.INVALID_ARGUMENT, ""))
    assert judge(_case("InSync", True), Outcome(S.OK, ""))
    assert not judge(_case("InSync", False), Outcome(S.OK, ""))
    assert not judge(_case("InSync", True), Outcome(S.NOT_FOUND, "log not found"))
    exchange = _case("Exchange", True)
    assert judge(exchange, Outcome(S.OK, "", [pb.ExchangeResult(id=1)]))
    assert judge(exchange, Outcome(S.OK, "", [pb.ExchangeResult(id=1, code=13, message="internal")]))
    assert judge(exchange, Outcome(S.OK, "", []))  # its one call never answered
    assert not judge(exchange, Outcome(S.OK, "", [pb.ExchangeResult(id=1, code=3, message="bad")]))


def test_key_checker_reports_keys_of_logs_never_created() -> None:
    """A log key for a uuid no CTR answered OK, or a key in no namespace, is reported; the ledger's own are not."""
    ledger = Ledger(uuids={"a{b}"}, nodes={"node-a"})
    mine = [k.encode() for k in log_keys("a{b}")] + [lease_logs_key("node-a").encode()]
    assert foreign_keys(mine, ledger) == []
    assert foreign_keys([b"dmulog:{a{b}}:log", b"stray", lease_logs_key("node-b").encode()], ledger) == [
        "dmulog:{a{b}}:log", lease_logs_key("node-b"), "stray"]  # fmt: skip


async def test_dump_checker_reports_a_change(tmp_path: Path) -> None:
    """A key written between two snapshots is reported, and an untouched one is not."""
    with redis_process(tmp_path / "redis") as r:
        client = aioredis.Redis.from_url(r.url)
        try:
            await client.set("k", "1")
            before = await snapshot(client)
            assert changed(before, await snapshot(client)) == []
            await client.set("k", "2")
            await client.set("new", "x")
            assert changed(before, await snapshot(client)) == ["k", "new"]
        finally:
            await client.aclose()

