"""The metrics' contract without servers: the listen address, the option, the labels, the docs, the checkers.

The counts themselves are checked against real servers in
tests/integration/test_metrics.py; here, what must hold before any is served.
"""

from __future__ import annotations

import errno
import io
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from bridge import wire
from bridge.metrics import BridgeMetrics, errno_label, type_label
from dmulog.cli import ExitStatus, _parser, installed_commands, main
from dmulog.metrics import parse_listen
from dmulog.requests import REQUESTS
from harness.scrape import Expected, differences, parse
from logsvc.metrics import LogsvcMetrics

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "metrics.md"


@pytest.mark.parametrize(("listen", "address"), [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)),
    ("0.0.0.0:9464", ("0.0.0.0", 9464)),
    ("[::1]:9464", ("::1", 9464)),
    ("[::]:0", ("::", 0)),
    ("localhost:80", ("localhost", 80)),
    (":9464", ("127.0.0.1", 9464)),
    ("9464", ("127.0.0.1", 9464)),
])  # fmt: skip
def test_parse_listen_takes_every_form_the_docs_show(listen: str, address: tuple[str, int]) -> None:
    """A host and port as given; a bare port, or an empty host, on loopback like every server of dmulog."""
    assert address == parse_listen(listen)


@pytest.mark.parametrize("listen", [
    "", "host:", "host:port", "127.0.0.1:65536", "127.0.0.1:-1", "::1:9464", "[::1:9464", "[]:9464",
    "unix:/run/dmulog/metrics.sock", "a b:9464",
])  # fmt: skip
def test_parse_listen_refuses_what_is_no_tcp_address(listen: str) -> None:
    """No port, a port past 65535, an IPv6 host without brackets, a Unix socket: a ValueError naming the input."""
    with pytest.raises(ValueError, match=re.escape(repr(listen))):
        parse_listen(listen)


@pytest.mark.parametrize("argv", [["logsvc"], ["bridge", "--logsvc", "127.0.0.1:7500"]])
def test_both_servers_take_the_option_and_its_variable(argv: list[str]) -> None:
    """``--metrics-listen`` on both, from DMULOG_METRICS_LISTEN as every option; empty by default (off)."""
    commands = installed_commands()
    assert "" == _parser({}, commands).parse_args(argv).metrics_listen
    env = {"DMULOG_METRICS_LISTEN": "127.0.0.1:9464"}
    assert "127.0.0.1:9464" == _parser(env, commands).parse_args(argv).metrics_listen
    assert "0.0.0.0:1" == _parser(env, commands).parse_args([*argv, "--metrics-listen", "0.0.0.0:1"]).metrics_listen


@pytest.mark.parametrize("argv", [["logsvc"], ["bridge", "--logsvc", "127.0.0.1:7500"]])
def test_a_bad_address_is_a_usage_error_before_anything_starts(argv: list[str]) -> None:
    """From the flag or the variable, a bad address exits 2 naming the option, with nothing started."""
    for args, env in (([*argv, "--metrics-listen", "unix:/x.sock"], {}), (argv, {"DMULOG_METRICS_LISTEN": "x:y"})):
        err = io.StringIO()
        assert ExitStatus.USAGE == main(args, env, stdout=io.StringIO(), stderr=err)
        assert f"dmulog {argv[0]}: --metrics-listen" in err.getvalue()


def test_the_type_labels_are_the_tables_names() -> None:
    """The bridge labels each of the 17 types with dmulog/requests.py's name; any other number is one label."""
    assert [s.name for s in REQUESTS] == [type_label(int(s.type)) for s in REQUESTS]
    assert {"UNKNOWN"} == {type_label(n) for n in (0, 18, 255)}
    assert ("0", "EAGAIN", "ESRCH") == (errno_label(0), errno_label(errno.EAGAIN), errno_label(errno.ESRCH))


@pytest.mark.parametrize("code", [0, errno.EAGAIN, errno.ESRCH, errno.EIO, errno.EINVAL, errno.EHOSTDOWN])
@pytest.mark.parametrize("spec", REQUESTS, ids=lambda s: s.name)
def test_reply_errno_reads_what_the_kernel_reads(spec: Any, code: int) -> None:
    """The errno the bridge's metrics read off a reply is the one decode_reply (the kernel's reading) finds.

    Every reply kind the bridge sends: a full reply, a bare ACK (EAGAIN), a
    full reply padded to the type's room (ESRCH).
    """
    req = wire.decode_request(wire.encode_request(int(spec.type), seq=7, luid=1, uuid="u", data=b""))
    reply = wire.encode_reply(req, 0) if code == 0 else wire.error_reply(req, code)
    assert -wire.decode_reply(reply).error == wire.reply_errno(reply) == code


def metric_rows(text: str) -> dict[str, frozenset[str]]:
    """The metrics a document's tables list: ``| `name` | type | `label`, ... | meaning |`` → the labels."""
    rows = re.findall(r"^\|\s*`(dmulog_\w+)`\s*\|\s*\w+\s*\|([^|]*)\|", text, re.M)
    return {name: frozenset(re.findall(r"`(\w+)`", labels)) for name, labels in rows}


def served(registry: CollectorRegistry) -> dict[str, frozenset[str]]:
    """Each dmulog metric of ``registry`` as a query names it (a counter with ``_total``), with its labels."""
    out = {}
    for collector in list(registry._collector_to_names):  # every metric, children made or not
        name, kind = getattr(collector, "_name", ""), getattr(collector, "_type", "")
        if name.startswith("dmulog_"):
            out[name + ("_total" if kind == "counter" else "")] = frozenset(collector._labelnames)  # type: ignore[attr-defined]
    return out


def undocumented(text: str, registries: list[CollectorRegistry]) -> list[str]:
    """``name: ...`` for each metric served but not documented with exactly its labels, or documented and not served."""
    have = {k: v for r in registries for k, v in served(r).items()}
    rows = metric_rows(text)
    problems = [f"{n}: served with labels {sorted(labels)}, documented {sorted(rows[n]) if n in rows else 'nowhere'}"
                for n, labels in sorted(have.items()) if rows.get(n) != labels]  # fmt: skip
    return problems + [f"{n}: documented, not served" for n in sorted(rows.keys() - have.keys())]


def test_every_metric_is_documented_with_its_labels() -> None:
    """docs/metrics.md has a row for each metric of both servers, with its labels, and none that is not served."""
    registries = [LogsvcMetrics().registry, BridgeMetrics().registry]
    assert len(metric_rows(DOC.read_text())) >= 20
    assert [] == undocumented(DOC.read_text(), registries)


def test_the_doc_check_names_what_is_missing_or_wrong() -> None:
    """The check above on a broken document: a metric left out, a label missing, a row for a metric gone."""
    text = DOC.read_text()
    text = re.sub(r"^\| `dmulog_bridge_journal_depth` .*\n", "", text, flags=re.M)
    text = text.replace("| `dmulog_logsvc_requests_total` | counter | `method`, `code` |",
                        "| `dmulog_logsvc_requests_total` | counter | `method` |")  # fmt: skip
    text += "\n| `dmulog_bridge_gone_total` | counter | | once |\n"
    assert [
        "dmulog_bridge_journal_depth: served with labels [], documented nowhere",
        "dmulog_logsvc_requests_total: served with labels ['code', 'method'], documented ['method']",
        "dmulog_bridge_gone_total: documented, not served",
    ] == undocumented(text, [LogsvcMetrics().registry, BridgeMetrics().registry])


def test_differences_names_a_count_that_disagrees() -> None:
    """The integration tests' checker: a right count passes, a wrong one and a missing one are named."""
    page = parse('# TYPE dmulog_bridge_requests counter\n'
                 'dmulog_bridge_requests_total{type="MARK_REGION",errno="0"} 12.0\n'
                 'dmulog_bridge_requests_total{type="MARK_REGION",errno="EAGAIN"} 1.0\n')  # fmt: skip
    right = Expected("dmulog_bridge_requests_total", {"type": "MARK_REGION"}, 13)
    wrong = Expected("dmulog_bridge_requests_total", {"type": "MARK_REGION", "errno": "0"}, 13)
    missing = Expected("dmulog_bridge_requests_total", {"type": "FLUSH"}, 2)
    assert [] == differences(page, [right])
    assert [
        'dmulog_bridge_requests_total{errno="0",type="MARK_REGION"}: served 12, sent 13',
        'dmulog_bridge_requests_total{type="FLUSH"}: served 0, sent 2',
    ] == differences(page, [right, wrong, missing])


def test_children_are_made_once_per_label_set() -> None:
    """Counting a request twice makes its labelled children once: the request path does no label lookup after."""
    import grpc

    logsvc, bridge = LogsvcMetrics(), BridgeMetrics()
    for _ in range(3):
        logsvc.request("MarkRegion", grpc.StatusCode.OK, 0.001)
        bridge.answered(int(wire.RequestType.MARK_REGION), 0, 0.001)
    assert 1 == len(logsvc._requests) == len(logsvc._durations) == len(bridge._durations)
    page = parse(_render(logsvc.registry) + _render(bridge.registry))
    assert 3 == page.value("dmulog_logsvc_requests_total", method="MarkRegion", code="OK")
    assert 3 == page.value("dmulog_bridge_request_duration_seconds_count", type="MARK_REGION")


def _render(registry: CollectorRegistry) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()
