"""Benchmark: per-announce cost of the latency histogram, and the live view's
answers at 2,000 hosts, in process (server CPU time only).

Calls ``TrackerApp.handle`` (answer + latency observation for /metrics) and
``TrackerApp._dispatch`` (the same answer without it) alternately on the
same app and store, 5 rounds of 20,000 compact announces each (100 swarms,
500 peer ids, ``left`` moving so the progress bookkeeping runs), and prints
microseconds per announce.  Then builds the answers of the live view for a
swarm of 2,000 hosts (and a seeder) 30 times each and prints the minimum and
median milliseconds: the minimum is the code's cost, robust to a busy
machine.  No sockets: this isolates the code path.

    flock /tmp/bench.lock .venv/bin/python -P bench/tracker_overhead.py
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from urllib.parse import quote_from_bytes

from twisted.internet.task import Clock

from murder.tracker.store import PeerStore
from murder.tracker.app import TrackerApp

RESULTS = Path(__file__).resolve().parent / "results" / "tracker_overhead.json"


def main() -> None:
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    clock = Clock()
    app = TrackerApp(PeerStore(clock, rng=random.Random(1)), leecher_interval=2)
    hashes = [os.urandom(20) for _ in range(100)]
    targets = [(f"/announce?info_hash={quote_from_bytes(hashes[i % 100], safe='')}"
                f"&peer_id=-WK0001-{i % 500:012d}&port={6000 + i % 500}&uploaded={i}"
                f"&downloaded={i}&left={1000 - i % 1000}&compact=1&numwant=50").encode()
               for i in range(20000)]
    for target in targets:  # warm up: every swarm and peer exists
        app.handle(target, "127.0.0.1")
    results: dict[str, list[float]] = {"handle": [], "_dispatch": []}
    for _ in range(5):
        for name in ("handle", "_dispatch"):
            answer = getattr(app, name)
            start = time.perf_counter()
            for target in targets:
                answer(target, "127.0.0.1")
            clock.advance(1)
            results[name].append((time.perf_counter() - start) / len(targets) * 1e6)
    for name, values in results.items():
        print(f"{name:10} us/announce: {' '.join(f'{v:.1f}' for v in values)}"
              f"  min {min(values):.1f}")
    answers = view_answers()
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"announce_us": results, "answers_ms": answers},
                                  indent=1) + "\n")
    print(f"results: {RESULTS}")


def view_answers(hosts: int = 2000, runs: int = 30) -> dict[str, list[float]]:
    """Milliseconds to build each live-view answer for one swarm of ``hosts`` hosts."""
    clock = Clock()
    clock.advance(1000)
    app = TrackerApp(PeerStore(clock, rng=random.Random(1)), leecher_interval=2)
    info_hash = os.urandom(20)
    size = 64 * 2**20
    for n in range(hosts + 1):
        left = 0 if n % 5 == 0 else size - (n * 7919) % size
        event = "completed" if n and not left else "started"
        app.handle((f"/announce?info_hash={quote_from_bytes(info_hash, safe='')}"
                    f"&peer_id=-BV0001-{n:012d}&port=6881&downloaded={size - left}&left={left}"
                    f"&event={event}&compact=1&numwant=0&ip=10.0.{n >> 8}.{n & 255}").encode(),
                   "127.0.0.1")
    clock.advance(1)
    targets = {"dashboard.json (one swarm)": f"/dashboard.json?info_hash={info_hash.hex()}",
               "dashboard.json (all swarms)": "/dashboard.json", "/metrics": "/metrics",
               "/status.json": "/status.json"}
    out: dict[str, list[float]] = {}
    print(f"answers for one swarm of {hosts} hosts, {runs} builds each (ms):")
    for label, target in targets.items():
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            reply = app.handle(target.encode(), "127.0.0.1")
            times.append((time.perf_counter() - start) * 1000)
            assert reply.code == 200
        out[label] = times
        times = sorted(times)
        print(f"  {label:30} min {times[0]:7.2f}  median {times[len(times) // 2]:7.2f}"
              f"  bytes {len(reply.body):,}")
    return out


if __name__ == "__main__":
    main()
