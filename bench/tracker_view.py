"""Benchmark: cost of the live view on a tracker holding a 2,000-host deploy.

Starts ``murder tracker`` on a free loopback port (pinned to CPU 0 with
``taskset`` when available; this process and wrk run on CPU 1), registers
``--peers`` hosts in one swarm by synthetic announces (``ip=`` in 10/8, from
loopback which is trusted; a fifth of them done, the rest part-way), then:

1. answer times, measured by the client over one keep-alive connection, of
   ``/dashboard.json?info_hash=…`` (the per-swarm document with every host:
   the heavy one), ``/dashboard.json`` (all swarms), ``/metrics`` and
   ``/status.json``.  The tracker reuses a dashboard answer for 0.5 s, so
   dashboard samples are taken 0.6 s apart (every one is built afresh); a
   reused answer is timed separately;
2. announce throughput (``wrk`` with ``bench/tracker_wrk.lua``) without and
   with the dashboard open: ``--viewers`` pollers each fetching the
   per-swarm document once a second and ``/metrics`` every second, as
   Prometheus and a few people would.  Rounds alternate (off, on, off, on…)
   so drift on the shared machine hits both alike.

Prints the figures and writes ``bench/results/tracker_view.json``.

    flock /tmp/bench.lock .venv/bin/python bench/tracker_view.py [--peers 2000]

Targets (issue 13): dashboard data <= 100 ms and /metrics <= 50 ms at 2,000
peers; announces/s with the dashboard open within 10 % of without.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote_from_bytes

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from tracker_announce import free_port, pinned, run_wrk, wait_ready  # noqa: E402

RESULTS = HERE / "results" / "tracker_view.json"
SIZE = 64 * 2**20


def register(port: int, info_hash: bytes, peers: int) -> float:
    """Announce ``peers`` hosts (and one seeder) into one swarm; returns seconds taken."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    ih = quote_from_bytes(info_hash, safe="")
    start = time.perf_counter()
    for n in range(peers + 1):
        left = 0 if n == 0 else (0 if n % 5 == 0 else SIZE - (n * 7919) % SIZE)
        event = "completed" if n and left == 0 else "started"
        ip = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
        target = (f"/announce?info_hash={ih}&peer_id=-BV0001-{n:012d}&port={6000 + n % 50000}"
                  f"&uploaded={n * 1000}&downloaded={SIZE - left}&left={left}&event={event}"
                  f"&compact=1&numwant=0&ip={ip}")
        conn.request("GET", target)
        body = conn.getresponse().read()
        if b"failure" in body:
            raise RuntimeError(f"announce refused: {body!r}")
    conn.close()
    return time.perf_counter() - start


def timed_gets(port: int, target: str, count: int, spacing: float) -> tuple[list[float], int]:
    """Client-side answer times (ms) of ``count`` GETs, ``spacing`` s apart; and the size."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    times, size = [], 0
    for i in range(count):
        if i and spacing:
            time.sleep(spacing)
        start = time.perf_counter()
        conn.request("GET", target)
        response = conn.getresponse()
        body = response.read()
        times.append((time.perf_counter() - start) * 1000)
        if response.status != 200:
            raise RuntimeError(f"{target}: HTTP {response.status}")
        size = len(body)
    conn.close()
    return times, size


def stats(times: list[float]) -> dict:
    ordered = sorted(times)
    return {"n": len(times), "p50_ms": statistics.median(ordered),
            "p90_ms": ordered[int(0.9 * (len(ordered) - 1))], "max_ms": ordered[-1]}


class Viewers:
    """Background pollers: the dashboard open in ``count`` browsers, plus a Prometheus."""

    def __init__(self, port: int, swarm_target: str, count: int) -> None:
        self.port = port
        self.targets = [swarm_target] * count + ["/metrics"]
        self.stop = threading.Event()
        self.fetched = 0
        self.threads = [threading.Thread(target=self._poll, args=(t, i / (count + 1)),
                                         daemon=True) for i, t in enumerate(self.targets)]

    def _poll(self, target: str, offset: float) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        self.stop.wait(offset)
        while not self.stop.is_set():
            due = time.monotonic() + 1.0
            conn.request("GET", target)
            conn.getresponse().read()
            self.fetched += 1
            self.stop.wait(max(0.0, due - time.monotonic()))
        conn.close()

    def __enter__(self) -> "Viewers":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=30, help="timed GETs per endpoint")
    parser.add_argument("--duration", type=int, default=8, help="seconds of wrk per round")
    parser.add_argument("--rounds", type=int, default=3, help="off/on round pairs")
    parser.add_argument("--viewers", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed", file=sys.stderr)
        return 1
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    murder = Path(sys.executable).parent / "murder"
    info_hash = os.urandom(20)
    results: dict = {"peers": args.peers, "samples": args.samples, "viewers": args.viewers,
                     "wrk_duration_s": args.duration, "rounds": args.rounds,
                     "connections": args.connections, "pinned": bool(shutil.which("taskset")),
                     "loadavg_start": os.getloadavg()}
    # The machine is shared: say how busy it was, so the figures can be judged.
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="tracker-view-") as tmp:
        workdir = Path(tmp)
        pool = [bytes(range(1, 21)).hex()] + [os.urandom(20).hex() for _ in range(1000)]
        (workdir / "whitelist").write_text("\n".join(pool) + "\n")
        port = free_port()
        log = open(workdir / "tracker.log", "wb")
        proc = subprocess.Popen(pinned(0, [
            str(murder), "tracker", "--port", str(port), "--bind", "127.0.0.1", "--dfile", "",
            "--peer-timeout", "3600", "--max-torrents", "100000", "--max-peers", "1000000"]),
            stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(port, proc)
            took = register(port, info_hash, args.peers)
            print(f"registered {args.peers} hosts + 1 seeder in {took:.2f} s")
            swarm = f"/dashboard.json?info_hash={info_hash.hex()}"
            endpoints = [("dashboard.json (one swarm, every host)", swarm, 0.6),
                         ("dashboard.json (all swarms)", "/dashboard.json", 0.6),
                         ("dashboard.json reused (< 0.5 s old)", swarm, 0.0),
                         ("/metrics", "/metrics", 0.05), ("/status.json", "/status.json", 0.05)]
            results["endpoints"] = {}
            print(f"\nanswer times at {args.peers} hosts, client-measured, {args.samples} GETs:")
            print(f"{'':42}{'p50 ms':>9}{'p90 ms':>9}{'max ms':>9}{'bytes':>10}")
            for label, target, spacing in endpoints:
                times, size = timed_gets(port, target, args.samples, spacing)
                s = dict(stats(times), bytes=size, target=target)
                results["endpoints"][label] = s
                print(f"{label:42}{s['p50_ms']:9.2f}{s['p90_ms']:9.2f}{s['max_ms']:9.2f}"
                      f"{size:10,}")
            rounds: dict[str, list[float]] = {"off": [], "on": []}
            fetched = 0
            for _ in range(args.rounds):
                for mode in ("off", "on"):
                    if mode == "on":
                        with Viewers(port, swarm, args.viewers) as viewers:
                            wrk = run_wrk(port, args.duration, args.connections, 1,
                                          workdir / "whitelist", close=False)
                        fetched += viewers.fetched
                    else:
                        wrk = run_wrk(port, args.duration, args.connections, 1,
                                      workdir / "whitelist", close=False)
                    rounds[mode].append(wrk["rate"])
            off, on = statistics.median(rounds["off"]), statistics.median(rounds["on"])
            results["announce_rate"] = {"off": rounds["off"], "on": rounds["on"],
                                        "median_off": off, "median_on": on,
                                        "on_over_off": on / off, "viewer_fetches": fetched}
            results["targets_met"] = {
                "dashboard_100ms": results["endpoints"][endpoints[0][0]]["p90_ms"] <= 100,
                "metrics_50ms": results["endpoints"]["/metrics"]["p90_ms"] <= 50,
                "announces_within_10pct": on / off >= 0.9}
            print(f"\nannounces/s (wrk, {args.connections} connections, {args.duration} s rounds, "
                  f"{args.viewers} dashboard viewers + /metrics each 1/s when on):")
            print(f"  dashboard closed: {', '.join(f'{r:,.0f}' for r in rounds['off'])}"
                  f"  median {off:,.0f}")
            print(f"  dashboard open:   {', '.join(f'{r:,.0f}' for r in rounds['on'])}"
                  f"  median {on:,.0f}")
            print(f"  open / closed: {on / off:.3f}  ({fetched} viewer fetches)")
            print(f"targets: {results['targets_met']}")
            results["loadavg_end"] = os.getloadavg()
            print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(5)
            log.close()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"results: {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
