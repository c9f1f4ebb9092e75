#!/usr/bin/env python3
"""Upload-turn length (``--turn-pieces``) in the flow-level simulator: no CPU noise.

Runs the project's own swarm and tracker code on a virtual clock over
murder/sim's network model (murder/sim/fleet.py), once per turn length and
fleet size, and prints time to the last and to the first receiver ÷ the
Kumar–Ross bound and the seeder's upload ÷ F.  On this shared 2-core
machine the real benchmark (bench/swarm.py) runs at 100 % CPU saturation;
the simulator isolates the scheduling effect from start-up and CPU.

The simulator builds its SwarmConfig itself, so each variant replaces the
``SwarmConfig`` name in murder.sim.fleet with one whose ``turn_pieces``
default differs (seeder and peers alike).

    .venv/bin/python bench/sim_turns.py --n 4,8,16 --turns 1,4,32 --json bench/results/x.json
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys

from murder.peer.config import SwarmConfig
from murder.sim import fleet


def run(n: int, variant: str, args: argparse.Namespace, seed: int) -> dict:
    """One simulated deploy; ``variant`` is a turn_pieces value, with a "p"
    suffix for ``seed_poorest_first``."""
    turns = int(variant.rstrip("p"))
    poorest = variant.endswith("p")
    cfg = fleet.FleetConfig(hosts=n, nic_bps=args.rate_mbit * 1e6,
                            payload=int(args.size_mib * 2**20), piece_length=args.piece_kib * 1024,
                            real_piece_length=args.piece_kib * 1024, seed=seed,
                            startup_min=0.0, startup_max=args.startup, time_limit=600.0)
    original = fleet.SwarmConfig
    fleet.SwarmConfig = functools.partial(SwarmConfig, turn_pieces=turns,
                                           seed_poorest_first=poorest)  # type: ignore[misc]
    try:
        result = fleet.build_and_run(cfg)
    finally:
        fleet.SwarmConfig = original  # type: ignore[misc]
    times = result.completion_times
    return {"n": n, "variant": variant, "turn_pieces": turns, "seed_poorest_first": poorest,
            "seed": seed, "completed": result.completed,
            "last": result.time_to_last, "first": times[0] if times else None,
            "bound": result.bound, "seed_up": result.seeder_upload_ratio,
            "wall_s": result.wall_s, "times": times}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", default="4,8,16", help="receivers per deploy (comma list)")
    ap.add_argument("--turns", default="1,4,32",
                    help="turn_pieces values (comma list); suffix p: with --seed-poorest-first")
    ap.add_argument("--size-mib", type=float, default=16.0)
    ap.add_argument("--rate-mbit", type=float, default=40.0)
    ap.add_argument("--piece-kib", type=int, default=128)
    ap.add_argument("--startup", type=float, default=0.3,
                    help="receivers start uniformly within this many seconds (real "
                         "processes do not start at the same instant)")
    ap.add_argument("--repeat", type=int, default=3, help="seeds per setting")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    ns = [int(x) for x in args.n.split(",")]
    turns = [x.strip() for x in args.turns.split(",") if x.strip()]
    records = []
    print(f"{'turns':>11} {'N':>3} {'last÷bound':>10} {'first÷bound':>11} "
          f"{'seed up÷F':>9}  (median of {args.repeat} seeds)")
    for n in ns:
        for k in turns:
            runs = [run(n, k, args, seed) for seed in range(1, args.repeat + 1)]
            records += runs
            if any(r["last"] is None for r in runs):
                print(f"{k:>11} {n:>3}  incomplete run(s)")
                continue
            last = statistics.median(r["last"] / r["bound"] for r in runs)
            first = statistics.median(r["first"] / r["bound"] for r in runs)
            seed_up = statistics.median(r["seed_up"] for r in runs)
            print(f"{k:>11} {n:>3} {last:>10.3f} {first:>11.3f} {seed_up:>9.2f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "runs": records}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
