"""Chaos runner (issue 17): whole swarms under randomized faults; nothing hangs.

Each run is a real swarm on loopback -- ``murder tracker`` (with ``--dfile``),
``murder seed``, 8..16 ``murder peer`` processes and a few hostile peers --
under a fault schedule drawn from the run's seed (``bench/chaos_schedule.py``):
SIGSTOP/SIGCONT and SIGKILL + restart of peers, SIGKILL + restart of the
seeder once every piece has left it, tracker SIGKILL and restart from its
dfile, hostile peers (silent, wrong blocks, garbage, dropping mid-piece),
rate-capped links, a full disk (root: a tmpfs in a mount namespace) and
connections cut by the kernel (root: iptables DROP/REJECT inside the run's
own network namespace).  Every run checks that each honest peer completes
with the right sha256 or fails with a one-line reason within the stated
bound, that no target is ever partial, that no process is left, and that the
seeder's upload stays bounded::

    python bench/chaos.py --runs 200 --seed 1 --peers 8..16 --jobs 2
    python bench/chaos.py --seed 1234 --runs 1 --keep     # replay one run
    python bench/chaos.py --scenario wedge --repeat 5     # the wedged-peer figure

Each run is a child process (in ``unshare -n`` when root) in its own process
group; the parent enforces a hard timeout and finds leftovers by process
group.  Results go to ``bench/results/chaos-*.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import chaos_schedule as cs  # noqa: E402

HOSTILE = HERE.parent / "tests" / "hostile_peer.py"
RESULTS = HERE / "results"
FIRST_COPY = "every piece has left once"
#: A run ends at the latest this long after its last fault (peers still
#: downloading then are reported; a peer without progress is caught sooner,
#: by the hang rule: no piece for STALL_TIMEOUT + GRACE).
RUN_CAP = 150.0
#: A process not up (no "on port" line) this long after it was started is
#: reported as a slow start (an overloaded machine), not as a hang.
STARTUP_LIMIT = 120.0
_PIECES = re.compile(rb"\((\d+)/\d+ pieces\)")
_PORT = re.compile(r" on port (\d+)")
_PROGRESS = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d\d\d) .*\((\d+)/(\d+) pieces\)\s+down "
                       r"\s*([\d.]+) MiB/s\s+up\s+([\d.]+) MiB/s")
_TOTALS = re.compile(r"totals: uploaded (\d+) bytes")


#: ``--murder PATH``: another ``murder`` executable (e.g. an older checkout's
#: wrapper) for side-by-side comparisons; default the venv's.
MURDER_OVERRIDE: str | None = None


#: A scheduled step of a run: (seconds from the swarm's start, what, do it).
Action = tuple[float, str, Callable[[], None]]


def murder_bin() -> str:
    """The ``murder`` console script beside this interpreter (the venv's)."""
    if MURDER_OVERRIDE:
        return MURDER_OVERRIDE
    path = Path(sys.executable).parent / "murder"
    if not path.exists():
        raise SystemExit(f"chaos: {path} not found; run `make venv` and use .venv/bin/python")
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            h.update(chunk)
    return h.hexdigest()


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def group_pids(pgid: int) -> list[int]:
    """PIDs of live processes in process group ``pgid`` (from /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def descendants(pid: int) -> list[int]:
    """Children, grandchildren… of ``pid`` (from /proc), deepest last."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                kids = [int(x) for x in f.read().split()]
        except OSError:
            kids = []
        out += kids
        todo += kids
    return out


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


class Proc:
    """One process incarnation: output in files, status file, killed by PID."""

    def __init__(self, name: str, argv: list[str], logdir: Path, status: Path | None = None,
                 **kw) -> None:
        self.name = name
        self.err = logdir / f"{name}.err"
        self.status_path = status
        fds: tuple[int, ...] = ()
        fd = -1
        if status is not None:
            fd = os.open(status, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            argv = [a.replace("{status_fd}", str(fd)) for a in argv]
            fds = (fd,)
        with open(logdir / f"{name}.out", "ab") as out, open(self.err, "ab") as err:
            self.popen = subprocess.Popen(argv, stdout=out, stderr=err,
                                          stdin=subprocess.DEVNULL, pass_fds=fds, **kw)
        if fd >= 0:
            os.close(fd)
        self.pid = self.popen.pid
        self.started = time.monotonic()
        self.stopped = False
        self.up_at: float | None = None  # monotonic time of its "on port" line

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            _kill(self.pid, sig)

    def terminate(self, timeout: float = 10.0) -> bool:
        """SIGCONT + SIGTERM, wait; True if it exited by itself in time."""
        if not self.alive():
            return True
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.popen.wait(5)
            return False

    def kill(self) -> None:
        """SIGKILL it and anything it started (the full-disk peer's shell
        wrapper has the peer as a child)."""
        if self.alive():
            for pid in [self.pid, *descendants(self.pid)]:
                _kill(pid, signal.SIGKILL)
        self.popen.wait(5)

    def stderr(self) -> str:
        try:
            return self.err.read_text(errors="replace")
        except OSError:
            return ""

    def status(self) -> str | None:
        if self.status_path is None:
            return None
        try:
            text = self.status_path.read_text().strip()
        except OSError:
            return None
        return text or None

    def last_pieces(self) -> int | None:
        """Pieces in its latest progress line (reads only what is new)."""
        try:
            with open(self.err, "rb") as f:
                f.seek(getattr(self, "_offset", 0))
                data = f.read()
        except OSError:
            return getattr(self, "_last", None)
        cut = data.rfind(b"\n") + 1
        self._offset = getattr(self, "_offset", 0) + cut
        found = _PIECES.findall(data[:cut])
        if found:
            self._last = int(found[-1])
        return getattr(self, "_last", None)

    def port(self) -> int | None:
        if getattr(self, "_port", None) is None:
            m = _PORT.search(self.stderr())
            self._port = int(m.group(1)) if m else None
        return self._port


def progress_samples(text: str, day_offset: float) -> list[tuple[float, int, float]]:
    """``(t, pieces, up MiB/s)`` from a log's timestamped progress lines;
    ``t`` = seconds of the local day minus ``day_offset``."""
    out = []
    for line in text.splitlines():
        m = _PROGRESS.match(line)
        if m:
            h, mi, s, ms = (int(m.group(i)) for i in range(1, 5))
            t = h * 3600 + mi * 60 + s + ms / 1000 - day_offset
            out.append((t, int(m.group(5)), float(m.group(8))))
    return out


def uploaded_bytes(text: str, interval: float) -> tuple[float, bool]:
    """A seeder incarnation's upload: its totals line (exact) when it was
    stopped cleanly, else the sum of its progress lines' rates (estimate)."""
    m = _TOTALS.search(text)
    if m:
        return float(m.group(1)), True
    return sum(up for _, _, up in progress_samples(text, 0.0)) * interval * 2**20, False


# ------------------------------------------------------------------ one run


class Run:
    """One chaos run, executed in this process (a child of the runner)."""

    PROGRESS = 0.5

    def __init__(self, schedule: cs.Schedule, workdir: Path, snub_timeout: float | None,
                 seeder_bound: float | None, timeouts: bool = True) -> None:
        self.s = schedule
        self.dir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.snub = snub_timeout
        self.timeouts = timeouts  # False: the peers' default stall/tracker timeouts
        self.seeder_bound = seeder_bound
        self.murder = murder_bin()
        self.events: list[str] = []
        self.procs: list[Proc] = []
        self.peers: dict[str, list[Proc]] = {}
        self.seeders: list[Proc] = []
        self.trackers: list[Proc] = []
        self.hostiles: list[Proc] = []
        self.completed_at: dict[str, float] = {}
        self.bad_target: set[str] = set()
        self._checked: dict[str, tuple[int, int]] = {}
        self.first_copy_at: float | None = None
        self.excluded: dict[str, list[tuple[float, float]]] = {}
        self.cuts: list[list[str]] = []
        self.diagnoses: dict[str, str] = {}
        #: Last sign of progress of each peer (start, a new piece, SIGCONT).
        self.activity: dict[str, float] = {}
        self._pieces: dict[str, int] = {}

    # -- set-up
    def log(self, text: str) -> None:
        self.events.append(f"t={self.now():6.2f}s {text}" if hasattr(self, "t0") else text)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def start(self, name: str, argv: list[str], **kw) -> Proc:
        proc = Proc(name, argv, self.logs, **kw)
        self.procs.append(proc)
        return proc

    def prepare(self) -> None:
        from murder import metainfo
        import bencodepy

        if self.s.netns:
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        src = self.dir / "src"
        src.mkdir(exist_ok=True)
        self.payload = src / "payload.bin"
        self.payload.write_bytes(random.Random(self.s.seed).randbytes(self.s.size))
        self.digest = sha256_file(self.payload)
        self.tracker_port = free_port()
        self.announce = f"http://127.0.0.1:{self.tracker_port}/announce"
        self.torrent = self.dir / "payload.torrent"
        raw = metainfo.create(str(self.payload), self.announce,
                              piece_length=self.s.piece_length)
        metainfo.write_atomic(str(self.torrent), bencodepy.encode(raw))
        self.meta = metainfo.load(str(self.torrent))
        self.dfile = self.dir / "tracker.dfile"

    def start_tracker(self) -> Proc:
        proc = self.start(f"tracker{len(self.trackers) + 1}", [
            self.murder, "tracker", "--listen", f"tcp:{self.tracker_port}:interface=127.0.0.1",
            "--dfile", str(self.dfile), "--interval", "2", "--min-interval", "1",
            "--save-interval", "0.5"])
        self.trackers.append(proc)
        return proc

    def start_seeder(self) -> Proc:
        proc = self.start(f"seeder{len(self.seeders) + 1}", [
            self.murder, "seed", "--torrent", str(self.torrent), "--file", str(self.payload),
            "--ip", "127.0.0.1", "--bind", "127.0.0.1", "--skip-verify",
            "--progress-interval", str(self.PROGRESS), *self.s.seeder_args])
        self.seeders.append(proc)
        return proc

    def peer_dir(self, name: str) -> Path:
        return self.dir / "peers" / name

    def start_peer(self, plan: cs.PeerPlan) -> Proc:
        n = len(self.peers.setdefault(plan.name, [])) + 1
        dest = self.peer_dir(plan.name)
        dest.mkdir(parents=True, exist_ok=True)
        argv = [self.murder, "peer", "--torrent", str(self.torrent), "--destination", str(dest),
                "--ip", "127.0.0.1", "--bind", "127.0.0.1",
                "--progress-interval", str(self.PROGRESS), "--status-fd", "{status_fd}"]
        if self.timeouts:
            argv += ["--stall-timeout", f"{cs.STALL_TIMEOUT:g}",
                     "--tracker-timeout", f"{cs.TRACKER_TIMEOUT:g}"]
        if self.snub is not None:
            argv += ["--snub-timeout", f"{self.snub:g}"]
        argv += plan.args
        if plan.disk_full:
            # A tmpfs smaller than the payload, visible only to this peer (a
            # private mount namespace): it disappears with the process.  The
            # shell reports what was left in it.
            script = ('d=$1; out=$2; shift 2; mount -t tmpfs -o size=512k tmpfs "$d" '
                      '|| exit 97; "$@"; rc=$?; ls -A "$d" > "$out"; exit $rc')
            argv = ["unshare", "-m", "sh", "-c", script, "sh", str(dest),
                    str(self.dir / f"{plan.name}.left"), *argv]
        proc = self.start(f"{plan.name}-{n}", argv,
                          status=self.logs / f"{plan.name}-{n}.status")
        self.peers[plan.name].append(proc)
        if hasattr(self, "t0"):
            self.activity[plan.name] = self.now()
        return proc

    def start_hostile(self, h: cs.Hostile) -> Proc:
        proc = self.start(f"hostile-{h.mode}", [
            sys.executable, str(HOSTILE), "--torrent", str(self.torrent), "--mode", h.mode,
            "--stats", str(self.logs / f"hostile-{h.mode}.json")])
        self.hostiles.append(proc)
        return proc

    def scrape_complete(self) -> int:
        from urllib.parse import quote_from_bytes
        import bencodepy

        url = (f"http://127.0.0.1:{self.tracker_port}/scrape?info_hash="
               + quote_from_bytes(self.meta.info_hash, safe=""))
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                files = bencodepy.decode(r.read()).get(b"files", {})
        except Exception:
            return 0
        return files.get(self.meta.info_hash, {}).get(b"complete", 0)

    # -- faults
    def push(self, at: float, what: str, fn: Callable[[], None]) -> None:
        self.actions.append((at, what, fn))
        self.actions.sort(key=lambda a: a[0])

    def current(self, name: str) -> Proc | None:
        """The running incarnation of peer ``name``, or None (not started or exited)."""
        incs = self.peers.get(name)
        return incs[-1] if incs and incs[-1].alive() else None

    def fault_actions(self, f: cs.Fault, base: float) -> list[Action]:
        begin, end = base + f.at, base + f.at + f.duration
        plans = {p.name: p for p in self.s.peers}
        if f.kind == "stop":
            def stop() -> None:
                proc = self.current(f.target)
                if proc is not None:
                    proc.signal(signal.SIGSTOP)
                    proc.stopped = True
                    self.excluded.setdefault(f.target, []).append((begin, end))
                    self.log(f"SIGSTOP {f.target} (pid {proc.pid})")
                else:
                    self.log(f"SIGSTOP {f.target}: no-op, not running")

            def cont() -> None:
                incs = self.peers.get(f.target)
                proc = incs[-1] if incs else None
                if proc is not None and proc.stopped:
                    proc.signal(signal.SIGCONT)
                    proc.stopped = False
                    self.activity[f.target] = self.now()
                    self.log(f"SIGCONT {f.target}")
            return [(begin, "stop", stop), (end, "cont", cont)]
        if f.kind == "kill":
            state = {"killed": False}

            def kill() -> None:
                proc = self.current(f.target)
                if proc is not None:
                    proc.kill()
                    state["killed"] = True
                    self.excluded.setdefault(f.target, []).append((begin, end + 2.0))
                    self.check_target(f.target)
                    self.log(f"SIGKILL {f.target} (pid {proc.pid})")
                else:
                    self.log(f"SIGKILL {f.target}: no-op, not running")

            def restart() -> None:
                if state["killed"]:
                    proc = self.start_peer(plans[f.target])
                    self.log(f"restart {f.target} (pid {proc.pid})")
            return [(begin, "kill", kill), (end, "restart", restart)]
        if f.kind == "netcut":
            rules: list[list[str]] = []
            state = {"at": None, "tries": 0}

            def cut() -> None:
                proc = self.current(f.target)
                port = proc.port() if proc is not None else None
                if port is None:
                    if proc is not None and state["tries"] < 40:
                        state["tries"] += 1  # not listening yet: try again shortly
                        self.push(self.now() + 0.25, "cut", cut)
                    else:
                        self.log(f"netcut {f.target}: no-op, not listening")
                        state["tries"] = -1
                    return
                extra = ["--reject-with", "tcp-reset"] if f.detail == "REJECT" else []
                for match in ("--dport", "--sport"):
                    rule = ["INPUT", "-p", "tcp", match, str(port), "-j", f.detail, *extra]
                    subprocess.run(["iptables", "-I", *rule], check=True)
                    rules.append(rule)
                self.cuts.extend(rules)
                state["at"] = self.now()
                self.excluded.setdefault(f.target, []).append(
                    (state["at"], state["at"] + f.duration + 2.0))
                self.log(f"iptables {f.detail} port {port} of {f.target}")

            def restore() -> None:
                if state["at"] is None and state["tries"] >= 0:
                    self.push(self.now() + 0.25, "restore", restore)  # the cut is late
                    return
                if state["at"] is not None and self.now() < state["at"] + f.duration:
                    self.push(state["at"] + f.duration, "restore", restore)
                    return
                for rule in rules:
                    subprocess.run(["iptables", "-D", *rule], check=False)
                    self.cuts.remove(rule)
                if rules:
                    self.activity[f.target] = self.now()
                    self.log(f"restored {f.target}'s port")
            return [(begin, "cut", cut), (end, "restore", restore)]
        if f.kind == "seeder-kill":
            def skill() -> None:
                self.seeders[-1].kill()
                self.log(f"SIGKILL seeder (pid {self.seeders[-1].pid})")

            def srestart() -> None:
                proc = self.start_seeder()
                self.log(f"restart seeder (pid {proc.pid})")
            return [(begin, "seeder-kill", skill), (end, "seeder-restart", srestart)]
        if f.kind == "tracker-kill":
            def tkill() -> None:
                self.trackers[-1].kill()
                self.log(f"SIGKILL tracker (pid {self.trackers[-1].pid})")

            def trestart() -> None:
                proc = self.start_tracker()
                self.log(f"restart tracker from its dfile (pid {proc.pid})")
            return [(begin, "tracker-kill", tkill), (end, "tracker-restart", trestart)]
        raise ValueError(f.kind)

    # -- observation
    def check_target(self, name: str) -> None:
        """Hash a file found at a peer's target once per (inode, mtime): it
        must be the payload (the target is never partial, even mid-run)."""
        target = self.peer_dir(name) / self.meta.name
        try:
            st = target.stat()
        except OSError:
            return
        key = (st.st_ino, st.st_mtime_ns)
        if self._checked.get(name) == key:
            return
        self._checked[name] = key
        try:
            ok = sha256_file(target) == self.digest
        except OSError:
            return
        if not ok:
            self.bad_target.add(name)
            self.log(f"{name}: WRONG CONTENT at the target")

    def observe(self) -> None:
        for name, incs in self.peers.items():
            proc = incs[-1]
            if proc.up_at is None and proc.port() is not None:
                proc.up_at = time.monotonic()
                self.activity[name] = self.now()  # the hang clock starts once it is up
            pieces = proc.last_pieces()
            if pieces is not None and pieces > self._pieces.get(name, -1):
                self._pieces[name] = pieces
                self.activity[name] = self.now()
            status = proc.status()
            if status and status.startswith("complete") and name not in self.completed_at:
                self.completed_at[name] = self.now()
            self.check_target(name)
        if self.first_copy_at is None and self.seeders and FIRST_COPY in self.seeders[0].stderr():
            self.first_copy_at = self.now()
            self.log("seeder: every piece has left once")
            for f in self.s.faults:
                if f.trigger == "first-copy":
                    self.actions += self.fault_actions(f, self.first_copy_at)
            self.actions.sort(key=lambda a: a[0])

    # -- the run
    def execute(self) -> dict:
        wall0 = time.monotonic()
        self.prepare()
        tracker = self.start_tracker()
        wait_for(lambda: port_open(self.tracker_port) or not tracker.alive(), 60,
                 "the tracker to listen")
        seeder = self.start_seeder()
        wait_for(lambda: self.scrape_complete() >= 1 or not seeder.alive(), 60,
                 "the seeder to announce")
        if not seeder.alive():
            raise RuntimeError(f"seeder died: {seeder.stderr()[-500:]}")
        self.t0 = time.monotonic()
        self.day_offset = _day_seconds()
        self.actions: list[tuple[float, str, Callable[[], None]]] = []
        for plan in self.s.peers:
            self.actions.append((plan.start, "start", lambda p=plan: self.start_peer(p)))
        for h in self.s.hostiles:
            self.actions.append((h.start, "hostile", lambda h=h: self.start_hostile(h)))
        for f in self.s.faults:
            if not f.trigger:
                self.actions += self.fault_actions(f, 0.0)
        self.actions.sort(key=lambda a: a[0])
        hung: set[str] = set()
        late: set[str] = set()
        capped: set[str] = set()
        slow: set[str] = set()
        while True:
            now = self.now()
            while self.actions and self.actions[0][0] <= now:
                _, _, fn = self.actions.pop(0)
                fn()
            self.observe()
            cap = self.s.horizon(self.first_copy_at) + RUN_CAP
            waiting = []
            for n, incs in self.peers.items():
                proc = incs[-1]
                if n in hung or proc.status() is not None:
                    continue
                if not proc.alive():
                    continue  # exited without a status line: judged as a failure
                waiting.append(n)
                if proc.up_at is None:
                    if now - (proc.started - self.t0) > STARTUP_LIMIT:
                        # Not a liveness failure of the peer: it never got
                        # going (an overloaded machine); reported apart.
                        slow.add(n)
                        hung.add(n)
                        self.log(f"{n}: not up (no 'on port' line) {STARTUP_LIMIT:g}s "
                                 f"after it was started; " + diagnose(proc.pid).splitlines()[0])
                        proc.kill()
                    continue
                if not proc.stopped and now - self.activity[n] > cs.STALL_TIMEOUT + cs.GRACE:
                    # Its own --stall-timeout should have ended it by now.
                    hung.add(n)
                    self.log(f"{n}: HANG, no piece and no status for "
                             f"{now - self.activity[n]:.1f}s; last words: "
                             + _last_words(proc.stderr()))
                    self.diagnoses[n] = diagnose(proc.pid)
                    self.log(f"{n}: " + self.diagnoses[n].splitlines()[0])
                    proc.signal(signal.SIGCONT)
                    proc.kill()
            for n, incs in self.peers.items():
                done = self.completed_at.get(n)
                if incs[-1].alive() and done is not None and n not in late \
                        and now > done + cs.MAX_LINGER + 12:
                    late.add(n)
                    self.log(f"{n}: still running {now - done:.1f}s after completing")
            running = [n for n, incs in self.peers.items()
                       if incs[-1].alive() and n not in late and n not in hung]
            if not self.actions and not running:
                break
            if now > cap:
                capped = set(waiting) - hung
                for n in sorted(capped):
                    self.log(f"{n}: still downloading at the run cap ({cap:.0f}s); last words: "
                             + _last_words(self.peers[n][-1].stderr()))
                break
            time.sleep(0.05)
        elapsed = self.now()
        hung -= slow
        self.slow = slow
        return self.teardown(hung, late, capped, elapsed, time.monotonic() - wall0)

    def teardown(self, hung: set[str], late: set[str], capped: set[str], elapsed: float,
                 wall: float) -> dict:
        for rule in list(self.cuts):
            subprocess.run(["iptables", "-D", *rule], check=False)
        for incs in self.peers.values():
            for proc in incs:
                if proc.alive():
                    proc.signal(signal.SIGCONT)
                    proc.kill()
        unclean = []
        for proc in self.hostiles + self.seeders + self.trackers:
            if not proc.terminate(10):
                unclean.append(proc.name)
        self.log("teardown done" + (f"; did not stop on SIGTERM: {unclean}" if unclean else ""))
        outcomes = []
        for plan in self.s.peers:
            incs = self.peers.get(plan.name, [])
            last = incs[-1] if incs else None
            target = self.peer_dir(plan.name) / self.meta.name
            self.check_target(plan.name)
            state = "absent"
            if target.exists():
                state = "ok" if plan.name not in self.bad_target else "corrupt"
            pdir = self.peer_dir(plan.name)
            leftovers = sorted(p.name for p in pdir.iterdir()
                               if p.name != self.meta.name) if pdir.exists() else []
            left_file = self.dir / f"{plan.name}.left"
            if plan.disk_full and left_file.exists():
                leftovers += [f"(in its tmpfs) {x}" for x in left_file.read_text().split()]
            outcomes.append(cs.PeerOutcome(
                name=plan.name, status=last.status() if last else None,
                exit_code=last.popen.returncode if last is not None else None,
                hung=plan.name in hung, capped=plan.name in capped,
                slow_start=plan.name in self.slow,
                target=state, leftovers=leftovers, disk_full=plan.disk_full,
                bad_target_seen=plan.name in self.bad_target,
                completed_at=self.completed_at.get(plan.name), exited_late=plan.name in late))
        copies = 0.0
        exact = True
        for proc in self.seeders:
            up, ok = uploaded_bytes(proc.stderr(), self.PROGRESS)
            copies += up / self.s.size
            exact = exact and ok
        # Super-seeding must never cost more than a plain seeder sending each
        # honest peer the payload once: N copies per seeder incarnation
        # (``--seeder-bound C`` sets an absolute C copies per incarnation).
        per = self.seeder_bound if self.seeder_bound is not None else float(len(self.s.peers))
        bound = per * len(self.seeders)
        verdict = cs.judge(outcomes, [], copies, bound)
        if unclean:
            verdict.ok = False
            verdict.problems.append(f"did not stop on SIGTERM within 10s: {', '.join(unclean)}")
        waits = {}
        for name, incs in self.peers.items():
            samples = []
            for proc in incs:
                samples += [(t, n) for t, n, _ in progress_samples(proc.stderr(), self.day_offset)]
            waits[name] = round(cs.longest_wait(samples, self.excluded.get(name, [])), 2)
        worst = max(waits.items(), key=lambda kv: kv[1], default=(None, 0.0))
        last_words = {o.name: _last_words(self.peers[o.name][-1].stderr())
                      for o in outcomes if o.status is None or not o.status.startswith("complete")
                      if o.name in self.peers}
        return {
            "seed": self.s.seed, "schedule": self.s.to_json(), "describe": self.s.describe(),
            "verdict": vars(verdict), "outcomes": [vars(o) for o in outcomes],
            "events": self.events, "first_copy_at": self.first_copy_at,
            "max_completion": round(max(self.completed_at.values()), 2)
            if self.completed_at else None,
            "elapsed": round(elapsed, 2), "wall": round(wall, 2),
            "seeder_copies": round(copies, 2), "seeder_copies_exact": exact,
            "seeder_bound": round(bound, 2),
            "seeder_incarnations": len(self.seeders),
            "longest_wait": worst[1], "longest_wait_peer": worst[0], "waits": waits,
            "last_words": last_words, "diagnoses": self.diagnoses,
        }

    def kill_all(self) -> None:
        for rule in list(self.cuts):
            subprocess.run(["iptables", "-D", *rule], check=False)
        for proc in self.procs:
            if proc.alive():
                proc.signal(signal.SIGCONT)
                proc.kill()


def diagnose(pid: int) -> str:
    """What a hung process is doing: its /proc state and CPU seconds, and its
    Python stack (``py-spy dump``, when installed beside this interpreter)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        with open(f"/proc/{pid}/wchan") as f:
            wchan = f.read().strip()
        head = (f"state {fields[0]}, cpu {(int(fields[11]) + int(fields[12])) / tick:.2f}s, "
                f"wchan {wchan or '-'}")
    except OSError as e:
        return f"(no /proc entry: {e})"
    spy = Path(sys.executable).parent / "py-spy"
    if spy.exists():
        try:
            out = subprocess.run([str(spy), "dump", "--pid", str(pid)], capture_output=True,
                                 text=True, timeout=20)
            head += "\n" + (out.stdout or out.stderr)[-4000:]
        except subprocess.TimeoutExpired:
            head += "\n(py-spy dump timed out)"
    return head


def _day_seconds() -> float:
    """Now, in seconds of the local day (the peers' log timestamps)."""
    now = time.time()
    lt = time.localtime(now)
    return lt.tm_hour * 3600 + lt.tm_min * 60 + lt.tm_sec + now % 1


def _last_words(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][-300:] if lines else "(no output)"


def run_one(args: argparse.Namespace) -> int:
    """Child mode: execute one run, write its result JSON."""
    schedule = draw_for(args, args.one)
    workdir = Path(args.workdir)
    run = Run(schedule, workdir, args.snub_timeout, args.seeder_bound)
    try:
        result = run.execute()
    except Exception as e:  # a harness failure is reported as such, never hidden
        run.kill_all()
        result = {"seed": schedule.seed, "schedule": schedule.to_json(),
                  "describe": schedule.describe(), "events": run.events,
                  "verdict": {"ok": False, "problems": [f"harness error: {e!r}"], "hangs": 0,
                              "corrupt_or_partial": 0, "failures": 0, "leftover_processes": 0},
                  "harness_error": True}
    Path(args.result).write_text(json.dumps(result, indent=1))
    return 0


def draw_for(args: argparse.Namespace, seed: int) -> cs.Schedule:
    lo, hi = args.peer_range
    kinds = args.kinds.split(",") if args.kinds else None
    return cs.draw(seed, (lo, hi), disk_full=args.root, netcut=args.root, kinds=kinds)


# -------------------------------------------------------------- the runner


def spawn_run(args: argparse.Namespace, seed: int, root: Path) -> dict:
    """Run one seed in a child process group (own netns when root); enforce
    the hard timeout; find leftover processes by process group."""
    schedule = draw_for(args, seed)
    workdir = root / f"run-{seed}"
    workdir.mkdir(parents=True)
    result_path = workdir / "result.json"
    argv = [sys.executable, str(Path(__file__).resolve()), "--one", str(seed),
            "--workdir", str(workdir), "--result", str(result_path),
            "--peers", args.peers, "--snub-timeout", str(args.snub_timeout),
            *(["--seeder-bound", str(args.seeder_bound)] if args.seeder_bound else [])]
    if args.murder:
        argv += ["--murder", args.murder]
    if args.kinds:
        argv += ["--kinds", args.kinds]
    if args.root:
        argv = ["unshare", "-n", "--", *argv, "--root"]
    # Worst case: start-up, the deadline with the seeder fault at its latest
    # guess, teardown.  Past it the run itself hung: that is reported.
    hard = schedule.horizon(None) + RUN_CAP + 180
    with open(workdir / "runner.err", "wb") as err:
        child = subprocess.Popen(argv, stdout=err, stderr=err, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
        timed_out = False
        try:
            child.wait(hard)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(10)
    time.sleep(0.2)
    leftovers = group_pids(child.pid)
    for pid in leftovers:
        _kill(pid, signal.SIGCONT)
        _kill(pid, signal.SIGKILL)
    try:
        result = json.loads(result_path.read_text())
    except (OSError, ValueError):
        tail = (workdir / "runner.err").read_text(errors="replace")[-800:]
        result = {"seed": seed, "schedule": schedule.to_json(), "describe": schedule.describe(),
                  "verdict": {"ok": False, "hangs": 1 if timed_out else 0,
                              "corrupt_or_partial": 0, "failures": 0, "leftover_processes": 0,
                              "problems": [("RUNNER HANG: killed after %.0fs" % hard) if timed_out
                                           else f"runner died (exit {child.returncode}): {tail}"]}}
    if leftovers:
        v = result["verdict"]
        v["ok"] = False
        v["leftover_processes"] = v.get("leftover_processes", 0) + len(leftovers)
        v["problems"].append(f"LEFTOVER processes after the run: pids {leftovers}")
    result["workdir"] = str(workdir)
    if result["verdict"]["ok"] and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def print_run(r: dict, index: int, total: int) -> None:
    v = r["verdict"]
    lines = [f"--- run {index}/{total}  " + r["describe"][0]]
    lines += ["    " + line for line in r["describe"][1:]]
    if v["ok"]:
        lines.append(f"    PASS: all peers done by {r.get('max_completion')}s "
                     f"; longest wait for a piece "
                     f"{r.get('longest_wait')}s ({r.get('longest_wait_peer')}); seeder uploaded "
                     f"{r.get('seeder_copies')} copies in {r.get('seeder_incarnations')} "
                     f"incarnation(s); wall {r.get('wall')}s")
    else:
        lines.append(f"    FAIL ({len(v['problems'])} problems), logs in {r.get('workdir')}:")
        lines += ["      " + p for p in v["problems"]]
        for name, words in (r.get("last_words") or {}).items():
            lines.append(f"      {name} last words: {words}")
        for name, text in (r.get("diagnoses") or {}).items():
            lines += [f"      {name} when called hung: " + text.replace("\n", "\n        ")]
        lines += ["      event " + e for e in r.get("events", [])]
    print("\n".join(lines), flush=True)


def print_summary(summary: dict, args: argparse.Namespace) -> None:
    print("=== chaos summary", flush=True)
    print(f"command: {' '.join(sys.argv)}")
    for key in ("runs", "passed", "hangs", "corrupt_or_partial", "failures",
                "leftover_processes", "max_completion_s", "longest_wait_for_a_piece_s",
                "longest_wait_seed", "max_seeder_copies", "median_seeder_copies"):
        print(f"{key:28} {summary[key]}")
    print(f"{'hang rule':28} an honest peer not stopped by the runner with no new piece "
          f"and no complete/failed status for {cs.STALL_TIMEOUT + cs.GRACE:g}s "
          f"(--stall-timeout {cs.STALL_TIMEOUT:g} + {cs.GRACE:g})")
    print(f"{'honest peers (all runs)':28} {summary.get('peers')}")
    faults = summary.get("faults", {})
    print("faults carried out: " + ", ".join(f"{k} {v}" for k, v in faults.items()))
    if summary["problems"]:
        print("problems:")
        for p in summary["problems"]:
            print("  " + p)
    print(f"json: {summary.get('json')}", flush=True)


def chaos(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="murder-chaos-"))
    seeds = args.seed_list or [args.seed + i for i in range(args.runs)]
    args.runs = len(seeds)
    results: list[dict] = []
    deadline = time.monotonic() + args.timeout
    shown = ",".join(map(str, seeds)) if args.seed_list else f"{seeds[0]}..{seeds[-1]}"
    print(f"chaos: {args.runs} runs, seeds {shown}, peers {args.peers}, "
          f"jobs {args.jobs}, root={args.root} (netcut and disk-full faults "
          f"{'on' if args.root else 'off'}), workdir {root}", flush=True)

    def one(seed: int) -> dict | None:
        if time.monotonic() > deadline:
            return None
        return spawn_run(args, seed, root)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for i, r in enumerate(pool.map(one, seeds), 1):
            if r is None:
                continue
            results.append(r)
            print_run(r, i, args.runs)
    summary = cs.summarize(results)
    RESULTS.mkdir(exist_ok=True)
    out = Path(args.json) if args.json else RESULTS / (
        f"chaos-seed{args.seed}-n{args.runs}-{time.strftime('%Y%m%dT%H%M%S')}.json")
    summary["json"] = str(out)
    summary["command"] = " ".join(sys.argv)
    out.write_text(json.dumps({"summary": summary, "runs": results}, indent=1))
    print_summary(summary, args)
    if not any(not r["verdict"]["ok"] for r in results) and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if summary["passed"] == summary["runs"] and results else 1


# ------------------------------------------------------------ wedge scenario


def wedge_once(args: argparse.Namespace, wedge: bool, seed: int, root: Path) -> dict:
    """Tracker, a rate-capped seeder, a peer W holding every piece, four
    download-capped peers; with ``wedge`` W is SIGSTOPped 2.5 s after the
    four all hold a piece.  Returns the four completion times (from their start)."""
    plan = cs.Schedule(seed=seed, size=args.wedge_size_mib * 2**20, piece_length=2**16,
                       seeder_args=("--max-upload-rate", args.wedge_seeder_rate), peers=())
    workdir = root / f"wedge-{seed}-{'on' if wedge else 'off'}"
    run = Run(plan, workdir, args.snub_timeout if args.wedge_snub else None, 1e9,
              timeouts=False)
    try:
        run.prepare()
        tracker = run.start_tracker()
        wait_for(lambda: port_open(run.tracker_port) or not tracker.alive(), 20, "tracker")
        seeder = run.start_seeder()
        wait_for(lambda: run.scrape_complete() >= 1 or not seeder.alive(), 20, "seeder")
        holder = cs.PeerPlan("W", 0.0, ("--seed-time", "600"))
        wdir = run.peer_dir("W")
        wdir.mkdir(parents=True)
        shutil.copyfile(run.payload, wdir / run.meta.name)
        w = run.start_peer(holder)
        wait_for(lambda: run.scrape_complete() >= 2 or not w.alive(), 20, "W to announce")
        plans = [cs.PeerPlan(f"d{i}", 0.0, ("--max-download-rate", args.wedge_peer_rate,
                                             "--seed-time", "0"))
                 for i in range(4)]
        t0 = time.monotonic()
        run.t0 = t0
        procs = [run.start_peer(p) for p in plans]
        stopped_at = None
        fetching_at = None
        done: dict[str, float] = {}
        limit = t0 + 300
        while len(done) < 4 and time.monotonic() < limit:
            now = time.monotonic()
            if fetching_at is None and all((proc.last_pieces() or 0) >= 1 for proc in procs):
                fetching_at = now - t0  # every one of the four has a verified piece
            if wedge and stopped_at is None and fetching_at is not None \
                    and now - t0 >= fetching_at + 2.5:
                w.signal(signal.SIGSTOP)
                stopped_at = now - t0
            for p, proc in zip(plans, procs):
                st = proc.status()
                if st and p.name not in done:
                    done[p.name] = now - t0 if st.startswith("complete") else float("nan")
            time.sleep(0.02)
        at_t0 = _day_seconds() - (time.monotonic() - t0)
        w_up = sum(up for t, _, up in progress_samples(w.stderr(), at_t0)
                   if stopped_at is None or t <= stopped_at) * run.PROGRESS
        ok = all(sha256_file(run.peer_dir(p.name) / run.meta.name) == run.digest
                 if (run.peer_dir(p.name) / run.meta.name).exists() else False
                 for p in plans)
        return {"wedge": wedge, "stopped_at": stopped_at, "fetching_at": fetching_at,
                "w_uploaded_mib": round(w_up, 2), "times": done, "verified": ok,
                "max": max(done.values()) if len(done) == 4 else None,
                "snub_log_lines": sum(proc.stderr().count("is not answering requests")
                                      for proc in procs)}
    finally:
        run.kill_all()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def wedge_summary(runs: list[dict]) -> tuple[dict, dict, float | None]:
    """Print and return the with/without figures: the last of the four
    peers' completion, from their start and from the moment all four held
    a piece (the download phase, without start-up noise)."""
    import statistics

    def stats(wedged: bool, key: str) -> dict:
        xs = [r["max"] - (r["fetching_at"] if key == "phase" else 0.0) for r in runs
              if r["wedge"] == wedged and r["max"] is not None and r.get("fetching_at") is not None]
        return {"n": len(xs), "median": round(statistics.median(xs), 2) if xs else None,
                "min": round(min(xs), 2) if xs else None, "max": round(max(xs), 2) if xs else None}
    result = {}
    for key, what in (("total", "from start"), ("phase", "from all-four-have-a-piece")):
        off, on = stats(False, key), stats(True, key)
        delay = (round(on["median"] - off["median"], 2)
                 if on["median"] is not None and off["median"] is not None else None)
        print(f"wedge summary ({what}): last of 4 peers done, no wedge: median {off['median']} s "
              f"(min {off['min']}, max {off['max']}, n={off['n']}); wedge: median "
              f"{on['median']} s (min {on['min']}, max {on['max']}, n={on['n']}); "
              f"median delay {delay} s", flush=True)
        result[key] = (off, on, delay)
    return result["total"][0], result["total"][1], result["total"][2]


def chaos_report(args: argparse.Namespace) -> int:
    """Re-print a saved chaos JSON's summary (``--scenario report --json F``),
    re-checking the seeder bound with this command's ``--seeder-bound``
    (default: one copy per honest peer per incarnation)."""
    data = json.loads(Path(args.json).read_text())
    runs = data["runs"]
    for r in runs:
        if "seeder_copies" not in r:
            continue
        n = len(r["schedule"]["peers"])
        per = args.seeder_bound if args.seeder_bound is not None else float(n)
        bound = per * r.get("seeder_incarnations", 1)
        v = r["verdict"]
        v["problems"] = [p for p in v["problems"] if not p.startswith("seeder uploaded")]
        if r["seeder_copies"] > bound:
            v["problems"].append(f"seeder uploaded {r['seeder_copies']:.2f} payload copies "
                                 f"(bound {bound:g})")
        v["ok"] = not v["problems"]
    summary = cs.summarize(runs)
    summary["json"] = args.json
    print(f"report of {args.json}: {data['summary'].get('command')}")
    per = f"{args.seeder_bound:g} copies" if args.seeder_bound else "one copy per honest peer"
    print(f"seeder bound: {per} per incarnation")
    print_summary(summary, args)
    return 0 if summary["passed"] == summary["runs"] else 1


def wedge_report(path: str) -> int:
    """Re-print the summary of a saved wedge JSON (``--scenario wedge-report --json F``)."""
    data = json.loads(Path(path).read_text())
    print(f"wedge report of {path}: {data.get('command')}")
    wedge_summary(data["runs"])
    return 0


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def wedge(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="murder-wedge-"))
    runs = []
    print(f"wedge: murder = {murder_bin()}; {args.repeat} repeats x (no wedge, wedge); "
          f"payload {args.wedge_size_mib} MiB, "
          f"seeder --max-upload-rate {args.wedge_seeder_rate}, 4 peers --max-download-rate "
          f"{args.wedge_peer_rate}, W SIGSTOPped 2.5 s after all four have a piece; "
          f"peers' snub timeout: "
          f"{f'{args.snub_timeout:g}s' if args.wedge_snub else 'default'}", flush=True)
    for i in range(args.repeat):
        order = (False, True) if i % 2 == 0 else (True, False)
        for w in order:
            r = wedge_once(args, w, args.seed + i, root)
            runs.append(r)
            times = " ".join(f"{r['times'].get(f'd{k}', float('nan')):6.2f}" for k in range(4))
            print(f"  repeat {i + 1} {'wedge   ' if w else 'no wedge'}: completion s [{times}] "
                  f"max {r['max'] if r['max'] is None else round(r['max'], 2)}  "
                  f"verified {r['verified']}  all fetching at {_fmt(r['fetching_at'])}s  "
                  f"W stopped at {_fmt(r['stopped_at'])}s  W sent ~{r['w_uploaded_mib']} MiB "
                  f"before  'not answering' lines {r['snub_log_lines']}", flush=True)
    off, on, delay = wedge_summary(runs)
    RESULTS.mkdir(exist_ok=True)
    out = Path(args.json) if args.json else RESULTS / (
        f"chaos-wedge-{time.strftime('%Y%m%dT%H%M%S')}.json")
    out.write_text(json.dumps({"command": " ".join(sys.argv), "no_wedge": off, "wedge": on,
                               "median_delay_s": delay, "runs": runs}, indent=1))
    print(f"json: {out}")
    shutil.rmtree(root, ignore_errors=True)
    return 0 if all(r["verified"] for r in runs) else 1


# --------------------------------------------------------------------- CLI


def parse_range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("..")
    lo_i, hi_i = int(lo), int(hi or lo)
    if not 1 <= lo_i <= hi_i:
        raise argparse.ArgumentTypeError(f"bad peer range {text!r} (e.g. 8..16)")
    return lo_i, hi_i


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", choices=("chaos", "wedge", "wedge-report", "report"),
                    default="chaos")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=None, help="first run's seed (default: random)")
    ap.add_argument("--seeds", default="",
                    help="explicit comma-separated run seeds (replays; overrides --seed/--runs)")
    ap.add_argument("--peers", default="8..16", help="honest peers per run, LO..HI")
    ap.add_argument("--jobs", type=int, default=1, help="concurrent runs")
    ap.add_argument("--kinds", default="",
                    help="limit faults to these "
                    "(stop,kill,netcut,seeder-kill,tracker-kill,hostile)")
    ap.add_argument("--snub-timeout", type=float, default=5.0,
                    help="peers' --snub-timeout in chaos runs (default 5)")
    ap.add_argument("--seeder-bound", type=float, default=None,
                    help="most payload copies one seeder incarnation may upload "
                    "(default: one per honest peer, N)")
    ap.add_argument("--no-root", action="store_true",
                    help="skip the faults that need root even when root")
    ap.add_argument("--timeout", type=float, default=6 * 3600, help="global time budget, s")
    ap.add_argument("--keep", action="store_true", help="keep every run's directory")
    ap.add_argument("--json", help="result file (default bench/results/chaos-*.json)")
    ap.add_argument("--repeat", type=int, default=5, help="wedge: repeats")
    ap.add_argument("--wedge-size-mib", type=int, default=8)
    ap.add_argument("--wedge-seeder-rate", default="1M")
    ap.add_argument("--wedge-peer-rate", default="1M")
    ap.add_argument("--wedge-snub", action="store_true",
                    help="wedge: pass --snub-timeout to the peers (default: their default)")
    ap.add_argument("--murder", help="murder executable to run (default: the venv's); "
                    "e.g. a wrapper around an older checkout, for before/after figures")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--root", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.peer_range = parse_range(args.peers)
    global MURDER_OVERRIDE
    MURDER_OVERRIDE = args.murder
    args.seed_list = [int(x) for x in args.seeds.split(",") if x.strip()]
    if args.one is not None:
        return run_one(args)
    args.root = os.geteuid() == 0 and not args.no_root and shutil.which("unshare") is not None \
        and shutil.which("iptables") is not None
    if args.seed is None:
        args.seed = args.seed_list[0] if args.seed_list else \
            random.SystemRandom().randrange(1, 10**6)
    if args.scenario == "wedge":
        return wedge(args)
    if args.scenario == "wedge-report":
        return wedge_report(args.json)
    if args.scenario == "report":
        return chaos_report(args)
    return chaos(args)


if __name__ == "__main__":
    raise SystemExit(main())
