"""Crash safety against the real kernel, with Redis and logsvc on the host and the node in a guest.

The kernel tests (marker ``kernel``) run the scenarios of :mod:`.scenarios`: a node
crash (SIGKILL of qemu mid-I/O) with the native, ``clustered-disk`` and
``integrated_flush`` tables, and node crashes after faults of the bridge, logsvc and
Redis. Each property is its own test, so a failure names what broke:

* the log knows every region that differs between the legs at the crash;
* every write the guest saw complete survives, and the legs are identical after recovery;
* the kernel log holds no ``timed out`` line (except while Redis is down > 15 s) and
  nothing else alarming;
* every round ran to its end.

Rounds: ``--crash-rounds N`` (with ``pytest tests/kernel/crash``) or
``DMULOG_CRASH_ROUNDS``; seed: ``DMULOG_CRASH_SEED`` (printed in every failure).

The first tests check the checker itself on synthetic images; they need no kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.kernel.crash import checker
from tests.kernel.crash.scenarios import (
    SCENARIOS,
    RoundResult,
    configured_rounds,
    configured_seed,
    rounds_for,
    run_scenario,
    scenario_seed,
)

RS = 8  # sectors per region in the synthetic images: 4 KiB regions


# ------------------------------------------------------------------- the checker itself


def _bitmap(bits: list[int], count: int) -> bytes:
    out = bytearray((count + 7) // 8)
    for r in bits:
        out[r // 8] |= 0x80 >> (r % 8)
    return bytes(out)


def _legs(tmp_path: Path, differ: list[int], regions: int = 16) -> tuple[Path, Path]:
    size = regions * RS * checker.SECTOR
    a, b = bytearray(size), bytearray(size)
    for r in differ:
        b[r * RS * checker.SECTOR + 700] = 0xFF
    (tmp_path / "leg0").write_bytes(a)
    (tmp_path / "leg1").write_bytes(b)
    return tmp_path / "leg0", tmp_path / "leg1"


def _bits(regions: int, in_sync: list[int], dirty: list[int], log_type: str = "dmulog") -> checker.LogBits:
    return checker.LogBits(regions, RS, _bitmap(in_sync, regions), _bitmap(dirty, regions), log_type)


def test_checker_flags_a_differing_region_the_log_calls_in_sync_and_clean(tmp_path: Path) -> None:
    """Region 3 differs, the log has it in sync and not dirty: one violation, reported with its numbers."""
    leg0, leg1 = _legs(tmp_path, [3])
    report = checker.check_legs_against_log(leg0, leg1, _bits(16, list(range(16)), []))

    assert [3] == [v.region for v in report.violations]
    assert (3 * 4096 + 512, 1) == (report.violations[0].first_diff, report.violations[0].sectors)
    assert "1 VIOLATION(S)" in report.text() and "region 3 " in report.text()


def test_checker_accepts_differing_regions_the_log_will_resync(tmp_path: Path) -> None:
    """A dirty region may differ; so may a clean, out-of-sync one of a core log (a core log resyncs it)."""
    leg0, leg1 = _legs(tmp_path, [2, 5])
    in_sync = [r for r in range(16) if r != 5]

    assert checker.check_legs_against_log(leg0, leg1, _bits(16, in_sync, [2], "clustered-core")).ok
    assert 2 == len(checker.check_legs_against_log(leg0, leg1, _bits(16, in_sync, [2, 5])).differing)


def test_checker_flags_clean_out_of_sync_regions_of_a_persistent_log(tmp_path: Path) -> None:
    """A persistent log's resume rule makes every clean region in sync, so clean + out of sync + differing is lost."""
    leg0, leg1 = _legs(tmp_path, [5])
    in_sync = [r for r in range(16) if r != 5]

    assert [5] == [v.region for v in checker.check_legs_against_log(leg0, leg1, _bits(16, in_sync, [])).violations]


def test_checker_refuses_a_log_of_another_geometry(tmp_path: Path) -> None:
    """Comparing against the wrong log must not pass silently."""
    leg0, leg1 = _legs(tmp_path, [])
    with pytest.raises(ValueError, match="regions"):
        checker.check_legs_against_log(leg0, leg1, _bits(8, [], []))


def _record(tmp_path: Path, lines: list[str], seed: int = 7, torn: str = "") -> checker.WriteLog:
    path = tmp_path / "writes.log"
    path.write_text(f"seed {seed} block 4096 span 65536\n" + "".join(line + "\n" for line in lines) + torn)
    return checker.read_write_log(path)


def test_completed_writes_latest_wins_and_in_flight_may_be_torn(tmp_path: Path) -> None:
    """Block 0 holds write 1 (it overwrote write 0); block 4 may hold a sector mix of write 2 and zeros."""
    wlog = _record(tmp_path, ["S 0 0 8192", "D 0", "S 1 0 4096", "D 1", "S 2 16384 4096"], torn="D 2")
    image = bytearray(65536)
    image[0:4096] = checker.payload(7, 1, 4096)
    image[4096:8192] = checker.payload(7, 0, 8192)[4096:]
    image[16384:16896] = checker.payload(7, 2, 4096)[:512]  # first sector landed, the rest did not
    (tmp_path / "leg").write_bytes(image)

    report = checker.check_completed_writes([tmp_path / "leg", tmp_path / "leg"], wlog)

    assert report.ok, report.text()
    assert (2, 1) == (report.completed, report.in_flight)


def test_completed_writes_reports_a_lost_write_and_differing_legs(tmp_path: Path) -> None:
    """A completed write missing from the image is lost; a second leg that differs is reported."""
    wlog = _record(tmp_path, ["S 0 8192 4096", "D 0"])
    (tmp_path / "a").write_bytes(bytes(65536))
    (tmp_path / "b").write_bytes(bytes(65535) + b"\1")

    report = checker.check_completed_writes([tmp_path / "a", tmp_path / "b"], wlog)

    assert [(8192, 0, "zeros")] == report.lost
    assert (False, 65535) == (report.legs_identical, report.first_leg_diff)
    assert "1 block(s) LOST" in report.text()


def test_writer_records_what_the_checker_verifies(tmp_path: Path) -> None:
    """The guest writer, run on a file, leaves a record and data that check out."""
    target = tmp_path / "disk"
    target.write_bytes(bytes(1 << 20))
    done = checker.run_writer(target, tmp_path / "w.log", seed=3, span=1 << 20, threads=3, max_blocks=8, count=60)
    wlog = checker.read_write_log(tmp_path / "w.log")

    assert (60, 60) == (done, len(wlog.completed))
    assert checker.check_completed_writes([target], wlog).ok


def test_writers_of_two_nodes_share_every_region_but_no_block(tmp_path: Path) -> None:
    """With a stride of 2, two writers on one target write alternate blocks; each record checks its own blocks only."""
    target = tmp_path / "disk"
    target.write_bytes(bytes(1 << 20))
    for phase in (0, 1):
        checker.run_writer(target, tmp_path / f"w{phase}.log", seed=5 + phase, span=1 << 20, threads=2, count=80,
                           stride=2, phase=phase)  # fmt: skip
    logs = [checker.read_write_log(tmp_path / f"w{phase}.log") for phase in (0, 1)]
    for phase, wlog in enumerate(logs):
        assert (wlog.stride, wlog.phase) == (2, phase)
        assert {w.offset // wlog.block % 2 for w in wlog.writes} == {phase}
        assert checker.check_completed_writes([target], wlog).ok
    # A lost write of writer 1 is its failure, not writer 0's.
    lost = logs[1].completed[-1]
    with target.open("r+b") as f:
        f.seek(lost.offset)
        f.write(bytes(lost.length))
    assert (True, False) == tuple(checker.check_completed_writes([target], w).ok for w in logs)


# ------------------------------------------------------------------ the real kernel


class CrashRun:
    """Runs a scenario the first time a test asks for it; later tests of it get the same rounds."""

    def __init__(self, workdirs: pytest.TempPathFactory, rounds: int, seed: int):
        self.workdirs = workdirs
        self.rounds = rounds
        self.seed = seed
        self.done: dict[str, list[RoundResult]] = {}

    def __call__(self, name: str) -> list[RoundResult]:
        """The rounds of scenario ``name``."""
        if name not in self.done:
            scenario = SCENARIOS[name]
            self.done[name] = run_scenario(
                scenario, self.workdirs.mktemp(f"crash-{name}"),
                rounds=rounds_for(scenario, self.rounds), seed=scenario_seed(self.seed, scenario),
            )  # fmt: skip
        return self.done[name]

    def failed(self, name: str, bad: Callable[[RoundResult], bool]) -> str:
        """Assertion message: how to repeat the run, then every round that is ``bad``."""
        head = f"seed {self.seed}: repeat with DMULOG_CRASH_SEED={self.seed} DMULOG_CRASH_ROUNDS={self.rounds}"
        return head + "\n" + "\n\n".join(r.describe() for r in self.done[name] if bad(r))


@pytest.fixture(scope="session")
def crash_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> CrashRun:
    """The scenarios of this session, with the configured rounds and one seed."""
    rounds = configured_rounds(request.config.getoption("crash_rounds", default=None))
    run = CrashRun(tmp_path_factory, rounds, configured_seed())
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            f"crash scenarios: seed {run.seed}, {rounds} node-crash rounds (DMULOG_CRASH_SEED to repeat)"
        )
    return run


@pytest.mark.kernel
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_log_knows_every_region_that_differs_at_the_crash(crash_run: CrashRun, name: str) -> None:
    """Before reactivation, every region whose legs differ is dirty in Redis (zero violations)."""
    rounds = crash_run(name)
    assert 0 == sum(r.violations for r in rounds), crash_run.failed(name, lambda r: r.violations > 0)


@pytest.mark.kernel
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_completed_writes_survive_and_legs_match_after_recovery(crash_run: CrashRun, name: str) -> None:
    """Completed writes are on the primary at the crash; after a new incarnation resyncs, both legs hold them."""
    rounds = crash_run(name)
    assert all(r.data_ok for r in rounds), crash_run.failed(name, lambda r: not r.data_ok)


@pytest.mark.kernel
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_kernel_log_has_no_timeout_or_error(crash_run: CrashRun, name: str) -> None:
    """No "timed out" (allowed only while Redis is down > 15 s), "Insufficient space", BUG or WARNING line."""
    rounds = crash_run(name)
    problems = [p for r in rounds for p in r.kernel_problems]
    assert [] == problems, crash_run.failed(name, lambda r: bool(r.kernel_problems))


@pytest.mark.kernel
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_round_runs_to_the_end(crash_run: CrashRun, name: str) -> None:
    """Every guest step finished in time and the recovery boot removed the mirror cleanly."""
    rounds = crash_run(name)
    assert [] == [e for r in rounds for e in r.errors], crash_run.failed(name, lambda r: bool(r.errors))
