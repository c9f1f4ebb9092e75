"""Pure part of the chaos runner (issue 17): fault schedules and verdicts.

A :class:`Schedule` is drawn from one integer seed, so a failing run is
replayed with ``bench/chaos.py --seed S --runs 1``.  It says which peers
start when and with which options, which hostile peers join, and which faults
happen when (SIGSTOP/SIGCONT, SIGKILL + restart, seeder and tracker restarts,
connections cut by the kernel, a full disk).  :func:`judge` turns what a run
observed into a verdict.  Nothing here starts a process or reads a clock, so
both are unit-tested in memory (``tests/test_chaos_schedule.py``); the
process side lives in ``bench/chaos.py``.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field
from typing import Iterable

#: Fault kinds, in the order the schedule draws them.
PEER_FAULTS = ("stop", "kill", "netcut")
SWARM_FAULTS = ("seeder-kill", "tracker-kill")
HOSTILE_MODES = ("silent", "wrong", "garbage", "drop")

#: Seconds a peer may go without a verified piece before it gives up (its
#: ``--stall-timeout``).  Longer than any fault lasts, so only a real stall
#: (no reachable source) makes an honest peer fail.
STALL_TIMEOUT = 20.0
#: ``--tracker-timeout``: longer than the tracker is ever down.
TRACKER_TIMEOUT = 20.0
#: Slack on top of the stall timeout before the runner calls a silent peer
#: hung (its tick runs once a second; the machine is shared).
GRACE = 15.0
#: Most seconds a peer seeds or lingers after completing.
MAX_LINGER = 5.0


@dataclass(frozen=True)
class PeerPlan:
    """One honest ``murder peer``: when it starts and its extra options."""

    name: str
    start: float
    args: tuple[str, ...] = ()
    disk_full: bool = False


@dataclass(frozen=True)
class Fault:
    """One fault: ``kind`` hits ``target`` at ``at`` seconds for ``duration``.

    ``at`` counts from the swarm's start, or from the seeder's log line
    "every piece has left once" when ``trigger == "first-copy"`` (the seeder
    is only killed once a full copy is out).  ``detail`` is ``DROP`` or
    ``REJECT`` for a netcut.
    """

    kind: str
    target: str
    at: float
    duration: float
    trigger: str | None = None
    detail: str = ""

    def describe(self) -> str:
        when = f"first-copy+{self.at:.2f}s" if self.trigger else f"t={self.at:.2f}s"
        what = {"stop": "SIGSTOP, SIGCONT after", "kill": "SIGKILL, restart after",
                "seeder-kill": "SIGKILL, restart after",
                "tracker-kill": "SIGKILL, restart from its dfile after",
                "netcut": f"{self.detail} its port, restore after"}[self.kind]
        return f"{when:>20}  {self.target:8} {what} {self.duration:.2f}s"


@dataclass(frozen=True)
class Hostile:
    """A hostile peer (``tests/hostile_peer.py --mode``) joining at ``start``."""

    mode: str
    start: float


@dataclass(frozen=True)
class Schedule:
    """Everything one chaos run does, drawn from ``seed``."""

    seed: int
    size: int
    piece_length: int
    seeder_args: tuple[str, ...]
    peers: tuple[PeerPlan, ...]
    hostiles: tuple[Hostile, ...] = ()
    faults: tuple[Fault, ...] = ()
    netns: bool = False

    @property
    def honest(self) -> list[str]:
        return [p.name for p in self.peers]

    def horizon(self, first_copy_at: float | None = None) -> float:
        """When the last fault is over (seconds from the swarm's start).

        A seeder fault counts from ``first_copy_at`` when known; before that,
        an upper guess (the run's deadline is recomputed once it is known).
        """
        end = max([p.start for p in self.peers] + [h.start for h in self.hostiles] + [0.0])
        for f in self.faults:
            base = (first_copy_at if first_copy_at is not None else 30.0) if f.trigger else 0.0
            end = max(end, base + f.at + f.duration)
        return end

    def describe(self) -> list[str]:
        lines = [f"seed {self.seed}: {len(self.peers)} peers, {self.size / 2**20:.2f} MiB in "
                 f"{self.size // self.piece_length} x {self.piece_length // 1024} KiB pieces, "
                 f"seeder {' '.join(self.seeder_args) or '(defaults)'}"
                 + (", in its own network namespace" if self.netns else "")]
        for p in self.peers:
            extra = " ".join(p.args) + (" [disk full]" if p.disk_full else "")
            lines.append(f"{'t=' + format(p.start, '.2f') + 's':>20}  {p.name:8} starts {extra}")
        for h in self.hostiles:
            lines.append(f"{'t=' + format(h.start, '.2f') + 's':>20}  hostile  {h.mode}")
        lines += [f.describe() for f in sorted(self.faults, key=_fault_order)]
        return lines

    def to_json(self) -> dict:
        return asdict(self)


def _fault_order(f: Fault) -> tuple[int, float]:
    return (1 if f.trigger else 0, f.at)


def draw(seed: int, peers: tuple[int, int] = (8, 16), *, disk_full: bool = False,
         netcut: bool = False, kinds: Iterable[str] | None = None) -> Schedule:
    """Draw a schedule from ``seed``: ``peers`` = (least, most) honest peers.

    ``disk_full`` / ``netcut`` allow those faults (they need root: a tmpfs in
    a mount namespace, iptables in a network namespace); without them a
    netcut becomes a SIGKILL + restart and no peer gets the small disk.
    ``kinds`` limits the fault kinds (default: all).  Every random number is
    drawn whatever the flags, so a seed means the same swarm everywhere,
    only with the unavailable faults left out or substituted.  Each faulted
    peer gets one fault, so faults never overlap on a process.
    """
    rng = random.Random(seed)
    allowed = set(kinds) if kinds is not None else set(PEER_FAULTS + SWARM_FAULTS + ("hostile",))
    n = rng.randint(*peers)
    piece_length = rng.choice([2**15, 2**16, 2**16, 2**17])
    size = rng.choice([2, 3, 4]) * 2**20 - rng.randrange(0, piece_length)
    seeder_rate = rng.choice(["1M", "2M", "4M"])
    seeder_args = ["--max-upload-rate", seeder_rate] if rng.random() < 0.5 else []
    full_draw, full_index = rng.random(), rng.randrange(n)
    full_peer = full_index if disk_full and full_draw < 0.3 else None
    plans: list[PeerPlan] = []
    for i in range(n):
        args: list[str] = []
        r, down, up = rng.random(), rng.choice(["512K", "1M", "2M"]), \
            rng.choice(["256K", "512K", "1M"])
        if r < 0.2:
            args += ["--max-download-rate", down]
        elif r < 0.4:
            args += ["--max-upload-rate", up]
        linger, seed_time = rng.random(), rng.choice(["0", "0", "1", "3"])
        if linger < 0.3:
            args += ["--seed-until-swarm-done", "--max-linger", f"{MAX_LINGER:g}"]
        else:
            args += ["--seed-time", seed_time]
        late, at = rng.random(), round(rng.uniform(0.5, 5.0), 2)
        start = 0.0 if late < 0.7 else at
        plans.append(PeerPlan(f"p{i:02d}", start, tuple(args), disk_full=(i == full_peer)))
    hostiles: list[Hostile] = []
    for mode in HOSTILE_MODES:
        join, at = rng.random(), round(rng.uniform(0.0, 3.0), 2)
        if "hostile" in allowed and join < 0.3:
            hostiles.append(Hostile(mode, at))
    faults: list[Fault] = []
    victims = [p.name for p in plans]
    rng.shuffle(victims)
    starts = {p.name: p.start for p in plans}
    count = rng.randint(1, max(1, n // 3))
    for name in victims[:count]:
        kind = rng.choice(PEER_FAULTS)
        at = round(starts[name] + rng.uniform(0.3, 6.0), 2)
        durations = {"stop": round(rng.uniform(0.5, 6.0), 2),
                     "kill": round(rng.uniform(0.1, 2.0), 2),
                     "netcut": round(rng.uniform(1.0, 5.0), 2)}
        detail = rng.choice(["DROP", "REJECT"])
        if kind == "netcut" and not netcut:
            kind = "kill"
        if kind not in allowed or name == (f"p{full_peer:02d}" if full_peer is not None else ""):
            continue
        faults.append(Fault(kind, name, at, durations[kind],
                            detail=detail if kind == "netcut" else ""))
    seeder_draw, at, duration = rng.random(), round(rng.uniform(0.0, 1.0), 2), \
        round(rng.uniform(0.3, 3.0), 2)
    if "seeder-kill" in allowed and seeder_draw < 0.4:
        faults.append(Fault("seeder-kill", "seeder", at, duration, trigger="first-copy"))
    tracker_draw, at, duration = rng.random(), round(rng.uniform(0.2, 5.0), 2), \
        round(rng.uniform(0.3, 4.0), 2)
    if "tracker-kill" in allowed and tracker_draw < 0.4:
        faults.append(Fault("tracker-kill", "tracker", at, duration))
    return Schedule(seed=seed, size=size, piece_length=piece_length,
                    seeder_args=tuple(seeder_args), peers=tuple(plans),
                    hostiles=tuple(hostiles), faults=tuple(faults), netns=netcut)


# ------------------------------------------------------------------ verdict


@dataclass
class PeerOutcome:
    """What the runner saw of one honest peer (its last incarnation).

    ``status`` is the ``--status-fd`` line (``complete PATH`` /
    ``failed REASON``), ``None`` if it wrote none.  ``hung``: it went
    ``STALL_TIMEOUT + GRACE`` seconds, counted from when it was up (its
    "on port" line), without a new piece and without a status line while not
    stopped by the runner (its own ``--stall-timeout``
    should have ended it); ``capped``: still downloading, with progress, when
    the run reached its time cap.
    ``target`` is ``absent``, ``ok`` (right sha256) or ``corrupt``;
    ``leftovers`` lists other files in its destination after the run;
    ``bad_target_seen`` is set if, at any moment, a file at the target did
    not have the right sha256.
    """

    name: str
    status: str | None
    exit_code: int | None
    target: str
    leftovers: list[str] = field(default_factory=list)
    disk_full: bool = False
    bad_target_seen: bool = False
    completed_at: float | None = None
    exited_late: bool = False
    hung: bool = False
    capped: bool = False
    slow_start: bool = False


@dataclass
class Verdict:
    """``ok`` only when there are no problems; ``problems`` are one-line reasons."""

    ok: bool
    problems: list[str]
    hangs: int = 0
    corrupt_or_partial: int = 0
    failures: int = 0
    leftover_processes: int = 0


def judge(outcomes: list[PeerOutcome], leftover_pids: list[int] = (),  # type: ignore[assignment]
          seeder_copies: float | None = None, seeder_bound: float | None = None) -> Verdict:
    """The checks every run must pass.

    - each honest peer said ``complete`` (exit 0, right sha256 at the target,
      nothing else left) or, only for the full-disk peer, ``failed`` with
      "no space left on device" and an empty destination; any other failure is
      reported with its one-line reason;
    - a peer silent (no piece, no status) for ``STALL_TIMEOUT + GRACE`` is a hang;
    - a target with the wrong content, at any moment, or a ``.part`` next to
      a complete target, is corrupt/partial;
    - no process of the run is left once it was torn down;
    - the seeder's upload stays within ``seeder_bound`` payload copies.
    """
    problems: list[str] = []
    hangs = corrupt = failures = 0
    for o in outcomes:
        if o.bad_target_seen or o.target == "corrupt":
            corrupt += 1
            problems.append(f"{o.name}: CORRUPT target (wrong sha256 seen at the target)")
        if o.hung:
            hangs += 1
            problems.append(f"{o.name}: HANG, no piece and no complete/failed status for "
                            f"{STALL_TIMEOUT + GRACE:g}s")
            continue
        if o.slow_start:
            failures += 1
            problems.append(f"{o.name}: SLOW START, not up 120s after it was started "
                            f"(overloaded machine?)")
            continue
        if o.capped:
            failures += 1
            problems.append(f"{o.name}: still downloading when the run was capped")
            continue
        if o.status is None:
            failures += 1
            problems.append(f"{o.name}: exited {o.exit_code} without a complete/failed status")
            continue
        if o.exited_late:
            hangs += 1
            problems.append(f"{o.name}: HANG, still running after its status and linger")
        if o.status.startswith("complete"):
            if o.exit_code not in (0, None):
                failures += 1
                problems.append(f"{o.name}: said complete but exited {o.exit_code}")
            if o.target != "ok":
                corrupt += 1
                problems.append(f"{o.name}: said complete but the target is {o.target}")
            if o.leftovers:
                corrupt += 1
                problems.append(f"{o.name}: PARTIAL files left beside the target: "
                                f"{', '.join(o.leftovers)}")
            if o.disk_full:
                failures += 1
                problems.append(f"{o.name}: completed on a disk too small for the payload?")
            continue
        reason = o.status.removeprefix("failed ").strip()
        if o.target != "absent" or o.leftovers:
            corrupt += 1
            left = o.leftovers + ([o.target] if o.target != "absent" else [])
            problems.append(f"{o.name}: PARTIAL, failed but left {', '.join(left)}")
        if o.exit_code == 0:
            failures += 1
            problems.append(f"{o.name}: said failed but exited 0")
        if o.disk_full and "no space left on device" in reason.lower():
            continue  # the expected failure, with its reason
        failures += 1
        problems.append(f"{o.name}: FAILED: {reason}")
    leftovers = len(list(leftover_pids))
    if leftovers:
        problems.append(f"LEFTOVER processes after teardown: pids {sorted(leftover_pids)}")
    if seeder_copies is not None and seeder_bound is not None and seeder_copies > seeder_bound:
        problems.append(f"seeder uploaded {seeder_copies:.2f} payload copies "
                        f"(bound {seeder_bound:g})")
    return Verdict(ok=not problems, problems=problems, hangs=hangs,
                   corrupt_or_partial=corrupt, failures=failures,
                   leftover_processes=leftovers)


def longest_wait(samples: list[tuple[float, int]],
                 excluded: list[tuple[float, float]] = ()) -> float:  # type: ignore[assignment]
    """Longest time a peer waited for its next verified piece.

    ``samples`` are ``(time, pieces)`` from its progress lines, in order;
    spans overlapping ``excluded`` windows (the peer itself stopped, killed
    or cut off) do not count, nor does the time before its first piece or
    after its last.  A proxy for "time lost to a wedged peer".
    """
    best = 0.0
    since: float | None = None
    last = -1
    for t, count in samples:
        if count > last:
            if since is not None and last > 0 and not any(
                    a < t and since < b for a, b in excluded):
                best = max(best, t - since)
            since, last = t, count
    return best


def _median(xs: list[float]) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    mid = len(xs) // 2
    return round(xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2, 2)


_EVENT_KINDS = (("SIGSTOP peer", re.compile(r"SIGSTOP p\d+ \(")),
                ("SIGKILL+restart peer", re.compile(r"restart p\d+ ")),
                ("SIGKILL+restart seeder", re.compile(r"restart seeder")),
                ("SIGKILL+restart tracker", re.compile(r"restart tracker")),
                ("iptables DROP", re.compile(r"iptables DROP")),
                ("iptables REJECT", re.compile(r"iptables REJECT")),
                ("no-op (target not running)", re.compile(r"no-op")))


def count_faults(runs: list[dict]) -> dict[str, int]:
    """Faults actually carried out (from each run's event log), hostile
    peers and full-disk peers (from the schedules)."""
    counts = {name: 0 for name, _ in _EVENT_KINDS}
    for r in runs:
        for event in r.get("events", []):
            for name, pattern in _EVENT_KINDS:
                if pattern.search(event):
                    counts[name] += 1
        for h in r.get("schedule", {}).get("hostiles", []):
            key = f"hostile {h['mode']}"
            counts[key] = counts.get(key, 0) + 1
        counts["full-disk peer"] = counts.get("full-disk peer", 0) + sum(
            1 for p in r.get("schedule", {}).get("peers", []) if p.get("disk_full"))
    return counts


def summarize(runs: list[dict]) -> dict:
    """Totals over runs (each a ``run_result`` dict from ``bench/chaos.py``)."""
    verdicts = [r["verdict"] for r in runs]
    times = [r["max_completion"] for r in runs if r.get("max_completion") is not None]
    waits = [(r.get("longest_wait") or 0.0, r["seed"]) for r in runs]
    failed = [(r["seed"], p) for r in runs for p in r["verdict"]["problems"]]
    return {
        "runs": len(runs),
        "passed": sum(1 for v in verdicts if v["ok"]),
        "hangs": sum(v["hangs"] for v in verdicts),
        "corrupt_or_partial": sum(v["corrupt_or_partial"] for v in verdicts),
        "failures": sum(v["failures"] for v in verdicts),
        "leftover_processes": sum(v["leftover_processes"] for v in verdicts),
        "max_completion_s": round(max(times), 2) if times else None,
        "longest_wait_for_a_piece_s": round(max(waits)[0], 2) if waits else None,
        "longest_wait_seed": max(waits)[1] if waits else None,
        "max_seeder_copies": max((r.get("seeder_copies") or 0.0 for r in runs), default=None),
        "median_seeder_copies": _median([r["seeder_copies"] for r in runs
                                         if r.get("seeder_copies") is not None]),
        "peers": sum(len(r.get("schedule", {}).get("peers", [])) for r in runs),
        "faults": count_faults(runs),
        "problems": [f"seed {s}: {p}" for s, p in failed],
    }
