"""Host checks of the bridge: single instance, other listeners, identity."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge import host


def test_second_instance_lock_is_refused() -> None:
    """While one bridge holds the host lock, a second one is refused; after release it is free again."""
    first = host.hold_instance_lock("dmulog-bridge-test")
    with pytest.raises(host.AlreadyRunning):
        host.hold_instance_lock("dmulog-bridge-test")
    first.close()
    host.hold_instance_lock("dmulog-bridge-test").close()


def test_other_listeners_of_group_7_are_found(tmp_path: Path) -> None:
    """A connector socket subscribed to group 7 other than our own is reported; group 1 listeners are not."""
    table = tmp_path / "netlink"
    table.write_text(
        "sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode\n"
        "ffff888003a1b000 11  259        00000040 0        0        0     2        0        100\n"
        "ffff888003a1c000 11  4242       00000040 0        0        0     2        0        101\n"
        "ffff888003a1d000 11  77         00000001 0        0        0     2        0        102\n"
        "ffff888003a1e000 0   88         00000040 0        0        0     2        0        103\n"
    )
    assert [4242] == host.other_listeners(7, own_port=259, table=table)


def test_missing_capabilities_are_named(tmp_path: Path) -> None:
    """CapEff without bits 12 and 21 names both capabilities; with them, none."""
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapEff:\t0000000000000000\n")
    assert ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"] == host.missing_capabilities(status)
    status.write_text(f"CapEff:\t{(1 << 12) | (1 << 21):016x}\n")
    assert [] == host.missing_capabilities(status)


def test_node_name_fits_the_api_alphabet() -> None:
    """A host name with characters outside [A-Za-z0-9._-] is made safe; an explicit name wins."""
    assert "my-node" == host.node_name("my node")
    assert host.node_name()
    assert 36 == len(host.boot_id())
