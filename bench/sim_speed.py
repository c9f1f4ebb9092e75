#!/usr/bin/env python3
"""What the simulator costs per call, before and after session 6's speed-ups, in one run.

Runs one ``murder simulate`` configuration several times, alternating
"before" and "after", each in a fresh process (same interpreter, same
machine state), and prints each run's CPU seconds, calls, µs per call and a
fingerprint of what it simulated (completion times, bytes across racks,
seeder upload): the speed-ups must not change it.

- after: this tree's defaults (message-level link, batched deliveries,
  no cyclic GC during the run).
- before: with ``--before-src DIR`` (e.g. ``git archive 5cc86dc`` unpacked),
  that tree's code as it was; without it, this tree with the old paths
  switched back on (real bytes, one heap entry per call, GC on).

    nice -n 10 .venv/bin/python bench/sim_speed.py --hosts 1000 --piece-length 8M \\
        --before-src /tmp/s6base/src --json bench/results/s6-sim-speed-1000.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

#: Runs in the child: one deploy, one JSON line.  ``OLD_PATHS`` switches the
#: old paths back on in a tree that has the new ones.
CHILD = r"""
import hashlib, json, sys
from murder.sim import fleet
from murder.sim.fleet import FleetConfig, build_and_run
kw, old_paths = json.loads(sys.argv[1]), sys.argv[2] == "1"
if "core" in kw:
    kw["core"] = tuple(tuple(pair) for pair in kw["core"])  # JSON made them lists
if old_paths:
    from murder.sim.clock import SimClock
    SimClock.batching = False
    fleet._run_without_gc = lambda clock, until: clock.run(until)
    kw["link"] = "bytes"
r = build_and_run(FleetConfig(**kw))
print(json.dumps({
    "fingerprint": hashlib.sha1(json.dumps([r.completion_times, r.cross_rack_bytes,
                                            r.seeder_upload_ratio]).encode()).hexdigest()[:12],
    "ratio": r.ratio, "cpu_s": r.cpu_s, "wall_s": r.wall_s, "events": r.events,
    "calls": getattr(r, "calls", 0) or r.events, "src": fleet.__file__}))
"""


def parse_size(text: str) -> int:
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def run_one(kw: dict, src: str, old_paths: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=src)
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(kw), "1" if old_paths else "0"],
                         env=env, check=True, capture_output=True, text=True, cwd=src,
                         timeout=3600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--hosts-per-rack", type=int, default=40)
    ap.add_argument("--oversubscription", type=float, default=4.0)
    ap.add_argument("--piece-length", default="8M")
    ap.add_argument("--real-piece-length", default="16K")
    ap.add_argument("--numwant", type=int, default=10)
    ap.add_argument("--max-connections", type=int, default=20)
    ap.add_argument("--rate-quantum", type=float, default=0.02)
    ap.add_argument("--policy", default="rack")
    ap.add_argument("--time-limit", type=float, default=3600.0,
                    help="virtual seconds to simulate (less than the deploy: a partial run)")
    ap.add_argument("--core", default="",
                    help="swarm-core settings NAME=VALUE[,…] as murder simulate --core")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--before-src", default=None,
                    help="source tree of the 'before' code (default: this tree, old paths)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    kw = {"hosts": args.hosts, "hosts_per_rack": args.hosts_per_rack,
          "oversubscription": args.oversubscription,
          "piece_length": parse_size(args.piece_length),
          "real_piece_length": parse_size(args.real_piece_length),
          "numwant": args.numwant, "max_connections": args.max_connections,
          "rate_quantum": args.rate_quantum, "policy": args.policy,
          "time_limit": args.time_limit}
    if args.core:
        from murder.sim.cli import core_settings
        kw["core"] = core_settings(args.core)
    before_src = os.path.abspath(args.before_src) if args.before_src else ROOT
    modes = {"before": (before_src, args.before_src is None), "after": (ROOT, False)}
    pieces = -(-2**30 // kw["piece_length"])
    print(f"{args.hosts} hosts, {pieces} pieces of {kw['piece_length'] // 2**20} MiB "
          f"({kw['real_piece_length'] // 1024} KiB real), {args.policy}; before: "
          f"{args.before_src or 'this tree, bytes link, unbatched clock, GC on'}")
    print(f"{'round':>5} {'code':6} {'÷bound':>7} {'calls':>10} {'events':>10} {'CPU s':>7} "
          f"{'µs/call':>7}  fingerprint")
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for rnd in range(1, args.rounds + 1):
        for name, (src, old_paths) in modes.items():
            r = run_one(kw, src, old_paths)
            runs[name].append(r)
            ratio = f"{r['ratio']:7.3f}" if r["ratio"] is not None else f"{'-':>7}"
            print(f"{rnd:5d} {name:6} {ratio} {r['calls']:10d} {r['events']:10d} "
                  f"{r['cpu_s']:7.1f} {1e6 * r['cpu_s'] / r['calls']:7.1f}  {r['fingerprint']}",
                  flush=True)
    med = {name: statistics.median(r["cpu_s"] for r in rs) for name, rs in runs.items()}
    same = len({r["fingerprint"] for rs in runs.values() for r in rs}) == 1
    per_hop = {name: 1e6 * med[name] / (args.hosts * pieces) for name in med}
    # Per piece-hop only for whole deploys (a partial run did not make them all).
    hops = (f"; per piece-hop {per_hop['before']:.0f} -> {per_hop['after']:.0f} µs"
            if all(r["ratio"] is not None for rs in runs.values() for r in rs) else "")
    print(f"median CPU s: before {med['before']:.1f}, after {med['after']:.1f}: "
          f"{med['before'] / med['after']:.2f}x cheaper{hops}; "
          f"same simulated outcome: {'yes' if same else 'NO'}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json + ".tmp", "w") as f:
            json.dump({"config": kw, "before_src": args.before_src, "runs": runs,
                       "median_cpu_s": med, "per_piece_hop_us": per_hop, "same": same},
                      f, indent=1)
        os.replace(args.json + ".tmp", args.json)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
