"""Two nodes, one mirror: two guests with a bridge each on the same leg images, logsvc and Redis on the host.

This is the harness's multi-node topology (:mod:`harness.topology`) doing what it is
for: two real kernels activate the same ``dmulog`` mirror (same UUID, same legs), both
show it in sync, and each writes a block the other reads back with ``O_DIRECT`` (past
its own page cache). Node 1 is frozen while node 0 reads, then crashed and rebooted:
its new incarnation activates the mirror beside node 0 again. Both remove it. The
guest side is ``harness/guest/two-nodes.sh``.
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

import pytest

from dmulog.v1 import dmulog_pb2 as pb
from harness.guest import GuestRun, guest_script, kernel_log_problems
from harness.topology import Boot, Topology

pytestmark = pytest.mark.kernel
NODES = 2
UUID = "two-nodes"
LEG_BYTES = 8 << 20
SECTORS = LEG_BYTES // 512
REGION = 1024  # 16 regions of 512 KiB
BLOCK = 64 << 10  # node i writes bytes [i * BLOCK, (i + 1) * BLOCK): both in region 0
BOOT_TIMEOUT = 420
SCRIPT = guest_script("two-nodes.sh")
ENV = {"NODES": str(NODES), "UUID": UUID, "SECTORS": str(SECTORS), "REGION": str(REGION), "BLOCK": str(BLOCK)}


@dataclasses.dataclass(frozen=True)
class TwoNodes:
    """What the boots left, and the log's state at each stage.

    Attributes:
        outcomes: node 0, node 1's first boot, node 1's second boot.
        runs: the boots that ran to the end: node 0 and node 1's second boot.
        crashed: node 1's first boot, killed after its reads.
        crashed_kmsg: that boot's kernel log as it streamed it (a killed node saves no dmesg).
        frozen: whether node 1's qemu was stopped, and whether it was again after the thaw.
        reads_while_frozen: the reads node 1 had noted while frozen, and node 0's at that time.
        active, rebooted, after: the log's state with both first boots active, with node 1
            rebooted and active again, and once both removed the mirror.
        legs: the first ``NODES * BLOCK`` bytes of each leg image at the end.
    """

    outcomes: list[dict[str, str]]
    runs: list[GuestRun]
    crashed: GuestRun
    crashed_kmsg: str
    frozen: tuple[bool, bool]
    reads_while_frozen: tuple[list[str], list[str]]
    active: pb.GetLogStateResponse
    rebooted: pb.GetLogStateResponse
    after: pb.GetLogStateResponse
    legs: list[bytes]

    def describe(self) -> str:
        """Every boot's summary, for assertion messages."""
        names = ("node-0", "node-1 (second boot)")
        return "\n\n".join(f"{name}: {run.describe(20)}" for name, run in zip(names, self.runs, strict=True))


def _block_of(node: int) -> bytes:
    """What node ``node`` writes: ``yes "written by node-<i>"`` cut to BLOCK bytes, as the guest makes it."""
    line = f"written by node-{node}\n".encode()
    return (line * (BLOCK // len(line) + 1))[:BLOCK]


def _reads(boot: Boot) -> list[str]:
    return sorted(k for k in boot.outcome() if k.startswith("read_from_"))


def _wait_written(boot: Boot) -> None:
    boot.wait_for(lambda: "write_rc" in boot.outcome(), BOOT_TIMEOUT - 60, "the mirror active and written")


def _wait_reads(boot: Boot) -> None:
    boot.wait_for(lambda: bool(_reads(boot)), 120, "the reads")


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> TwoNodes:
    """Both nodes through the script, node 1 frozen and rebooted on the way; the host says when to go on."""
    workdir: Path = tmp_path_factory.mktemp("two-nodes")
    with Topology(workdir, leg_bytes=LEG_BYTES) as topo:
        topo.make_images()
        node0, node1 = (topo.boot(f"node-{i}", SCRIPT, env=ENV, timeout=BOOT_TIMEOUT, node=i) for i in range(NODES))
        _wait_written(node0)
        _wait_written(node1)
        active = topo.log_state(UUID)
        # Node 1 frozen: node 0 reads its block all the same, and node 1 does nothing until thawed.
        node1.freeze()
        frozen = node1.frozen()
        node0.tell("go-read")
        node1.tell("go-read")
        _wait_reads(node0)
        time.sleep(2)
        reads_while_frozen = (_reads(node1), _reads(node0))
        node1.thaw()
        thawed_frozen = node1.frozen()
        _wait_reads(node1)
        # Node 1 crashes and comes back: a new incarnation activates the mirror beside node 0.
        first_outcome = node1.outcome()
        again = topo.reboot(node1, "node-1-again", SCRIPT, env=ENV, timeout=BOOT_TIMEOUT)
        crashed = node1.join()
        _wait_written(again)
        rebooted = topo.log_state(UUID)
        again.tell("go-read")
        _wait_reads(again)
        node0.tell("go-remove")
        again.tell("go-remove")
        runs = [node0.join(180), again.join(180)]
        after = topo.log_state(UUID)
        legs = [topo.image(name).read_bytes()[: NODES * BLOCK] for name in ("leg0", "leg1")]
    return TwoNodes(
        outcomes=[node0.outcome(), first_outcome, again.outcome()], runs=runs, crashed=crashed,
        crashed_kmsg=node1.text("kmsg.txt"), frozen=(frozen, thawed_frozen), reads_while_frozen=reads_while_frozen,
        active=active, rebooted=rebooted, after=after, legs=legs,
    )  # fmt: skip


def _instances(state: pb.GetLogStateResponse) -> list[tuple[str, str]]:
    """(node, boot id) of each instance of the log, by node."""
    return sorted((inst.node, inst.boot_id) for inst in state.instances)


def test_the_guests_complete_with_a_clean_kernel_log(two_nodes: TwoNodes) -> None:
    """Node 0 and node 1's second boot ran their script to the end; no kernel logged a timeout, BUG or WARNING."""
    assert [0, 0] == [run.rc for run in two_nodes.runs], two_nodes.describe()
    assert ["yes", "yes"] == [two_nodes.outcomes[i].get("done") for i in (0, 2)], two_nodes.describe()
    assert [[], []] == [run.problems for run in two_nodes.runs], two_nodes.describe()
    assert [] == kernel_log_problems(two_nodes.crashed_kmsg)


def test_every_node_activates_the_same_mirror_in_sync(two_nodes: TwoNodes) -> None:
    """The same table on the same legs is created on both nodes (node 1 twice), and each shows N/N AA."""
    status = re.compile(rf"0 {SECTORS} mirror 2 \d+:\d+ \d+:\d+ 16/16 1 AA 1 dmulog")
    for i, outcome in enumerate(two_nodes.outcomes):
        assert ("0", "0") == (outcome.get("create_rc"), outcome.get("settled")), (i, outcome)
        assert status.fullmatch(outcome.get("status", "")), (i, outcome.get("status"))


def test_the_log_has_one_instance_per_node_each_with_its_boot(two_nodes: TwoNodes) -> None:
    """While both are active the log holds two resumed instances, node-0 and node-1, with distinct boot ids."""
    node0, node1, _ = (o.get("boot_id") for o in two_nodes.outcomes)
    assert [("node-0", node0), ("node-1", node1)] == _instances(two_nodes.active)
    assert node0 != node1
    assert all(inst.state == pb.INSTANCE_STATE_RESUMED for inst in two_nodes.active.instances), two_nodes.active


def test_each_node_reads_the_other_nodes_write(two_nodes: TwoNodes) -> None:
    """A block one node wrote reads back on the other with O_DIRECT, and lands on both legs."""
    for outcome in two_nodes.outcomes:
        other = 1 - int(outcome.get("node_index", "-1"))
        assert ("0", "yes") == (outcome.get("write_rc"), outcome.get(f"read_from_node_{other}")), outcome
    expected = b"".join(_block_of(i) for i in range(NODES))
    assert [True, True] == [leg == expected for leg in two_nodes.legs]


def test_a_frozen_node_does_nothing_and_holds_up_no_one(two_nodes: TwoNodes) -> None:
    """Node 1's qemu stopped: it read nothing until thawed, while node 0 read the shared mirror all the same."""
    assert (True, False) == two_nodes.frozen
    assert ([], ["read_from_node_1"]) == two_nodes.reads_while_frozen
    assert "yes" == two_nodes.outcomes[1].get("read_from_node_0")


def test_a_rebooted_node_is_a_new_incarnation_beside_the_other(two_nodes: TwoNodes) -> None:
    """The crashed boot never finished; the next one has a new boot id, and the log has it in place of the old."""
    node0, first, second = (o.get("boot_id") for o in two_nodes.outcomes)
    assert two_nodes.crashed.rc is None and "done" not in two_nodes.outcomes[1]
    assert second != first
    assert [("node-0", node0), ("node-1", second)] == _instances(two_nodes.rebooted)


def test_both_nodes_remove_the_mirror(two_nodes: TwoNodes) -> None:
    """Each node removes its table; the log is left with no instance, nothing dirty, everything in sync."""
    assert ["0", "0"] == [two_nodes.outcomes[i].get("remove_rc") for i in (0, 2)], two_nodes.outcomes
    summary = two_nodes.after.summary
    assert (0, 0, 16) == (summary.instance_count, summary.dirty_count, summary.sync_count), summary
