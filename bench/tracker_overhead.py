"""Benchmark: per-announce cost of the tracker's latency histogram, in process.

Calls ``TrackerApp.handle`` (answer + latency observation for /metrics) and
``TrackerApp._dispatch`` (the same answer without it) alternately on the
same app and store, 5 rounds of 20,000 compact announces each (100 swarms,
500 peer ids, ``left`` moving so the progress bookkeeping runs), and prints
microseconds per announce.  No sockets: this isolates the code path.

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
from murder.tracker.web import TrackerApp

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
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
