"""The bridge's drop of capabilities (bridge/privileges.py): the plan, and the calls that carry it out.

The kernel's side (what each capability is needed for, what the bridge holds
once started, in every thread) is tests/kernel/test_privileges.py.
"""

from __future__ import annotations

import errno
import logging

import pytest

from bridge.privileges import BRIDGE, CAP_NAMES, KEEPER, CapSets, Keep, keep_only, mask, names, planned

ROOT = (1 << len(CAP_NAMES)) - 1
NA, SA = "CAP_NET_ADMIN", "CAP_SYS_ADMIN"
STATUS = """Name:\tpython3
CapInh:\t0000000000000000
CapPrm:\t000001ffffffffff
CapEff:\t000001ffffffffff
CapBnd:\t000001ffffffffff
CapAmb:\t0000000000000000
NoNewPrivs:\t0
Seccomp:\t0
"""


def root(**changes: int | bool) -> CapSets:
    """What a process of uid 0 starts with, but for ``changes``."""
    sets: dict[str, int | bool] = {"effective": ROOT, "permitted": ROOT, "inheritable": 0, "bounding": ROOT,
                                   "ambient": 0, "no_new_privs": False, **changes}  # fmt: skip
    return CapSets(**sets)  # type: ignore[arg-type]


def test_names_and_masks_are_the_kernel_numbers() -> None:
    """CAP_NET_ADMIN is bit 12 and CAP_SYS_ADMIN bit 21, as /proc/<pid>/status writes them."""
    assert 0x201000 == mask({NA, SA})
    assert [NA, SA] == names(0x201000)
    assert ["CAP_CHOWN", "CAP_41"] == names(1 | 1 << 41)
    assert 41 == len(CAP_NAMES) and "CAP_CHECKPOINT_RESTORE" == CAP_NAMES[40]


def test_status_text_is_read() -> None:
    """Every set and the no_new_privs flag come from their lines; a missing line is an error."""
    assert root() == CapSets.from_status(STATUS)
    with pytest.raises(ValueError, match="CapAmb"):
        CapSets.from_status(STATUS.replace("CapAmb", "Other"))


def test_root_keeps_the_bridge_set_and_hands_on_only_sys_admin() -> None:
    """Effective and permitted: both; inheritable, ambient and bounding: what dmsetup needs; no_new_privs set."""
    assert CapSets(effective=0x201000, permitted=0x201000, inheritable=0x200000, bounding=0x200000,
                   ambient=0x200000, no_new_privs=True) == planned(root(), BRIDGE)  # fmt: skip


def test_the_keeper_calls_with_net_admin_and_hands_on_both() -> None:
    """The keeper leaves the group itself; the bridges it starts need both capabilities after their exec."""
    assert CapSets(effective=0x1000, permitted=0x201000, inheritable=0x201000, bounding=0x201000,
                   ambient=0x201000, no_new_privs=True) == planned(root(), KEEPER)  # fmt: skip


def test_nothing_is_ever_added() -> None:
    """A capability the process lacks stays lacking, in every set, whatever ``keep`` says."""
    without = root(effective=ROOT & ~mask({SA}), permitted=ROOT & ~mask({SA}))
    got = planned(without, BRIDGE)
    assert (mask({NA}), mask({NA}), 0, 0) == (got.effective, got.permitted, got.inheritable, got.ambient)


def test_without_setpcap_the_bounding_set_stays() -> None:
    """A container (drop ALL, add two) or a respawned bridge cannot shrink its bounding set: it is left as it is."""
    both = mask({NA, SA})
    got = planned(root(effective=both, permitted=both, bounding=both), BRIDGE)
    assert (both, both, mask({SA}), both) == (got.effective, got.permitted, got.ambient, got.bounding)


def test_a_capability_outside_the_bounding_set_is_not_handed_on() -> None:
    """Inheritable (and so ambient) can grow only within the bounding set or what is already inheritable."""
    got = planned(root(bounding=ROOT & ~mask({SA})), BRIDGE)
    assert (0, 0) == (got.inheritable, got.ambient)
    assert mask({SA}) == planned(root(bounding=0, inheritable=mask({SA})), BRIDGE).ambient


class FakeLibc:
    """Records the calls; the status it reports afterwards is the plan (or ``after``)."""

    def __init__(self, fail: int | None = None) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.fail = fail

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0) -> None:
        self.calls.append(("prctl", option, arg2, arg3))
        if self.fail is not None and len(self.calls) > self.fail:
            raise OSError(errno.EPERM, "prctl: Operation not permitted")

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        self.calls.append(("capset", effective, permitted, inheritable))


def test_the_calls_come_in_the_order_the_kernel_allows(caplog: pytest.LogCaptureFixture) -> None:
    """no_new_privs; inheritable while bounding allows; ambient; bounding while SETPCAP is effective; E and P."""
    fake = FakeLibc()
    states = iter([root(), planned(root(), BRIDGE)])
    with caplog.at_level(logging.INFO, logger="dmulog.bridge"):
        after = keep_only(BRIDGE, "bridge", status=lambda: next(states), libc=lambda: fake)
    assert planned(root(), BRIDGE) == after
    assert ("prctl", 38, 1, 0) == fake.calls[0]
    assert ("capset", ROOT, ROOT, mask({SA})) == fake.calls[1]
    assert [("prctl", 47, 4, 0), ("prctl", 47, 2, 21)] == fake.calls[2:4]
    drops = [c[2] for c in fake.calls if c[:2] == ("prctl", 24)]
    assert sorted(set(range(len(CAP_NAMES))) - {21}) == drops
    assert ("capset", mask({NA, SA}), mask({NA, SA}), mask({SA})) == fake.calls[-1]
    [record] = [r for r in caplog.records if r.getMessage() == "privileges_dropped"]
    data = record.event_data  # type: ignore[attr-defined]
    assert {NA, SA} == set(data["kept"]) and "CAP_SYS_MODULE" in data["dropped"] and data["as_planned"]


def test_a_refused_drop_is_logged_and_the_process_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    """The kernel says no (a seccomp filter, a security module): an error event, and None."""
    with caplog.at_level(logging.INFO, logger="dmulog.bridge"):
        got = keep_only(KEEPER, "keeper", status=root, libc=lambda: FakeLibc(fail=0))
    assert got is None
    assert ["privileges_not_dropped"] == [r.getMessage() for r in caplog.records]


def test_a_drop_that_did_not_take_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """The sets read back differ from the plan: logged as a warning, with what is held."""
    states = iter([root(), root(no_new_privs=True)])
    with caplog.at_level(logging.INFO, logger="dmulog.bridge"):
        keep_only(BRIDGE, "bridge", status=lambda: next(states), libc=FakeLibc)
    [record] = caplog.records
    assert logging.WARNING == record.levelno and not record.event_data["as_planned"]  # type: ignore[attr-defined]


def test_kept_sets_name_what_each_process_needs() -> None:
    """The bridge keeps both and hands on SYS_ADMIN; the keeper calls with NET_ADMIN and hands on both."""
    assert (frozenset({NA, SA}), frozenset({SA})) == (BRIDGE.permitted, BRIDGE.for_exec)
    assert (frozenset({NA}), frozenset({NA, SA})) == (KEEPER.effective, KEEPER.permitted)
    assert frozenset() == Keep(frozenset(), frozenset()).permitted


def test_an_unreadable_status_is_a_refused_drop(caplog: pytest.LogCaptureFixture) -> None:
    """No /proc to read the sets from: nothing is called, an error event says so."""
    fake = FakeLibc()

    def status() -> CapSets:
        raise OSError(errno.ENOENT, "no /proc")

    with caplog.at_level(logging.INFO, logger="dmulog.bridge"):
        assert keep_only(BRIDGE, "bridge", status=status, libc=lambda: fake) is None
    assert [] == fake.calls
    assert ["privileges_not_dropped"] == [r.getMessage() for r in caplog.records]
