"""Benchmark: announces/s and latency of our tracker vs opentracker, with wrk.

Starts ``murder tracker`` and Debian's ``opentracker`` on free loopback
ports (each pinned to CPU 0 with ``taskset`` when available; wrk runs on
CPU 1), drives each with ``wrk`` and ``bench/tracker_wrk.lua`` (compact
announces, random info hashes and peer ids from fixed pools), prints a
side-by-side table and the ratio, and writes
``bench/results/tracker_announce.json``.

    .venv/bin/python bench/tracker_announce.py [--duration 10] [--connections 32]

Target (issue): >= 50 % of opentracker's rate with p99 < 20 ms.  Add
``--close`` to send ``Connection: close`` on every announce (one TCP
connection each, as most BitTorrent clients do); results then go to
``bench/results/tracker_announce_close.json``.

``--fleet`` (issue 15) runs every comparison in one go, servers on CPU 0 and
load on CPU 1: HTTP keep-alive and one connection per announce for our
tracker, for the same ``TrackerApp`` behind twisted.web
(``bench/tracker_twistedweb.py``) and for opentracker; BEP 15 UDP for ours
and opentracker's (load from ``bench/udp_announce_load.c``, compiled with
``cc``, ``--inflight`` requests in flight, default 512); our tracker on the
Redis store with 1 and 2 tracker processes.  UDP rows also show the server's
system-time share, peers per reply, timeouts, error replies and (ours) the
datagrams each reactor wakeup read, from /metrics.
Results: ``bench/results/tracker_fleet.json``.

``--fleet --udp-sweep 32,128,512`` runs only the UDP rows, ours and
opentracker's, at each in-flight count (``bench/results/tracker_udp_sweep.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LUA = HERE / "tracker_wrk.lua"
RESULTS = HERE / "results" / "tracker_announce.json"
RESULTS_CLOSE = HERE / "results" / "tracker_announce_close.json"
PROBE = ("/announce?info_hash=%01%02%03%04%05%06%07%08%09%0A%0B%0C%0D%0E%0F%10%11%12%13%14"
         "&peer_id=-PR0001-000000000000&port=6881&left=0&compact=1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cpu: int, argv: list[str]) -> list[str]:
    if shutil.which("taskset") and os.cpu_count() and os.cpu_count() > cpu:
        return ["taskset", "-c", str(cpu), *argv]
    return argv


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 15.0) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{PROBE}", timeout=2) as r:
                return r.read()
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server on port {port} not ready after {timeout}s")


def run_wrk(port: int, duration: int, connections: int, threads: int, hashes: Path,
            close: bool) -> dict:
    extra = ["-H", "Connection: close"] if close else []
    out = subprocess.run(
        pinned(1, ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency",
                   *extra, "-s", str(LUA), f"http://127.0.0.1:{port}/announce"]),
        capture_output=True, text=True, timeout=duration + 60, check=True,
        env={**os.environ, "WRK_HASHES": str(hashes)}).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("WRKJSON "))
    stats = json.loads(line[len("WRKJSON "):])
    stats["rate"] = stats["requests"] / (stats["duration_us"] / 1e6)
    return stats


def bench(name: str, argv: list[str], port: int, args, workdir: Path) -> dict:
    log = open(workdir / f"{name}.log", "w")
    proc = subprocess.Popen(pinned(0, argv), stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        probe = wait_ready(port, proc)
        if b"failure reason" in probe:
            raise RuntimeError(f"{name} refused the probe announce: {probe!r}")
        stats = run_wrk(port, args.duration, args.connections, args.threads,
                        workdir / "whitelist", args.close)
        # The server must still answer properly after the load.
        after = wait_ready(port, proc)
        stats["healthy_after"] = b"failure reason" not in after and after.startswith(b"d")
        return stats
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
        log.close()


# ------------------------------------------------------------------ --fleet (issue 15)
#
# One run, side by side, each server a fresh process pinned to CPU 0 and the
# load on CPU 1: HTTP keep-alive and one connection per announce for our
# tracker (fasthttp), the same TrackerApp behind twisted.web, and
# opentracker; BEP 15 UDP for ours and opentracker's; ours on the Redis
# store (redis-server pinned to CPU 0 too) with 1 and 2 tracker processes.
# Each row records how busy the server's CPU was (from /proc/PID/stat) and
# how much CPU the load generator used: a server near 100 % with a generator
# below 100 % of its core means the server, not the load, was the limit.

UDP_LOAD_C = HERE / "udp_announce_load.c"
RESULTS_FLEET = HERE / "results" / "tracker_fleet.json"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    return sum(cpu_split(pid))


def children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def build_udp_load(workdir: Path) -> Path:
    """Compile the C UDP load generator (one core of C outruns any tracker here)."""
    out = workdir / "udp_announce_load"
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("a C compiler (Debian gcc) is needed for the UDP load generator")
    subprocess.run([cc, "-O2", "-o", str(out), str(UDP_LOAD_C)], check=True)
    return out


def run_udp(load: Path, ports: list[int], duration: int, inflight: int, hashes: Path) -> dict:
    """The C generator with ``inflight`` requests in flight; its UDPJSON line, plus the rate."""
    out = subprocess.run(pinned(1, [str(load), "127.0.0.1", str(duration), str(inflight),
                                    str(hashes), *map(str, ports)]),
                         capture_output=True, text=True, timeout=duration + 30, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("UDPJSON "))
    stats = json.loads(line[len("UDPJSON "):])
    stats["rate"] = stats["requests"] / (stats["duration_us"] / 1e6)
    return stats


def udp_io(ports: list[int]) -> tuple[float, float]:
    """(wakeups, datagrams) of our trackers' UDP ports so far, from /metrics."""
    reads = datagrams = 0.0
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("murder_tracker_udp_reads_total "):
                    reads += float(line.split()[1])
                elif line.startswith("murder_tracker_udp_datagrams_total "):
                    datagrams += float(line.split()[1])
    return reads, datagrams


def run_wrk_many(ports: list[int], args, hashes: Path, close: bool) -> dict:
    """wrk on each port at once (connections split), summed; p99 is the worst one's."""
    if len(ports) == 1:
        return run_wrk(ports[0], args.duration, args.connections, args.threads, hashes, close)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(len(ports)) as pool:
        parts = list(pool.map(lambda p: run_wrk(p, args.duration, args.connections // len(ports),
                                                args.threads, hashes, close), ports))
    total = {k: sum(p[k] for p in parts) for k in parts[0] if k.startswith(("errors_",
                                                                            "requests"))}
    total.update({k: max(p[k] for p in parts) for k in ("p50_us", "p90_us", "p99_us", "max_us",
                                                        "duration_us")})
    total["rate"] = sum(p["rate"] for p in parts)
    return total


class Servers:
    """Processes of one measurement, pinned to CPU 0, stopped by PID."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")
        proc = subprocess.Popen(pinned(0, argv), stdout=log, stderr=subprocess.STDOUT,
                                cwd=self.workdir)
        log.close()
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(5)
        self.procs = []


def measure(trackers: list[subprocess.Popen], load) -> dict:
    """Run ``load()``; add the trackers' CPU use (cores) and the load's."""
    before = [cpu_split(p.pid) for p in trackers]
    load_before = children_cpu()
    started = time.monotonic()
    stats = load()
    wall = time.monotonic() - started
    after = [cpu_split(p.pid) for p in trackers]
    # The kernel's share (system time: recvfrom, sendto, the loopback delivery
    # to the generator) is the part no change to our Python can cut.
    stats["server_user"] = sum(a[0] - b[0] for a, b in zip(after, before)) / wall
    stats["server_sys"] = sum(a[1] - b[1] for a, b in zip(after, before)) / wall
    stats["server_cpu"] = stats["server_user"] + stats["server_sys"]
    stats["load_cpu"] = (children_cpu() - load_before) / wall
    return stats


def wait_redis(path: Path, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    import redis

    client = redis.Redis(unix_socket_path=str(path), socket_timeout=1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("redis-server exited")
        try:
            if client.ping():
                return
        except redis.RedisError:
            time.sleep(0.05)
    raise RuntimeError("redis-server not ready")


def fleet(args) -> int:
    """The issue-15 comparison (see the comment above); JSON to tracker_fleet.json."""
    for tool in ("wrk", "opentracker"):
        if not shutil.which(tool):
            print(f"{tool} is not installed", file=sys.stderr)
            return 1
    murder = str(Path(sys.executable).parent / "murder")
    results: dict = {"duration_s": args.duration, "connections": args.connections,
                     "inflight": args.inflight,
                     "torrents": args.torrents, "pinned": bool(shutil.which("taskset")),
                     "rows": {}}
    rows = results["rows"]
    with tempfile.TemporaryDirectory(prefix="tracker-fleet-") as tmp:
        workdir = Path(tmp)
        pool = [bytes(range(1, 21)).hex()] + [os.urandom(20).hex() for _ in range(args.torrents)]
        hashes = workdir / "whitelist"
        hashes.write_text("\n".join(pool) + "\n")
        os.chmod(workdir, 0o755)
        os.chmod(hashes, 0o644)
        load = build_udp_load(workdir)
        paths: list[str] = []  # UDP path of each of our trackers of the current row

        def ours(servers: Servers, port: int, *extra: str) -> subprocess.Popen:
            proc = servers.start(f"murder-{port}", [
                murder, "tracker", "--port", str(port), "--bind", "127.0.0.1", "--dfile", "",
                "--udp-port", str(port), "--max-torrents", "100000", "--max-peers", "1000000",
                *extra])
            wait_ready(port, proc)
            # Which UDP path answered (the tracker says at start): a row of "ours"
            # must not be the pure-Python path without anyone noticing.
            said = (workdir / f"murder-{port}.log").read_text(errors="replace")
            paths.append(said.split("answered in ", 1)[1].split("\n", 1)[0]
                         if "answered in " in said else "unknown")
            return proc

        def twweb(servers: Servers, port: int) -> subprocess.Popen:
            proc = servers.start("twweb", [sys.executable, str(HERE / "tracker_twistedweb.py"),
                                           str(port)])
            wait_ready(port, proc)
            return proc

        def opentracker(servers: Servers, port: int) -> subprocess.Popen:
            proc = servers.start("opentracker", [
                "opentracker", "-i", "127.0.0.1", "-p", str(port), "-P", str(port), "-d", tmp,
                "-w", "whitelist"])
            wait_ready(port, proc)
            return proc

        def run(name: str, start, kind: str, close: bool = False, n: int = 1,
                redis_store: bool = False, inflight: int | None = None) -> None:
            if args.rows and not any(part in name for part in args.rows.split(",")):
                return
            servers = Servers(workdir)
            try:
                extra: list[str] = []
                if redis_store:
                    sock = workdir / "redis.sock"
                    rp = servers.start("redis", ["redis-server", "--port", "0", "--unixsocket",
                                                 str(sock), "--save", "", "--appendonly", "no"])
                    wait_redis(sock, rp)
                    extra = ["--store", f"unix://{sock}?db=0"]
                ports = [free_port() for _ in range(n)]
                paths.clear()
                trackers = [start(servers, p, *extra) for p in ports]
                watched = servers.procs  # trackers and redis-server: all on CPU 0
                if kind == "udp":
                    depth = inflight or args.inflight
                    io_before = udp_io(ports) if start in (ours, pure) else None
                    stats = measure(watched, lambda: run_udp(load, ports, args.duration,
                                                             depth, hashes))
                    if io_before is not None:
                        reads, datagrams = (b - a for a, b in zip(io_before, udp_io(ports)))
                        stats["per_wakeup"] = datagrams / max(reads, 1)
                    # The generator's own CPU (it reports it), not the wrapper's.
                    stats["load_cpu"] = stats["cpu_s"] / (stats["duration_us"] / 1e6)
                else:
                    stats = measure(watched, lambda: run_wrk_many(ports, args, hashes, close))
                stats["healthy_after"] = all(
                    not wait_ready(p, t).startswith(b"d14:failure") for p, t in
                    zip(ports, trackers))
                # Announces per CPU-second of the server side (tracker processes and
                # redis-server): comparable between rows even when other work on
                # the machine took part of CPU 0 during some of them.
                stats["per_cpu_s"] = stats["rate"] / max(stats["server_cpu"], 1e-9)
                if paths and kind == "udp":
                    stats["udp_path"] = paths[0]
                rows[name] = stats
                extra_cols = ""
                if kind == "udp":
                    extra_cols = (f"  (sys {stats['server_sys']:.2f})"
                                  f"  {stats['peers_per_reply']:.1f} peers/reply"
                                  f"  timeouts {stats['timeouts']} errors {stats['errors']}"
                                  + (f"  {stats['per_wakeup']:.1f}/wakeup"
                                     if "per_wakeup" in stats else "")
                                  + (f"  [{stats['udp_path'].split(' ')[0]}]"
                                     if "udp_path" in stats else ""))
                print(f"  {name:50} {stats['rate']:>8,.0f}/s  p99 {stats['p99_us'] / 1000:6.2f} ms"
                      f"  server CPU {stats['server_cpu']:.2f}  load CPU {stats['load_cpu']:.2f}"
                      f"  {stats['per_cpu_s']:>8,.0f}/CPU-s{extra_cols}", flush=True)
            finally:
                servers.stop()

        def pure(servers: Servers, port: int, *extra: str) -> subprocess.Popen:
            """Ours on the pure-Python UDP path (session 6: the A/B of the C one)."""
            return ours(servers, port, "--no-udp-fastpath", *extra)

        if args.udp_sweep:
            # Session 5: UDP only, both trackers at each in-flight count, same load.
            # Session 6: ours twice, the C drain loop (the default) and pure Python.
            depths = [int(d) for d in args.udp_sweep.split(",")]
            results["udp_sweep"] = depths
            print(f"UDP, {args.duration} s each, servers on CPU 0, load on CPU 1; "
                  "requests in flight: " + ", ".join(map(str, depths)))
            for depth in depths:
                run(f"udp {depth:>5} in flight: murder (memory store)", ours, "udp",
                    inflight=depth)
                if args.pure_python:
                    run(f"udp {depth:>5} in flight: murder (memory, --no-udp-fastpath)", pure,
                        "udp", inflight=depth)
                run(f"udp {depth:>5} in flight: opentracker", opentracker, "udp",
                    inflight=depth)
                a, p, b = (rows.get(f"udp {depth:>5} in flight: {who}")
                           for who in ("murder (memory store)",
                                       "murder (memory, --no-udp-fastpath)", "opentracker"))
                for label, x, y in (("", a, b), (" pure Python/opentracker", p, b),
                                    (" C/pure Python", a, p)):
                    if x and y:
                        print(f"  ratio at {depth}{label}: {x['rate'] / y['rate']:.2f} by rate, "
                              f"{x['per_cpu_s'] / y['per_cpu_s']:.2f} per server CPU-second",
                              flush=True)
            path = HERE / "results" / "tracker_udp_sweep.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results, indent=1) + "\n")
            print(f"results: {path}")
            return 0
        print(f"{args.connections} connections (HTTP), {args.inflight} requests in flight "
              f"(UDP), {args.duration} s each, servers on CPU 0, load on CPU 1")
        run("http keep-alive: murder (fasthttp)", ours, "http")
        run("http keep-alive: murder (twisted.web)", twweb, "http")
        run("http keep-alive: opentracker", opentracker, "http")
        run("http close: murder (fasthttp)", ours, "http", close=True)
        run("http close: murder (twisted.web)", twweb, "http", close=True)
        run("http close: opentracker", opentracker, "http", close=True)
        run("udp: murder (memory store)", ours, "udp")
        if args.pure_python:
            run("udp: murder (memory, --no-udp-fastpath)", pure, "udp")
        run("udp: opentracker", opentracker, "udp")
        if shutil.which("redis-server"):
            run("udp: murder (redis store, 1 tracker)", ours, "udp", redis_store=True)
            run("udp: murder (redis store, 2 trackers)", ours, "udp", n=2, redis_store=True)
            run("http keep-alive: murder (redis store, 1 tracker)", ours, "http",
                redis_store=True)
    ratios = {
        "udp murder/opentracker": ("udp: murder (memory store)", "udp: opentracker"),
        "udp pure Python/opentracker": ("udp: murder (memory, --no-udp-fastpath)",
                                        "udp: opentracker"),
        "udp C/pure Python": ("udp: murder (memory store)",
                              "udp: murder (memory, --no-udp-fastpath)"),
        "http close murder/opentracker": ("http close: murder (fasthttp)",
                                          "http close: opentracker"),
        "http keep-alive murder/opentracker": ("http keep-alive: murder (fasthttp)",
                                               "http keep-alive: opentracker"),
        "http close fasthttp/twisted.web": ("http close: murder (fasthttp)",
                                            "http close: murder (twisted.web)"),
        "http keep-alive fasthttp/twisted.web": ("http keep-alive: murder (fasthttp)",
                                                 "http keep-alive: murder (twisted.web)"),
        "udp redis(1)/memory": ("udp: murder (redis store, 1 tracker)",
                                "udp: murder (memory store)"),
        "udp redis(2)/memory": ("udp: murder (redis store, 2 trackers)",
                                "udp: murder (memory store)"),
    }
    results["ratios"] = {}
    results["ratios_per_cpu"] = {}
    for label, (a, b) in ratios.items():
        if a in rows and b in rows:
            results["ratios"][label] = rows[a]["rate"] / rows[b]["rate"]
            results["ratios_per_cpu"][label] = rows[a]["per_cpu_s"] / rows[b]["per_cpu_s"]
            print(f"ratio {label}: {results['ratios'][label]:.2f} by rate, "
                  f"{results['ratios_per_cpu'][label]:.2f} per server CPU-second")
    RESULTS_FLEET.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FLEET.write_text(json.dumps(results, indent=1) + "\n")
    print(f"results: {RESULTS_FLEET}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds of wrk per tracker")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--torrents", type=int, default=1000, help="info hashes in the pool")
    parser.add_argument("--skip-opentracker", action="store_true")
    parser.add_argument("--close", action="store_true",
                        help="one connection per announce (Connection: close), as BitTorrent "
                             "clients do; opentracker never keeps connections alive anyway")
    parser.add_argument("--fleet", action="store_true",
                        help="issue 15: HTTP (keep-alive and close; fasthttp, twisted.web, "
                             "opentracker), UDP (ours, opentracker), Redis store (1 and 2 "
                             "trackers), all in one run; writes results/tracker_fleet.json")
    parser.add_argument("--rows", default="",
                        help="with --fleet: only rows whose name contains one of these "
                             "comma-separated strings (e.g. 'udp: murder (memory,udp: open')")
    parser.add_argument("--inflight", type=int, default=512,
                        help="with --fleet: UDP requests in flight (simulated hosts); 512 is "
                             "the least that kept opentracker CPU-bound in every run "
                             "(bench/README.md, 'Session 5 tracker')")
    parser.add_argument("--udp-sweep", default="",
                        help="with --fleet: only the UDP rows (ours, opentracker) at each of "
                             "these comma-separated in-flight counts, e.g. 32,128,512; "
                             "writes results/tracker_udp_sweep.json")
    parser.add_argument("--no-pure-python", dest="pure_python", action="store_false",
                        help="with --fleet: leave out our tracker's pure-Python UDP row "
                             "(--no-udp-fastpath), the A/B of the C drain loop")
    args = parser.parse_args()
    if args.fleet:
        return fleet(args)
    for tool in ("wrk",):
        if not shutil.which(tool):
            print(f"{tool} is not installed", file=sys.stderr)
            return 1
    murder = Path(sys.executable).parent / "murder"
    results: dict = {"duration_s": args.duration, "connections": args.connections,
                     "threads": args.threads, "torrents": args.torrents, "lua": str(LUA.relative_to(ROOT)),
                     "pinned": bool(shutil.which("taskset")), "keepalive": not args.close}
    with tempfile.TemporaryDirectory(prefix="tracker-bench-") as tmp:
        workdir = Path(tmp)
        # Pool of info hashes for wrk, and opentracker's whitelist (its Debian
        # build only tracks listed torrents); the probe's hash is the first.
        pool = [bytes(range(1, 21)).hex()] + [os.urandom(20).hex() for _ in range(args.torrents)]
        (workdir / "whitelist").write_text("\n".join(pool) + "\n")
        # opentracker drops to user nobody, which must still read the list.
        os.chmod(workdir, 0o755)
        os.chmod(workdir / "whitelist", 0o644)
        port = free_port()
        results["murder"] = bench("murder", [
            str(murder), "tracker", "--port", str(port), "--bind", "127.0.0.1", "--dfile", "",
            "--max-torrents", "100000", "--max-peers", "1000000"], port, args, workdir)
        if not args.skip_opentracker and shutil.which("opentracker"):
            port = free_port()
            results["opentracker"] = bench("opentracker", [
                "opentracker", "-i", "127.0.0.1", "-p", str(port), "-P", str(free_port()),
                "-d", tmp, "-w", "whitelist"], port, args, workdir)
    ours, theirs = results["murder"], results.get("opentracker")
    rows = [("announces/s", "rate", "{:,.0f}"), ("p50 ms", "p50_us", "{:.2f}"),
            ("p90 ms", "p90_us", "{:.2f}"), ("p99 ms", "p99_us", "{:.2f}"),
            ("max ms", "max_us", "{:.2f}"), ("socket errors", None, "{}")]
    mode = ("close: one connection per announce" if args.close else
            "keep-alive: wrk reuses connections (opentracker closes each one anyway)")
    print(f"{args.connections} connections, {args.duration} s each, {mode}")
    print(f"{'':16}{'murder':>14}{'opentracker':>14}")
    for label, key, fmt in rows:
        def cell(stats):
            if stats is None:
                return "-"
            if key is None:
                return fmt.format(sum(stats[k] for k in stats if k.startswith("errors_")))
            value = stats[key] / (1000 if key.endswith("_us") else 1)
            return fmt.format(value)
        print(f"{label:16}{cell(ours):>14}{cell(theirs):>14}")
    if theirs:
        ratio = ours["rate"] / theirs["rate"]
        results["ratio"] = ratio
        results["target_met"] = ratio >= 0.5 and ours["p99_us"] < 20_000
        print(f"ratio murder/opentracker: {ratio:.2f}  (target >= 0.50 with p99 < 20 ms: "
              f"{'met' if results['target_met'] else 'NOT met'})")
    path = RESULTS_CLOSE if args.close else RESULTS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
