#!/usr/bin/env python3
"""Where a swarm run's time went, from the logs of a kept run (``swarm.py --keep``).

Prints, in seconds after the gate opened (``gate.open``'s mtime): when the
receivers were up (their "on port" line: interpreter start, imports, storage),
when the seeder's last first copy left ("every piece has left once"), and when
the receivers completed.  Log lines carry the time of day only (HH:MM:SS.mmm),
so a run must not cross midnight.

    .venv/bin/python bench/swarm_timeline.py /dev/shm/mzb…/murder-n16-r0-…
"""

from __future__ import annotations

import datetime
import glob
import os
import re
import statistics
import sys

STAMP = re.compile(r"^(\d\d):(\d\d):(\d\d\.\d+) ")


def seconds_of_day(line: str) -> float | None:
    m = STAMP.match(line)
    if not m:
        return None
    h, mi, s = m.groups()
    return int(h) * 3600 + int(mi) * 60 + float(s)


def first(path: str, needle: str) -> float | None:
    with open(path, errors="replace") as f:
        for line in f:
            if needle in line:
                return seconds_of_day(line)
    return None


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    return (f"min {min(values):6.2f}  median {statistics.median(values):6.2f}  "
            f"max {max(values):6.2f}  (n={len(values)})")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    run = argv[0]
    gate = os.path.join(run, "gate.open")
    if not os.path.exists(gate):
        print(f"swarm_timeline.py: {gate} is missing (not a kept run?)", file=sys.stderr)
        return 1
    t = datetime.datetime.fromtimestamp(os.stat(gate).st_mtime)
    t0 = t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6
    peers = sorted(glob.glob(os.path.join(run, "logs", "peer-*.log")))
    up = [x - t0 for x in (first(p, " on port ") for p in peers) if x is not None]
    done = [x - t0 for x in (first(p, "complete: ") for p in peers) if x is not None]
    seeders = glob.glob(os.path.join(run, "logs", "seeder-*.log"))
    copy = first(seeders[0], "every piece has left once") if seeders else None
    print(f"run {os.path.basename(run)}: {len(peers)} receivers, seconds after the gate")
    print(f"  receiver up (on port)   {spread(up)}")
    print(f"  seeder's first pass     {'-' if copy is None else f'{copy - t0:6.2f}'}")
    print(f"  receiver complete       {spread(done)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
