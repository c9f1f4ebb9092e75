"""Unit tests for bench/chaos_schedule.py: fault schedules and run verdicts (issue 17).

The schedule is what makes a chaos failure reproducible (one seed, one
swarm); the verdict is what decides a run passed.  Both are pure, so they are
tested here in memory; ``tests/test_chaos.py`` runs real swarms.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import chaos_schedule as cs  # noqa: E402
from chaos_schedule import PeerOutcome, judge  # noqa: E402


def complete(name: str, **kw) -> PeerOutcome:
    return PeerOutcome(name=name, status=f"complete /x/{name}/payload", exit_code=0,
                       target="ok", **kw)


class DrawTests:
    """Schedules drawn from a seed."""

    def test_same_seed_same_schedule(self) -> None:
        """A seed replays exactly: that is how a failing run is reproduced."""
        assert cs.draw(1234) == cs.draw(1234)
        assert cs.draw(1234).describe() == cs.draw(1234).describe()

    def test_seeds_differ(self) -> None:
        """Different seeds give different swarms (not one schedule 200 times)."""
        assert len({tuple(cs.draw(s).describe()) for s in range(50)}) == 50

    def test_peer_count_within_range(self) -> None:
        """The number of honest peers is drawn within the asked range."""
        counts = {len(cs.draw(s, (8, 16)).peers) for s in range(300)}
        assert min(counts) >= 8 and max(counts) <= 16 and len(counts) > 5

    def test_faults_hit_started_peers_once(self) -> None:
        """Every peer fault targets an existing peer, after it started, at
        most one fault per peer, never the full-disk peer."""
        for seed in range(300):
            s = cs.draw(seed, disk_full=True, netcut=True)
            starts = {p.name: p.start for p in s.peers}
            full = {p.name for p in s.peers if p.disk_full}
            peer_faults = [f for f in s.faults if f.kind in cs.PEER_FAULTS]
            assert len({f.target for f in peer_faults}) == len(peer_faults), s.describe()
            for f in peer_faults:
                assert f.target in starts and f.target not in full
                assert f.at > starts[f.target] and f.duration > 0

    def test_seeder_killed_only_after_first_copy(self) -> None:
        """The seeder is only killed once every piece has left it."""
        kills = [f for s in range(300) for f in cs.draw(s).faults if f.kind == "seeder-kill"]
        assert kills and all(f.trigger == "first-copy" for f in kills)

    def test_root_only_faults_need_their_flags(self) -> None:
        """Without root there is no netcut and no full disk; with it, both occur."""
        plain = [cs.draw(s) for s in range(300)]
        assert not any(f.kind == "netcut" for s in plain for f in s.faults)
        assert not any(p.disk_full for s in plain for p in s.peers)
        rooted = [cs.draw(s, disk_full=True, netcut=True) for s in range(300)]
        assert any(f.kind == "netcut" for s in rooted for f in s.faults)
        assert any(p.disk_full for s in rooted for p in s.peers)

    def test_flags_do_not_change_the_swarm(self) -> None:
        """Root or not, a seed gives the same peers, sizes and hostiles."""
        for seed in range(100):
            a, b = cs.draw(seed), cs.draw(seed, disk_full=True, netcut=True)
            assert (a.size, a.piece_length, a.seeder_args, a.hostiles) == \
                (b.size, b.piece_length, b.seeder_args, b.hostiles)
            assert [(p.name, p.start, p.args) for p in a.peers] == \
                [(p.name, p.start, p.args) for p in b.peers]

    def test_kinds_filter(self) -> None:
        """``kinds`` limits the faults drawn."""
        for seed in range(100):
            s = cs.draw(seed, kinds=["stop"])
            assert all(f.kind == "stop" for f in s.faults) and not s.hostiles

    def test_every_kind_is_drawn(self) -> None:
        """Over a few hundred seeds every fault kind and hostile mode occurs."""
        kinds = {f.kind for s in range(300)
                 for f in cs.draw(s, disk_full=True, netcut=True).faults}
        assert kinds == set(cs.PEER_FAULTS + cs.SWARM_FAULTS)
        modes = {h.mode for s in range(300) for h in cs.draw(s).hostiles}
        assert modes == set(cs.HOSTILE_MODES)

    def test_horizon_covers_every_fault(self) -> None:
        """The horizon is when the last fault ends, the seeder's counted from
        the first-copy moment."""
        s = cs.Schedule(seed=0, size=1, piece_length=1, seeder_args=(),
                        peers=(cs.PeerPlan("p00", 0.0),),
                        faults=(cs.Fault("stop", "p00", 2.0, 3.0),
                                cs.Fault("seeder-kill", "seeder", 1.0, 2.0,
                                         trigger="first-copy")))
        assert s.horizon(first_copy_at=1.0) == 5.0
        assert s.horizon(first_copy_at=10.0) == 13.0

    def test_describe_names_every_fault(self) -> None:
        """The printed schedule has the seed and one line per peer, hostile and fault."""
        s = cs.draw(36, (8, 8), disk_full=True, netcut=True)
        lines = s.describe()
        assert lines[0].startswith("seed 36:")
        assert len(lines) == 1 + len(s.peers) + len(s.hostiles) + len(s.faults)


class JudgeTests:
    """The verdict of a run."""

    def test_all_complete_passes(self) -> None:
        """Every peer complete and verified, nothing left: ok."""
        v = judge([complete("p00"), complete("p01")], [], 1.2, 4.0)
        assert v.ok and v.problems == []

    def test_hang(self) -> None:
        """A peer silent past the hang rule is a hang."""
        v = judge([complete("p00"), PeerOutcome("p01", None, None, "absent",
                                                leftovers=["payload.part"], hung=True)])
        assert not v.ok and v.hangs == 1 and "HANG" in v.problems[0]

    def test_corrupt_target_seen_mid_run(self) -> None:
        """A wrong file at the target, even once, fails the run."""
        v = judge([complete("p00", bad_target_seen=True)])
        assert not v.ok and v.corrupt_or_partial >= 1

    def test_part_left_beside_complete_target(self) -> None:
        """A .part next to a complete payload is partial state left behind."""
        v = judge([complete("p00", leftovers=["payload.bin.part"])])
        assert not v.ok and v.corrupt_or_partial == 1 and "PARTIAL" in v.problems[0]

    def test_failure_reports_its_reason(self) -> None:
        """An honest peer that fails is a failure, with its one-line reason."""
        o = PeerOutcome("p03", "failed no piece verified for 20s with 2 peers connected", 1,
                        "absent")
        v = judge([o])
        assert not v.ok and v.failures == 1
        assert "no piece verified for 20s" in v.problems[0]

    def test_failure_leaving_a_target_is_partial(self) -> None:
        """A failed peer must leave neither a target nor a .part."""
        o = PeerOutcome("p03", "failed disk", 1, "absent", leftovers=["payload.bin.part"])
        assert judge([o]).corrupt_or_partial == 1

    def test_disk_full_is_the_expected_failure(self) -> None:
        """The small-disk peer failing with ENOSPC and an empty directory is ok."""
        o = PeerOutcome("p02", "failed storage error at /d/x.part: no space left on device",
                        1, "absent", disk_full=True)
        assert judge([o, complete("p00")]).ok

    def test_disk_full_other_reason_is_a_failure(self) -> None:
        """The small-disk peer failing for another reason is reported."""
        o = PeerOutcome("p02", "failed tracker unreachable", 1, "absent", disk_full=True)
        assert judge([o]).failures == 1

    def test_exit_without_status(self) -> None:
        """A peer that died without saying why is a failure."""
        v = judge([PeerOutcome("p01", None, -11, "absent")])
        assert not v.ok and v.failures == 1 and "without a complete/failed" in v.problems[0]

    def test_capped(self) -> None:
        """A peer still downloading at the run cap is reported (not a hang)."""
        v = judge([PeerOutcome("p01", None, None, "absent", capped=True)])
        assert not v.ok and v.hangs == 0 and v.failures == 1

    def test_slow_start_is_not_a_hang(self) -> None:
        """A peer that never got going (an overloaded machine) is reported
        as a failure of its own kind, not as a hang."""
        v = judge([PeerOutcome("p01", None, None, "absent", slow_start=True)])
        assert not v.ok and v.hangs == 0 and "SLOW START" in v.problems[0]

    def test_leftover_processes(self) -> None:
        """Processes left after teardown fail the run."""
        v = judge([complete("p00")], [4242])
        assert not v.ok and v.leftover_processes == 1 and "4242" in v.problems[0]

    def test_seeder_upload_bound(self) -> None:
        """The seeder uploading more copies than the bound fails the run."""
        assert not judge([complete("p00")], [], 5.0, 4.0).ok
        assert judge([complete("p00")], [], 3.9, 4.0).ok

    def test_still_running_after_completion(self) -> None:
        """A peer that completed but never exited counts as a hang."""
        v = judge([complete("p00", exited_late=True)])
        assert not v.ok and v.hangs == 1


class LongestWaitTests:
    """The 'longest wait for a piece' proxy for time lost to a wedged peer."""

    def test_gaps(self) -> None:
        """The longest span between piece-count increases, after the first piece."""
        samples = [(0.0, 0), (1.0, 0), (2.0, 3), (2.5, 5), (6.5, 6), (7.0, 9)]
        assert cs.longest_wait(samples) == pytest.approx(4.0)

    def test_before_first_piece_not_counted(self) -> None:
        """Start-up (no piece yet) is not a wait for a wedged peer."""
        assert cs.longest_wait([(0.0, 0), (9.0, 0), (10.0, 1), (10.5, 2)]) == pytest.approx(0.5)

    def test_excluded_windows(self) -> None:
        """Spans overlapping the peer's own stop/kill/cut are not counted."""
        samples = [(0.0, 1), (1.0, 2), (6.0, 3), (7.0, 4)]
        assert cs.longest_wait(samples, [(2.0, 5.0)]) == pytest.approx(1.0)
        assert cs.longest_wait(samples) == pytest.approx(5.0)


class SummaryTests:
    """Totals over runs."""

    def test_summary_counts(self) -> None:
        """Runs, passes, hangs and the problems (with their seeds) are totalled."""
        ok = {"seed": 1, "verdict": vars(judge([complete("p00")])), "max_completion": 3.0,
              "longest_wait": 1.5, "seeder_copies": 1.1}
        bad = {"seed": 2, "verdict": vars(judge([PeerOutcome("p01", None, None, "absent",
                                                            hung=True)])),
               "max_completion": None, "longest_wait": 4.0, "seeder_copies": 2.0}
        s = cs.summarize([ok, bad])
        assert (s["runs"], s["passed"], s["hangs"]) == (2, 1, 1)
        assert s["max_completion_s"] == 3.0 and s["longest_wait_seed"] == 2
        assert s["problems"] and s["problems"][0].startswith("seed 2: p01: HANG")

    def test_fault_counts(self) -> None:
        """Faults are counted from what the run did, not from what was planned."""
        run = {"events": ["t=  1.00s SIGSTOP p03 (pid 7)", "t=  2.00s SIGCONT p03",
                          "t=  3.00s SIGKILL p04: no-op, not running",
                          "t=  4.00s restart tracker from its dfile (pid 9)"],
               "schedule": {"hostiles": [{"mode": "silent", "start": 0.0}],
                            "peers": [{"disk_full": True}, {"disk_full": False}]}}
        counts = cs.count_faults([run])
        assert counts["SIGSTOP peer"] == 1 and counts["SIGKILL+restart peer"] == 0
        assert counts["no-op (target not running)"] == 1
        assert counts["SIGKILL+restart tracker"] == 1
        assert counts["hostile silent"] == 1 and counts["full-disk peer"] == 1
