#!/usr/bin/env python3
"""Swarm benchmark: deploy one payload to N emulated hosts, several ways, same network.

Every run builds a fresh emulated datacenter (`netns.Topology`: tracker host,
seeder host, N peer hosts on one bridge, each shaped to the same rate both
ways), starts the method's tracker/seeder, parks the N receivers behind a
launch gate (`gate.Gate`), opens the gate and times until every receiver holds
the payload, checked by sha256 here (outside the tool).  See bench/README.md
for what every figure means.

Methods: ``murder`` (our tracker, ``murder seed``, N ``murder peer``), ``http``
(one HTTP server on the seeder host, N curl), ``aria2`` (aria2c seeder + N
aria2c, our tracker or opentracker), ``libtorrent`` (bench/lt_client.py).

Run as root, with the project's venv python::

    .venv/bin/python bench/swarm.py --sizes-mib 16 --rate-mbit 40 --n 4,8,16 \\
        --methods murder,http,aria2,libtorrent --repeat 1 \\
        --json bench/results/swarm.json --png bench/results/swarm.png
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import shutil
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
import urllib.parse
from dataclasses import dataclass, field
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
VENV_BIN = os.path.join(REPO, ".venv", "bin")
MURDER = os.path.join(VENV_BIN, "murder")
VENV_PYTHON = os.path.join(VENV_BIN, "python")
sys.path.insert(0, HERE)

import bencodepy  # noqa: E402  (venv dependency)

from gate import Gate, Proc, is_parked, stop_all  # noqa: E402
from netns import (TRACKER_ADDR, Host, Interrupted, Topology, cleanup_stale,  # noqa: E402
                   install_signal_handlers, list_namespaces, netns_available, verify_shaping)

ALL_METHODS = ("murder", "http", "aria2", "libtorrent", "murder-legacy", "murder2010")
TRACKER_PORTS = {"murder": 8998, "opentracker": 6969}
BT_PORT = 6881
HTTP_PORT = 8000


# ------------------------------------------------------------------ bound
def kumar_ross_bound(size: float, u_s: float, d_min: float, uploads: list[float]) -> float:
    """T_min = max(F/u_s, F/d_min, N·F/(u_s + Σu_i)), rates in bytes/s, F in bytes."""
    n = len(uploads)
    return max(size / u_s, size / d_min, n * size / (u_s + sum(uploads)))


# ------------------------------------------------------------- CPU sampling
class CpuSampler:
    """Samples /proc/stat every ``period`` s: per-core busy fraction since last sample."""

    def __init__(self, period: float = 0.1) -> None:
        self.period = period
        self.samples: list[tuple[float, list[float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpu-sampler", daemon=True)

    @staticmethod
    def _read() -> list[tuple[int, int]]:
        cores = []
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu") and line[3].isdigit():
                    v = [int(x) for x in line.split()[1:]]
                    idle = v[3] + (v[4] if len(v) > 4 else 0)
                    cores.append((sum(v[:8]), idle))
        return cores

    def _loop(self) -> None:
        prev = self._read()
        while not self._stop.wait(self.period):
            cur = self._read()
            busy = []
            for (t0, i0), (t1, i1) in zip(prev, cur):
                dt = t1 - t0
                busy.append(1.0 - (i1 - i0) / dt if dt > 0 else 0.0)
            self.samples.append((time.monotonic(), busy))
            prev = cur

    def start(self) -> "CpuSampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def window(self, t0: float, t1: float) -> list[list[float]]:
        return [b for t, b in self.samples if t0 < t <= t1 + self.period]

    def saturation(self, t0: float, t1: float, threshold: float = 0.9) -> float | None:
        """Fraction of samples in [t0, t1] with every core busier than ``threshold``."""
        w = self.window(t0, t1)
        return sum(all(x > threshold for x in b) for b in w) / len(w) if w else None

    def busy_cpu_seconds(self, t0: float, t1: float) -> float:
        """CPU-seconds the whole machine was busy in [t0, t1] (all processes + softirq)."""
        return sum(sum(b) * self.period for b in self.window(t0, t1))

    def mean_busy(self, t0: float, t1: float) -> float | None:
        w = self.window(t0, t1)
        return statistics.fmean(statistics.fmean(b) for b in w) if w else None


# ------------------------------------------------------------------ context
def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Payload:
    """The file every receiver must end up with."""

    path: str
    size: int
    sha256: str
    torrents: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # tracker -> (path, info hash)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    def torrent(self, tracker: str, piece_length: int | None,
                maker: Callable[[str], list[str]] | None = None,
                env: dict | None = None) -> tuple[str, bytes]:
        """Torrent announcing to ``tracker`` on the tracker host (made once, cached).

        ``maker(out)`` gives another make-torrent command line (the legacy
        scripts, the 2010 original); ``tracker`` is then just the cache key.
        """
        if tracker not in self.torrents:
            out = f"{self.path}.{tracker}.torrent"
            if maker is not None:
                argv = maker(out)
            else:
                url = f"http://{TRACKER_ADDR}:{TRACKER_PORTS[tracker]}/announce"
                argv = [MURDER, "make-torrent", "--announce", url, "-o", out, "--quiet"]
                if piece_length:
                    argv += ["--piece-length", str(piece_length)]
                argv.append(self.path)
            subprocess.run(argv, check=True, capture_output=True, timeout=120,
                           env=dict(os.environ, **(env or {})))
            with open(out, "rb") as f:
                info = bencodepy.decode(f.read())[b"info"]
            self.torrents[tracker] = (out, hashlib.sha1(bencodepy.encode(info)).digest())
        return self.torrents[tracker]


def make_payload(directory: str, size: int) -> Payload:
    """Random (incompressible) payload of ``size`` bytes in ``directory``."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"payload-{size // 2**20}MiB.bin")
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 1 << 20))
            f.write(chunk)
            h.update(chunk)
            left -= len(chunk)
    return Payload(path, size, h.hexdigest())


@dataclass
class Receiver:
    """One receiving host, its process and how we learn it finished."""

    host: Host
    target: str
    detect: str  # "exit" | "marker" | "path"
    marker: str | None = None
    expected_size: int = 0
    proc: Proc | None = None
    t_signal: float | None = None
    t_done: float | None = None
    checks: int = 0
    next_check: float = 0.0
    failure: str | None = None


class Context:
    """Everything one run needs: topology, payload, work dirs, the processes started."""

    def __init__(self, topo: Topology, payload: Payload, workdir: str, args: argparse.Namespace):
        self.topo = topo
        self.payload = payload
        self.workdir = workdir
        self.args = args
        self.logdir = os.path.join(workdir, "logs")
        os.makedirs(self.logdir, exist_ok=True)
        self.infra: list[Proc] = []
        self.gate = Gate(workdir)

    def spawn(self, host: Host, role: str, argv: list[str], *, env: dict | None = None,
              gated: bool = False) -> Proc:
        """Start ``argv`` inside ``host`` (behind the gate if ``gated``)."""
        full_env = dict(os.environ, **(env or {}))
        inner = self.gate.wrap(argv) if gated else argv
        proc = Proc.spawn(f"{role}@{host.addr}", role, self.topo.argv(host, inner),
                          log_path=os.path.join(self.logdir, f"{role}-{host.index}.log"),
                          env=full_env, stdin=self.gate.stdin if gated else None,
                          cwd=self.workdir)
        if not gated:
            self.infra.append(proc)
        return proc

    def wait_until(self, what: str, check: Callable[[], bool], timeout: float,
                   procs: list[Proc] | None = None) -> None:
        """Poll ``check`` every 50 ms; fail if it times out or a watched process dies."""
        deadline = time.monotonic() + timeout
        while not check():
            for p in procs or []:
                if not p.running:
                    raise RuntimeError(f"{what}: {p.name} exited with {p.status} "
                                       f"(log {self.logdir})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: not ready after {timeout:.0f} s (log {self.logdir})")
            time.sleep(0.05)

    # ------------------------------------------------------------ trackers
    def start_tracker(self, kind: str, info_hash: bytes, extra: list[str] | None = None) -> None:
        """Start the tracker; opentracker (Debian: whitelist build) is told ``info_hash``.

        ``extra``: more arguments for ``murder tracker`` (``--variant-tracker``).
        """
        host = self.topo.tracker
        port = TRACKER_PORTS[kind]
        if kind == "murder":
            argv = [MURDER, "tracker", "--port", str(port), "--bind", host.addr,
                    "--dfile", os.path.join(self.workdir, "tracker.dfile"), *(extra or ())]
        else:
            chroot = os.path.join(self.workdir, "opentracker")
            os.makedirs(chroot, exist_ok=True)
            with open(os.path.join(chroot, "whitelist"), "w") as f:
                f.write(info_hash.hex() + "\n")
            argv = ["opentracker", "-i", host.addr, "-p", str(port), "-P", str(port), "-d", chroot,
                    "-w", "/whitelist"]  # read after opentracker chroots to -d
        proc = self.spawn(host, f"tracker-{kind}", argv)
        self.wait_until(f"{kind} tracker", lambda: self._http_ok(
            f"http://{host.addr}:{port}/scrape"), 30, [proc])

    def _http_ok(self, url: str, head: bool = False) -> bool:
        """True once ``url`` answers at all (any HTTP status), seen from the tracker host."""
        r = self.topo.run(self.topo.tracker, ["curl", "-s", "-o", "/dev/null", "-m", "2",
                                              *(["-I"] if head else []),
                                              "-w", "%{http_code}", url], check=False)
        return r.returncode == 0 and r.stdout.strip() not in ("", "000")

    def scrape_complete(self, kind: str, info_hash: bytes) -> int:
        """Seeders the tracker reports for ``info_hash`` (BEP 48 scrape), 0 on error."""
        url = (f"http://{self.topo.tracker.addr}:{TRACKER_PORTS[kind]}/scrape?info_hash="
               + urllib.parse.quote_from_bytes(info_hash, safe=""))
        r = subprocess.run(self.topo.argv(self.topo.tracker, ["curl", "-s", "-m", "2", url]),
                           capture_output=True, timeout=10)
        try:
            files = bencodepy.decode(r.stdout)[b"files"]
            return int(next(iter(files.values()))[b"complete"]) if files else 0
        except Exception:  # noqa: BLE001 - any undecodable answer means "not yet"
            return 0

    def wait_seeded(self, kind: str, info_hash: bytes, seeder: Proc) -> None:
        self.wait_until("seeder announce", lambda: self.scrape_complete(kind, info_hash) >= 1,
                        self.args.setup_timeout, [seeder])


# ------------------------------------------------------------------ methods
class Method:
    """One way of deploying: infrastructure (tracker/seeder) + a receiver command."""

    name = ""

    def unavailable(self, args: argparse.Namespace) -> str | None:
        return None

    def start_infra(self, ctx: Context) -> None:
        raise NotImplementedError

    def receiver(self, ctx: Context, host: Host, dest: str) -> tuple[list[str], dict, Receiver]:
        raise NotImplementedError

    def after_run(self, ctx: Context, rec: dict, seconds: float) -> None:
        """Add method-specific figures to ``rec`` while the processes still run."""


@functools.lru_cache(maxsize=None)
def _works(argv: tuple[str, ...]) -> bool:
    """Whether ``argv`` exits 0 (asked once per process: probing murder costs ~0.5 s)."""
    try:
        return subprocess.run(list(argv), capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def bt_tracker_kind(args: argparse.Namespace) -> str:
    """The tracker standard clients announce to: ours if it runs, else opentracker."""
    if args.tracker == "auto":
        return "murder" if _works((MURDER, "tracker", "--help")) else "opentracker"
    return args.tracker


class MurderMethod(Method):
    """Our tracker, ``murder seed`` and N ``murder peer --seed-until-swarm-done``."""

    name = "murder"

    def __init__(self, name: str = "murder", extra: list[str] | None = None,
                 command: str = MURDER, tracker_extra: list[str] | None = None,
                 seed_extra: list[str] | None = None) -> None:
        #: A ``--variant``: the same method with extra arguments for both
        #: ``murder seed`` and ``murder peer`` (same tuning options), or with
        #: another ``murder`` executable (``--variant-command``, e.g. an older
        #: checkout), run in the same benchmark to compare side by side.
        self.name = name
        self.extra = list(extra or ())
        self.command = command
        #: More arguments for our tracker (``--variant-tracker``).
        self.tracker_extra = list(tracker_extra or ())
        #: More arguments for ``murder seed`` only (``--variant-seed``).
        self.seed_extra = list(seed_extra or ())

    def unavailable(self, args: argparse.Namespace) -> str | None:
        for sub in ("seed", "peer"):
            if not _works((self.command, sub, "--help")):
                return f"`{self.command} {sub} --help` fails"
        for sub in ("tracker",):
            if not _works((MURDER, sub, "--help")):
                return f"`{MURDER} {sub} --help` fails (the murder {sub} CLI is not there yet)"
        return None

    def start_infra(self, ctx: Context) -> None:
        self.torrent, info_hash = ctx.payload.torrent("murder", ctx.args.piece_length)
        ctx.start_tracker("murder", info_hash, self.tracker_extra)
        s = ctx.topo.seeder
        seeder = ctx.spawn(s, "seeder", [self.command, "seed", "--torrent", self.torrent,
                                         "--file", ctx.payload.path, "--ip", s.addr,
                                         *ctx.args.murder_seed_args, *self.extra,
                                         *self.seed_extra])
        ctx.wait_seeded("murder", info_hash, seeder)

    def receiver(self, ctx: Context, host: Host, dest: str) -> tuple[list[str], dict, Receiver]:
        argv = [self.command, "peer", "--torrent", self.torrent, "--destination", dest,
                "--ip", host.addr, *ctx.args.murder_peer_args, *self.extra]
        if "--seed-time" not in ctx.args.murder_peer_args:
            argv.append("--seed-until-swarm-done")
        return argv, {}, Receiver(host, os.path.join(dest, ctx.payload.name), "path")

    def after_run(self, ctx: Context, rec: dict, seconds: float) -> None:
        """Tracker load: announces answered (from its /metrics) per peer per second."""
        url = f"http://{ctx.topo.tracker.addr}:{TRACKER_PORTS['murder']}/metrics"
        r = subprocess.run(ctx.topo.argv(ctx.topo.tracker, ["curl", "-s", "-m", "2", url]),
                           capture_output=True, timeout=10, text=True)
        total = 0.0
        for line in r.stdout.splitlines():
            if line.startswith("murder_tracker_announces_total{"):
                total += float(line.rsplit(" ", 1)[1])
        if total and seconds > 0:
            rec["tracker_announces"] = total
            rec["tracker_announces_per_peer_s"] = total / seconds / (rec["n"] + 1)


class HttpMethod(Method):
    """One threaded HTTP server (python http.server) on the seeder host, N curl."""

    name = "http"

    def start_infra(self, ctx: Context) -> None:
        s = ctx.topo.seeder
        server = ctx.spawn(s, "http-server", [
            VENV_PYTHON, "-m", "http.server", str(HTTP_PORT), "--bind", s.addr,
            "--directory", os.path.dirname(ctx.payload.path)])
        self.url = f"http://{s.addr}:{HTTP_PORT}/{ctx.payload.name}"
        ctx.wait_until("http server", lambda: ctx._http_ok(self.url, head=True), 30, [server])

    def receiver(self, ctx: Context, host: Host, dest: str) -> tuple[list[str], dict, Receiver]:
        target = os.path.join(dest, ctx.payload.name)
        return (["curl", "-sS", "-f", "-o", target, self.url], {},
                Receiver(host, target, "exit"))


ARIA2_COMMON = [
    "--no-conf=true", "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false",
    "--enable-peer-exchange=false", f"--listen-port={BT_PORT}", "--bt-max-peers=0",
    "--max-upload-limit=0", "--max-overall-upload-limit=0", "--max-download-limit=0",
    "--bt-request-peer-speed-limit=100M", "--bt-tracker-interval=15",
    "--seed-ratio=0.0", "--file-allocation=none", "--disable-ipv6=true", "--async-dns=false",
    "--summary-interval=0", "--console-log-level=warn", "--download-result=hide",
    "--allow-overwrite=true", "--auto-file-renaming=false", "--follow-torrent=false",
    "--bt-save-metadata=false", "--auto-save-interval=0",
]


class Aria2Method(Method):
    """aria2c seeder + N aria2c leechers (seed until stopped) on a BT tracker."""

    name = "aria2"

    def unavailable(self, args: argparse.Namespace) -> str | None:
        return None if shutil.which("aria2c") else "aria2c not installed"

    def start_infra(self, ctx: Context) -> None:
        kind = bt_tracker_kind(ctx.args)
        self.torrent, info_hash = ctx.payload.torrent(kind, ctx.args.piece_length)
        ctx.start_tracker(kind, info_hash)
        s = ctx.topo.seeder
        seeder = ctx.spawn(s, "seeder", [
            "aria2c", *ARIA2_COMMON, "--check-integrity=true",
            f"--dir={os.path.dirname(ctx.payload.path)}", self.torrent])
        ctx.wait_seeded(kind, info_hash, seeder)
        self.hook = os.path.join(ctx.workdir, "aria2-done.sh")
        with open(self.hook, "w") as f:
            f.write('#!/bin/sh\n: > "$MZB_MARKER"\n')
        os.chmod(self.hook, 0o755)

    def receiver(self, ctx: Context, host: Host, dest: str) -> tuple[list[str], dict, Receiver]:
        marker = os.path.join(ctx.workdir, f"done-{host.index}")
        argv = ["aria2c", *ARIA2_COMMON, f"--dir={dest}",
                f"--on-bt-download-complete={self.hook}", self.torrent]
        return argv, {"MZB_MARKER": marker}, Receiver(
            host, os.path.join(dest, ctx.payload.name), "marker", marker)


class LibtorrentMethod(Method):
    """bench/lt_client.py (libtorrent python bindings) seeder + N leechers."""

    name = "libtorrent"
    script = os.path.join(HERE, "lt_client.py")

    def unavailable(self, args: argparse.Namespace) -> str | None:
        return None if _works((VENV_PYTHON, "-c", "import libtorrent")) else \
            "libtorrent python bindings not importable in the venv"

    def start_infra(self, ctx: Context) -> None:
        kind = bt_tracker_kind(ctx.args)
        self.torrent, info_hash = ctx.payload.torrent(kind, ctx.args.piece_length)
        ctx.start_tracker(kind, info_hash)
        s = ctx.topo.seeder
        seeder = ctx.spawn(s, "seeder", [
            VENV_PYTHON, self.script, "--seed", "--torrent", self.torrent,
            "--save-path", os.path.dirname(ctx.payload.path), "--listen", f"{s.addr}:{BT_PORT}"])
        ctx.wait_seeded(kind, info_hash, seeder)

    def receiver(self, ctx: Context, host: Host, dest: str) -> tuple[list[str], dict, Receiver]:
        marker = os.path.join(ctx.workdir, f"done-{host.index}")
        argv = [VENV_PYTHON, self.script, "--torrent", self.torrent, "--save-path", dest,
                "--listen", f"{host.addr}:{BT_PORT}", "--marker", marker]
        return argv, {}, Receiver(host, os.path.join(dest, ctx.payload.name), "marker", marker)


LEGACY_DIST = os.path.join(REPO, "contrib", "capistrano_compat", "dist")
MURDER2010_DIST = "/work/shared/baselines/murder-2010/dist"
LEGACY_PORT = 8998  # murder_tracker.py's fixed default (the recipes pass no --port)


def _pyenv_python27() -> str | None:
    """``$(pyenv root)/versions/2.7.18/bin/python2.7``, or None when missing."""
    roots = [os.environ.get("PYENV_ROOT")]
    try:
        roots.append(subprocess.run(["pyenv", "root"], capture_output=True, text=True,
                                    timeout=10).stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        pass
    roots.append(os.path.expanduser("~/.pyenv"))
    for root in roots:
        if root:
            path = os.path.join(root, "versions", "2.7.18", "bin", "python2.7")
            if os.access(path, os.X_OK):
                return path
    return None


class LegacyScriptsMethod(Method):
    """What a Capistrano user runs: our contrib/capistrano_compat/dist scripts.

    Exactly the recipes' calls: ``python murder_tracker.py`` (port 8998,
    ``data`` in its working folder), ``python murder_make_torrent.py F
    HOST:8998 F.torrent``, ``python murder_client.py seeder F.torrent F IP``
    and on each host ``python murder_client.py peer F.torrent SAVEAS IP``,
    where ``python`` is the venv's (it imports the installed package).  A
    receiver is done when its ``peer`` command exits 0 (after ``done and
    done``); its detached lingering seeder is adopted by the harness (child
    subreaper) so that its CPU counts too.
    """

    name = "murder-legacy"

    def __init__(self, name: str = "murder-legacy", python: str = VENV_PYTHON,
                 dist: str = LEGACY_DIST) -> None:
        self.name = name
        self.python = python
        self.dist = dist

    def script(self, name: str) -> str:
        return os.path.join(self.dist, name)

    def env(self, ctx: Context, role: str) -> dict:
        return {}

    def unavailable(self, args: argparse.Namespace) -> str | None:
        if not os.path.isfile(self.script("murder_client.py")):
            return f"{self.script('murder_client.py')} is missing"
        if not _works((self.python, "-c", "import murder")):
            return f"`{self.python} -c 'import murder'` fails"
        return None

    def start_infra(self, ctx: Context) -> None:
        hostport = f"{TRACKER_ADDR}:{LEGACY_PORT}"
        self.torrent, info_hash = ctx.payload.torrent(
            self.name, None,
            maker=lambda out: [self.python, self.script("murder_make_torrent.py"),
                               ctx.payload.path, hostport, out],
            env=self.env(ctx, "make-torrent"))
        t = ctx.topo.tracker
        tracker = ctx.spawn(t, "tracker", [self.python, self.script("murder_tracker.py")],
                            env=self.env(ctx, "tracker"))
        ctx.wait_until("legacy tracker", lambda: ctx._http_ok(
            f"http://{t.addr}:{LEGACY_PORT}/scrape"), 30, [tracker])
        s = ctx.topo.seeder
        seeder = ctx.spawn(s, "seeder", [self.python, self.script("murder_client.py"), "seeder",
                                         self.torrent, ctx.payload.path, s.addr],
                           env=self.env(ctx, "seeder"))
        ctx.wait_seeded("murder", info_hash, seeder)

    def receiver(self, ctx: Context, host: Host, dest: str) -> tuple[list[str], dict, Receiver]:
        target = os.path.join(dest, ctx.payload.name)
        argv = [self.python, self.script("murder_client.py"), "peer", self.torrent, target,
                host.addr]
        return argv, self.env(ctx, f"peer-{host.index}"), Receiver(host, target, "exit")


class Murder2010Method(LegacyScriptsMethod):
    """The original 2010 Murder (Python 2.7 + BitTornado), as the recipes run it.

    Runs a private copy of ``--murder2010-dist`` made in the run's temporary
    root and byte-compiled there (what a host holds after the scripts' first
    run; the shared copy stays read-only and nothing lands in the project).
    Every process gets its own HOME (BitTornado writes ``~/.BitTornado``) and
    PYTHONDONTWRITEBYTECODE=1.  The peer forks a detached 30 s seeder after
    ``done and done``; the harness adopts it (child subreaper), counts its
    CPU and kills it by PID.  The client exits 0 even when it gives up: the
    harness's sha256 check decides.
    """

    name = "murder2010"

    def __init__(self) -> None:
        super().__init__("murder2010", python="", dist="")

    def unavailable(self, args: argparse.Namespace) -> str | None:
        python = args.python27 or _pyenv_python27()
        if not python or not os.access(python, os.X_OK):
            return ("python2.7 not found ($(pyenv root)/versions/2.7.18/bin/python2.7 or "
                    "--python27): the 2010 original cannot run")
        if not os.path.isfile(os.path.join(args.murder2010_dist, "murder_client.py")):
            return f"{args.murder2010_dist}/murder_client.py is missing"
        self.python = python
        if not self.dist:
            private = os.path.join(args.root, "murder2010-dist")
            shutil.copytree(args.murder2010_dist, private)
            subprocess.run([python, "-m", "compileall", "-q", private],
                           stdout=subprocess.DEVNULL, check=False, timeout=120)
            self.dist = private
        return None

    def env(self, ctx: Context, role: str) -> dict:
        home = os.path.join(ctx.workdir, "home", role)
        os.makedirs(home, exist_ok=True)
        return {"HOME": home, "PYTHONDONTWRITEBYTECODE": "1"}


METHODS: dict[str, Callable[[], Method]] = {
    "murder": MurderMethod, "http": HttpMethod, "aria2": Aria2Method,
    "libtorrent": LibtorrentMethod, "murder-legacy": LegacyScriptsMethod,
    "murder2010": Murder2010Method,
}


# ------------------------------------------------- detached processes
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make orphaned descendants our children (Linux prctl), so that the
    detached seeders of ``murder_client.py peer`` can be found, stopped by
    PID and their CPU read with wait4 like any other process of a method."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def adopt_orphans(known: set[int]) -> list[Proc]:
    """Our children that we did not start (re-parented orphans), as Procs.

    Call only while no other thread runs a ``subprocess`` of its own (the run's
    teardown): then every child not in ``known`` is an adopted orphan.  Each
    gets a wait4 reaper; a zombie is reaped at once with its rusage.
    """
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in known:
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                head, _, rest = f.read().rpartition(")")
            ppid = int(rest.split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = [c.decode(errors="replace") for c in f.read().split(b"\0") if c]
        except (OSError, ValueError, IndexError):
            continue
        if ppid != me:
            continue
        pid = int(entry)
        popen = types.SimpleNamespace(pid=pid, returncode=None)
        proc = Proc(f"detached-{pid}", "detached", cmd or [head.partition("(")[2]],
                    popen, time.monotonic())  # type: ignore[arg-type]
        proc.cpu_at_gate = 0.0  # born after the gate
        threading.Thread(target=proc._reap, name=f"reap-{pid}", daemon=True).start()
        found.append(proc)
    return found


# ---------------------------------------------------------------------- run
def _signalled(r: Receiver, now: float) -> float | None:
    """When ``r``'s own done signal was first seen (None: not yet)."""
    if r.detect == "exit":
        return r.proc.ended if not r.proc.running and r.proc.status == 0 else None
    if r.detect == "marker":
        return now if os.path.exists(r.marker) else None
    try:
        return now if os.path.getsize(r.target) == r.expected_size else None
    except OSError:
        return None


def monitor(receivers: list[Receiver], payload: Payload, deadline: float,
            poll: float = 0.01) -> None:
    """Record each receiver's completion time (see README: "completion").

    t_signal: first poll (every 10 ms) that sees the receiver's done signal
    (curl exit 0 / aria2 or libtorrent completion marker / murder's payload at
    its final path with full size).  Once every receiver has signalled, each
    target's sha256 is computed here; if it matches, t_done = t_signal; if not,
    it is re-hashed every 100 ms and t_done = the start of the first matching
    hash.  Hashing waits for the last signal so that it neither takes CPU from
    the clients still running on the same cores nor delays the polling of
    receivers that finish together (16 × 16 MiB of sha256 took ~0.6 s here).
    """
    pending = list(receivers)
    while time.monotonic() < deadline:
        now = time.monotonic()
        for r in pending:
            if r.t_signal is None:
                r.t_signal = _signalled(r, now)
                if r.t_signal is None and not r.proc.running:
                    r.failure = f"exited with status {r.proc.status} before completing"
        pending = [r for r in pending if r.t_signal is None and r.failure is None]
        if not pending:
            break
        time.sleep(poll)
    pending = [r for r in receivers if r.t_signal is not None and r.failure is None]
    while pending and time.monotonic() < deadline:
        for r in [r for r in pending if r.next_check <= time.monotonic()]:
            start = time.monotonic()
            try:
                ok = sha256_file(r.target) == payload.sha256
            except OSError:
                ok = False
            if ok:
                r.t_done = r.t_signal if r.checks == 0 else start
            else:
                r.checks += 1
                r.next_check = time.monotonic() + 0.1
                if not r.proc.running and r.checks > 3:
                    r.failure = f"payload sha256 mismatch after exit {r.proc.status}"
        pending = [r for r in pending if r.t_done is None and r.failure is None]
        if pending:
            time.sleep(poll)
    for r in receivers:
        if r.t_done is None and r.failure is None:
            r.failure = "timed out"


def run_one(method: Method, n: int, size: int, rate_mbit: float, repeat: int,
            payload: Payload, args: argparse.Namespace, sampler: CpuSampler,
            root: str) -> dict:
    """One method, N receivers, fresh topology; returns the run's record."""
    rate_bytes = rate_mbit * 1e6 / 8
    bound = kumar_ross_bound(size, rate_bytes, rate_bytes, [rate_bytes] * n)
    rec: dict = {"method": method.name, "n": n, "size_bytes": size, "rate_mbit": rate_mbit,
                 "repeat": repeat, "bound_s": bound, "status": "ok"}
    reason = method.unavailable(args)
    if reason:
        rec.update(status="skipped", reason=reason)
        return rec
    workdir = tempfile.mkdtemp(prefix=f"{method.name}-n{n}-r{repeat}-", dir=root)
    run_timeout = args.run_timeout or max(60.0, 3.0 * n * bound + 30.0)
    receivers: list[Receiver] = []
    detached: list[Proc] = []
    with Topology(n, rate_mbit, queue_ms=args.queue_ms) as topo:
        ctx = Context(topo, payload, workdir, args)
        try:
            method.start_infra(ctx)
            for host in topo.peers:
                dest = os.path.join(workdir, f"dest-{host.index}")
                os.makedirs(dest)
                argv, env, r = method.receiver(ctx, host, dest)
                r.expected_size = size
                r.proc = ctx.spawn(host, "peer", argv, env=env, gated=True)
                receivers.append(r)
            ctx.wait_until("receivers parked at the gate",
                           lambda: all(is_parked(r.proc.pid, ctx.gate) for r in receivers),
                           30, [r.proc for r in receivers])
            for p in ctx.infra + [r.proc for r in receivers]:
                p.snapshot_gate()
            tx0 = topo.link_bytes(topo.seeder)["tx_bytes"]
            # Orphans from before the gate (none expected) are not this run's.
            stop_all(adopt_orphans({r.proc.pid for r in receivers} | {p.pid for p in ctx.infra}))
            t0 = ctx.gate.open()
            monitor(receivers, payload, t0 + run_timeout)
            t_end = max((r.t_done for r in receivers if r.t_done), default=time.monotonic())
            tx1 = topo.link_bytes(topo.seeder)["tx_bytes"]
            method.after_run(ctx, rec, time.monotonic() - t0)
            rec["qdisc_drops"] = topo.qdisc_drops()
        except Exception as e:  # noqa: BLE001 - a failed run is a result, not a crash
            rec.update(status="failed", reason=f"{type(e).__name__}: {e}")
            t0 = t_end = time.monotonic()
            tx0 = tx1 = 0
        finally:
            known = {r.proc.pid for r in receivers if r.proc} | {p.pid for p in ctx.infra}
            detached = adopt_orphans(known)
            stop_all([r.proc for r in receivers if r.proc] + detached)
            stop_all(ctx.infra)
            ctx.gate.close()
    failures = [f"{r.host.addr}: {r.failure}" for r in receivers if r.failure]
    if failures and rec["status"] == "ok":
        rec.update(status="failed", reason="; ".join(failures[:4]))
    delivered = sum(size for r in receivers if r.t_done)
    # Detached lingering seeders (legacy `peer`) count as the receivers' CPU.
    detached_cpu = sum(p.cpu_after_gate or 0.0 for p in detached)
    peers_cpu = sum(r.proc.cpu_after_gate or 0.0 for r in receivers if r.proc) + detached_cpu
    infra_cpu = {p.role: p.cpu_after_gate for p in ctx.infra}
    rec.update({
        "time_s": (t_end - t0) if rec["status"] == "ok" else None,
        "receivers": [{
            "addr": r.host.addr, "t_s": (r.t_done - t0) if r.t_done else None,
            "signal_s": (r.t_signal - t0) if r.t_signal else None, "rehashes": r.checks,
            "failure": r.failure, "exit": r.proc.status if r.proc else None,
            "cpu_s": r.proc.cpu_after_gate if r.proc else None,
            "maxrss_kib": r.proc.maxrss_kib if r.proc else None} for r in receivers],
        "infra": [{"role": p.role, "cpu_s": p.cpu_after_gate, "cpu_before_gate_s": p.cpu_at_gate,
                   "maxrss_kib": p.maxrss_kib, "exit": p.status} for p in ctx.infra],
        "detached": [{"argv": p.argv, "cpu_s": p.cpu_s, "maxrss_kib": p.maxrss_kib,
                      "exit": p.status} for p in detached],
        "detached_cpu_s": detached_cpu,
        "seeder_upload_bytes": tx1 - tx0,
        "seeder_upload_ratio": (tx1 - tx0) / size,
        "peers_cpu_s": peers_cpu,
        "cpu_s": peers_cpu + sum(v or 0.0 for v in infra_cpu.values()),
        "peers_cpu_s_per_gib": peers_cpu / (delivered / 2**30) if delivered else None,
        "peak_rss_kib": max((r.proc.maxrss_kib or 0 for r in receivers if r.proc), default=None),
        "cpu_saturation": sampler.saturation(t0, t_end),
        "cpu_mean_busy": sampler.mean_busy(t0, t_end),
        "machine_busy_cpu_s": sampler.busy_cpu_seconds(t0, t_end),
        "workdir": workdir,
    })
    if rec["time_s"] is not None:
        rec["ratio"] = rec["time_s"] / bound
    if rec["status"] == "failed":
        kept = os.path.join(args.failed_logs, os.path.basename(workdir))
        shutil.copytree(ctx.logdir, kept, dirs_exist_ok=True)
        rec["logs"] = kept
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return rec


# ------------------------------------------------------------------- output
COLUMNS = ("method", "N", "MiB", "Mbit", "time s", "÷bound", "seed up÷F", "CPU s",
           "peer CPU s/GiB", "peak RSS MiB", "CPU sat %")


def row(rec: dict) -> list[str]:
    def f(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)
    if rec["status"] != "ok":
        return [rec["method"], str(rec["n"]), f(rec["size_bytes"] / 2**20, ".0f"),
                f(rec["rate_mbit"], "g"), rec["status"].upper(), "", "", "", "", "", ""]
    return [rec["method"], str(rec["n"]), f(rec["size_bytes"] / 2**20, ".0f"),
            f(rec["rate_mbit"], "g"), f(rec["time_s"], ".2f"), f(rec.get("ratio"), ".2f"),
            f(rec["seeder_upload_ratio"], ".2f"), f(rec["cpu_s"], ".1f"),
            f(rec["peers_cpu_s_per_gib"], ".1f"),
            f((rec["peak_rss_kib"] or 0) / 1024, ".0f"),
            f(None if rec["cpu_saturation"] is None else 100 * rec["cpu_saturation"], ".0f")]


_WIDTHS = (10, 3, 4, 4, 7, 6, 9, 6, 14, 12, 9)


def table(records: list[dict], header: bool = True) -> str:
    rows = ([list(COLUMNS)] if header else []) + [row(r) for r in records]
    widths = [max([_WIDTHS[i]] + [len(r[i]) for r in rows]) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.rjust(w) if i > 0 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    notes = [f"  {r['method']} N={r['n']} #{r['repeat']}: {r['status']}: {r.get('reason')}"
             + (f" [logs kept in {r['logs']}]" if r.get("logs") else "")
             for r in records if r["status"] != "ok"]
    notes += [f"  {r['method']} N={r['n']}: median of {r['ok_runs']} successful of {r['runs']} runs"
              for r in records if r.get("ok_runs", 0) < r.get("runs", 0)]
    notes += [f"  {r['method']} N={r['n']} #{r['repeat']}: tracker load "
              f"{r['tracker_announces_per_peer_s']:.3f} announces/s per peer"
              for r in records if r.get("tracker_announces_per_peer_s")]
    return "\n".join(lines + notes)


def summarize(records: list[dict]) -> list[dict]:
    """Median over repeats per (method, N, size, rate) of the ok runs."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["method"], r["n"], r["size_bytes"], r["rate_mbit"]), []).append(r)
    out = []
    for (method, n, size, rate), rs in groups.items():
        ok = [r for r in rs if r["status"] == "ok"]
        if not ok:
            out.append(dict(rs[0], repeat="all"))
            continue
        med = {"method": method, "n": n, "size_bytes": size, "rate_mbit": rate, "repeat": "median",
               "status": "ok", "runs": len(rs), "ok_runs": len(ok), "bound_s": ok[0]["bound_s"]}
        for key in ("time_s", "ratio", "seeder_upload_ratio", "cpu_s", "peers_cpu_s",
                    "peers_cpu_s_per_gib", "peak_rss_kib", "cpu_saturation",
                    "tracker_announces_per_peer_s"):
            vals = [r[key] for r in ok if r.get(key) is not None]
            med[key] = statistics.median(vals) if vals else None
        out.append(med)
    return out


def first_last_table(records: list[dict]) -> str:
    """First and last receiver done (s after the gate, medians over the ok runs)
    and every run's time ÷ bound: a chain shows as an early first receiver."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["n"], r["size_bytes"], r["rate_mbit"], r["method"]), []).append(r)
    lines = ["  N method          first s   last s   single runs ÷bound"]
    for (n, _, _, method), rs in sorted(groups.items()):
        ok = [r for r in rs if r["status"] == "ok"]
        firsts = [min(x["t_s"] for x in r["receivers"] if x["t_s"] is not None) for r in ok]
        if not ok:
            lines.append(f"{n:3d} {method:<14}        -        -   (no successful run)")
            continue
        lines.append(f"{n:3d} {method:<14} {statistics.median(firsts):8.2f} "
                     f"{statistics.median(r['time_s'] for r in ok):8.2f}   "
                     + ", ".join(f"{r['ratio']:.2f}" for r in ok))
    return "\n".join(lines)


def plot(records: list[dict], path: str) -> str | None:
    """Completion curves per method and N, with the lower bound. None if no matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not importable: no PNG (pip install matplotlib, bench-only)"
    ok = [r for r in records if r["status"] == "ok"]
    if not ok:
        return "no successful run to plot"
    settings = sorted({(r["n"], r["size_bytes"], r["rate_mbit"]) for r in ok})
    fig, axes = plt.subplots(1, len(settings) + 1, figsize=(4.2 * (len(settings) + 1), 4),
                             squeeze=False)
    methods = sorted({r["method"] for r in ok})
    colors = {m: f"C{i}" for i, m in enumerate(methods)}
    for ax, (n, size, rate) in zip(axes[0], settings):
        for r in ok:
            if (r["n"], r["size_bytes"], r["rate_mbit"]) != (n, size, rate):
                continue
            ts = sorted(x["t_s"] for x in r["receivers"])
            ax.step([0] + ts, range(len(ts) + 1), where="post", color=colors[r["method"]],
                    label=r["method"] if r["repeat"] == 0 else None)
        bound = kumar_ross_bound(size, rate * 1e6 / 8, rate * 1e6 / 8, [rate * 1e6 / 8] * n)
        ax.axvline(bound, color="k", linestyle="--", label="T_min")
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set(title=f"N={n}, {size / 2**20:.0f} MiB, {rate:g} Mbit/s", xlabel="s since gate",
               ylabel="receivers complete")
        ax.legend(fontsize=7)
    ax = axes[0][-1]
    for m in methods:
        pts = sorted((s["n"], s["ratio"]) for s in summarize(ok) if s["method"] == m and s.get("ratio"))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=colors[m], label=m)
    ax.axhline(1.0, color="k", linestyle="--", label="T_min")
    ax.set(title="time ÷ Kumar–Ross bound (median)", xlabel="N", ylabel="T / T_min")
    ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    return None


# ---------------------------------------------------------------------- cli
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    ap.add_argument("--sizes-mib", type=lambda s: [float(x) for x in s.split(",")], default=[16.0],
                    help="payload sizes in MiB, comma-separated (default 16)")
    ap.add_argument("--rate-mbit", type=float, default=40.0,
                    help="per-host rate each way, Mbit/s (10^6 bit/s) (default 40)")
    ap.add_argument("--rate-for", action="append", default=[], metavar="N=MBIT",
                    help="override the rate for one N (e.g. 32=16); repeatable")
    ap.add_argument("--n", type=ints, default=[4, 8, 16], help="receiver counts (default 4,8,16)")
    ap.add_argument("--methods", default=",".join(ALL_METHODS),
                    help=f"comma-separated, from {','.join(ALL_METHODS)}")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", help="write all records + medians here")
    ap.add_argument("--png", help="draw completion curves here (needs matplotlib)")
    ap.add_argument("--tracker", choices=("auto", "murder", "opentracker"), default="auto",
                    help="tracker for aria2/libtorrent (auto: ours if `murder tracker` runs)")
    ap.add_argument("--piece-length", type=int, default=None,
                    help="torrent piece length in bytes (default: make-torrent's choice)")
    ap.add_argument("--murder-seed-arg", dest="murder_seed_args", action="append", default=[],
                    help="extra argument for `murder seed` (repeatable)")
    ap.add_argument("--murder-peer-arg", dest="murder_peer_args", action="append", default=[],
                    help="extra argument for `murder peer` (repeatable, e.g. --murder-peer-arg=--seed-time=5)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=ARGS",
                    help="a murder method with other settings, run side by side: NAME and "
                         "extra arguments for both `murder seed` and `murder peer` "
                         "(shell-quoted), e.g. 'murder-16k=--request-size=16K'; "
                         "list NAME in --methods (repeatable)")
    ap.add_argument("--variant-command", action="append", default=[], metavar="NAME=PATH",
                    help="run the --variant NAME (or a new variant) with this `murder` "
                         "executable for seeder and peers, e.g. a wrapper running an older "
                         "checkout (the tracker stays ours)")
    ap.add_argument("--variant-tracker", action="append", default=[], metavar="NAME=ARGS",
                    help="extra arguments for `murder tracker` in the murder method or "
                         "--variant NAME (shell-quoted), e.g. "
                         "'murder-li0=--leecher-interval=0'; repeatable")
    ap.add_argument("--variant-seed", action="append", default=[], metavar="NAME=ARGS",
                    help="more arguments for `murder seed` only, for the --variant NAME "
                         "(shell-quoted), e.g. \"slots2=--upload-slots=2\" (repeatable)")
    ap.add_argument("--legacy-dist", action="append", default=[], metavar="NAME=DIR",
                    help="a method NAME that runs the legacy scripts of another dist folder "
                         "(e.g. an older checkout's contrib/capistrano_compat/dist) like "
                         "murder-legacy; list NAME in --methods (repeatable)")
    ap.add_argument("--python27", default=None,
                    help="python2.7 for the murder2010 method "
                         "(default: $(pyenv root)/versions/2.7.18/bin/python2.7)")
    ap.add_argument("--murder2010-dist", default=MURDER2010_DIST,
                    help=f"the original Murder's dist/ folder (default {MURDER2010_DIST})")
    ap.add_argument("--queue-ms", type=float, default=100.0,
                    help="FIFO behind each shaper, in ms at the rate (default 100)")
    ap.add_argument("--run-timeout", type=float, default=None,
                    help="seconds per run (default max(60, 3·N·T_min + 30))")
    ap.add_argument("--setup-timeout", type=float, default=60.0,
                    help="seconds for tracker/seeder to be ready (default 60)")
    ap.add_argument("--timeout", type=float, default=3600.0,
                    help="global timeout in seconds; everything is torn down (default 3600)")
    ap.add_argument("--no-verify-shaping", dest="verify_shaping", action="store_false")
    ap.add_argument("--workdir", default=None,
                    help="where payloads/downloads go (default: a fresh dir in /dev/shm)")
    ap.add_argument("--keep", action="store_true", help="keep work dirs and logs")
    ap.add_argument("--failed-logs", default="/tmp/mzb-failed-logs",
                    help="failed runs' process logs are copied here (default /tmp/mzb-failed-logs)")
    args = ap.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    args.variants = {}
    for spec in args.variant:
        name, sep, extra = spec.partition("=")
        if not sep or not name or name in ALL_METHODS:
            ap.error(f"--variant {spec!r}: expected NAME=ARGS with a new NAME")
        args.variants[name.strip()] = shlex.split(extra)
    args.variant_commands = {}
    for spec in args.variant_command:
        name, sep, path = spec.partition("=")
        if not sep or not name or name in ALL_METHODS or not os.access(path, os.X_OK):
            ap.error(f"--variant-command {spec!r}: expected NAME=PATH to an executable")
        args.variant_commands[name] = path
        args.variants.setdefault(name, [])
    args.variant_seeds = {}
    for spec in args.variant_seed:
        name, sep, extra = spec.partition("=")
        if not sep or not name or name in ALL_METHODS:
            ap.error(f"--variant-seed {spec!r}: expected NAME=ARGS for a variant")
        args.variant_seeds[name.strip()] = shlex.split(extra)
        args.variants.setdefault(name.strip(), [])
    args.variant_trackers = {}
    for spec in args.variant_tracker:
        name, sep, extra = spec.partition("=")
        if not sep or not name or name in set(ALL_METHODS) - {"murder"}:
            ap.error(f"--variant-tracker {spec!r}: expected NAME=ARGS for murder or a variant")
        args.variant_trackers[name.strip()] = shlex.split(extra)
        if name.strip() != "murder":
            args.variants.setdefault(name.strip(), [])
    args.legacy_dists = {}
    for spec in args.legacy_dist:
        name, sep, path = spec.partition("=")
        if not sep or not name or name in ALL_METHODS or \
                not os.path.isfile(os.path.join(path, "murder_client.py")):
            ap.error(f"--legacy-dist {spec!r}: expected NAME=DIR holding murder_client.py")
        args.legacy_dists[name] = os.path.abspath(path)
    unknown = set(args.methods) - set(ALL_METHODS) - set(args.variants) - set(args.legacy_dists)
    if unknown:
        ap.error(f"unknown method(s): {', '.join(sorted(unknown))}")
    args.rates = {}
    for spec in args.rate_for:
        n, _, mbit = spec.partition("=")
        args.rates[int(n)] = float(mbit)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reason = netns_available()
    if reason:
        print(f"swarm.py: {reason}; run as root on a kernel with network namespaces",
              file=sys.stderr)
        return 2
    install_signal_handlers(args.timeout)
    # PYTHONDONTWRITEBYTECODE may be set: without fresh .pyc files every murder
    # process would recompile edited sources at start, which is not what an
    # installed package costs (pip byte-compiles on install).
    import murder
    subprocess.run([sys.executable, "-m", "compileall", "-q",
                    os.path.dirname(murder.__file__), LEGACY_DIST,
                    *args.legacy_dists.values()],
                   stdout=subprocess.DEVNULL, check=False)
    if not become_subreaper():
        print("swarm.py: prctl(PR_SET_CHILD_SUBREAPER) failed: detached legacy seeders "
              "are not counted", file=sys.stderr)
    stale = cleanup_stale()
    if stale:
        print(f"removed stale namespaces of dead runs: {' '.join(stale)}")
    base = args.workdir or ("/dev/shm" if os.path.isdir("/dev/shm") else None)
    root = tempfile.mkdtemp(prefix=f"mzb{os.getpid()}-", dir=base)
    args.root = root
    report: dict = {"config": {k: v for k, v in vars(args).items() if k not in ("rates",)},
                    "rates": {str(k): v for k, v in args.rates.items()},
                    "host": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()},
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    records: list[dict] = []
    sampler = CpuSampler().start()
    status = 0
    try:
        if args.verify_shaping:
            for rate in sorted({args.rate_mbit, *args.rates.values()}):
                check = verify_shaping(rate)
                report.setdefault("shaping_check", []).append(check)
                print(f"shaping check at {rate:g} Mbit/s: single stream {check['single']:.1f}, "
                      f"2→1 download {check['download']:.1f}, 1→2 upload {check['upload']:.1f} "
                      f"Mbit/s (goodput; ≈0.96 × rate after TCP/IP/Ethernet headers)")
                if not 0.85 * rate <= check["single"] <= 1.05 * rate:
                    print("WARNING: measured rate is off the configured one", file=sys.stderr)
        methods = [METHODS[m]() if m in METHODS and m not in args.variant_trackers else
                   LegacyScriptsMethod(m, dist=args.legacy_dists[m]) if m in args.legacy_dists
                   else MurderMethod(m, args.variants.get(m), args.variant_commands.get(m, MURDER),
                                     args.variant_trackers.get(m), args.variant_seeds.get(m))
                   for m in args.methods]
        print(table([]), flush=True)
        for size_mib in args.sizes_mib:
            size = int(size_mib * 2**20)
            payload = make_payload(os.path.join(root, "src"), size)
            for repeat in range(args.repeat):
                for n in args.n:
                    rate = args.rates.get(n, args.rate_mbit)
                    for method in methods:
                        rec = run_one(method, n, size, rate, repeat, payload, args, sampler, root)
                        records.append(rec)
                        print(table([rec], header=False), flush=True)
    except (KeyboardInterrupt, Interrupted) as e:
        print(f"swarm.py: interrupted ({e or 'SIGINT'}); tearing down", file=sys.stderr)
        status = 130
    except Exception as e:  # noqa: BLE001 - report what we have, then fail
        print(f"swarm.py: {type(e).__name__}: {e}; stopping", file=sys.stderr)
        report["error"] = f"{type(e).__name__}: {e}"
        status = 1
    finally:
        signal.alarm(0)
        sampler.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print()
    print(table(records))
    summary = summarize(records)
    if args.repeat > 1:
        print("\nmedians over repeats:")
        print(table(summary))
    if any(r["status"] == "ok" for r in records):
        print("\nfirst and last receiver (medians of the ok runs):")
        print(first_last_table(records))
    report.update(records=records, summary=summary,
                  loadavg_end=os.getloadavg(), finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=str)
        print(f"wrote {args.json}")
    if args.png:
        note = plot(records, args.png)
        print(note or f"wrote {args.png}")
    left = [ns for ns in list_namespaces() if ns.startswith(f"mzb{os.getpid()}x")]
    if left:
        print(f"WARNING: namespaces left behind: {left}", file=sys.stderr)
        status = status or 1
    if any(r["status"] == "failed" for r in records):
        status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
