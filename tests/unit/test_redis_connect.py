"""The ``--redis`` URL forms, ``--redis-cluster`` startup nodes, and the timeout that bounds a frozen primary."""

from __future__ import annotations

import pytest

from logsvc.events import BLOCK_MS
from logsvc.redis_connect import SOCKET_TIMEOUT, SentinelTarget, parse_sentinel_url, parse_startup_nodes
from logsvc.store import DURABLE_WAIT


def test_a_sentinel_url_names_the_sentinels_and_the_master() -> None:
    """Every Sentinel, IPv6 in brackets, the master's name, TLS and percent-encoded credentials."""
    assert parse_sentinel_url("redis+sentinel://127.0.0.1:26379,[::1]:26380/mymaster") == SentinelTarget(
        (("127.0.0.1", 26379), ("::1", 26380)), "mymaster")  # fmt: skip
    got = parse_sentinel_url("rediss+sentinel://u:p%40ss@h:1/m")
    assert (got.tls, got.username, got.password, got.sentinels) == (True, "u", "p@ss", (("h", 1),))


@pytest.mark.parametrize("url", ["redis+sentinel:///m", "redis+sentinel://h:1/", "redis+sentinel://h/m",
                                 "redis+sentinel://h:x/m", "redis+sentinel://h:1/a/b", "redis://h:1/0"])  # fmt: skip
def test_a_bad_sentinel_url_is_refused_with_the_form_it_wants(url: str) -> None:
    """No Sentinel, no master, no port, a path for a name, another scheme: each a clear ValueError."""
    with pytest.raises(ValueError, match="redis"):
        parse_sentinel_url(url)


def test_no_command_waits_longer_than_the_socket_timeout() -> None:
    """A command that blocks on purpose must not be taken for a dead primary."""
    assert SOCKET_TIMEOUT > DURABLE_WAIT
    assert SOCKET_TIMEOUT > BLOCK_MS / 1000


def test_cluster_startup_nodes_are_host_port_pairs() -> None:
    """Commas, spaces around items, a trailing comma and IPv6 in brackets."""
    assert parse_startup_nodes("127.0.0.1:7000, [::1]:7001,h:7002,") == (
        ("127.0.0.1", 7000), ("::1", 7001), ("h", 7002))  # fmt: skip


@pytest.mark.parametrize("nodes", ["", ",", "127.0.0.1", "h:x", ":7000", "[]:7000", "redis://h:7000"])
def test_a_bad_startup_node_is_refused_with_the_form_it_wants(nodes: str) -> None:
    """Nothing named, no port, a port that is not a number, no host, a URL: each a ValueError naming HOST:PORT."""
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_startup_nodes(nodes)
