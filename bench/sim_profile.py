#!/usr/bin/env python3
"""Where a simulated deploy's time goes: events by kind and the simulator's CPU.

Runs one ``murder simulate`` configuration and counts every call the
virtual clock fires (a heap entry carrying several same-instant deliveries
counts each) by what it does — a peer-wire message delivered (by
message id: HAVE, PIECE, REQUEST …), a flow's head chunk sent, a connection
made, a swarm tick, a rate solve — and, with ``--cprofile N``, prints the N
functions with the most own CPU time.  Saves JSON.

    flock /tmp/bench.lock .venv/bin/python bench/sim_profile.py --hosts 1000 \\
        --piece-length 32M --json bench/results/sim-profile-1000.json
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import json
import os
import pstats
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from murder.peer.tap import parse_rate  # noqa: E402
from murder.sim import clock as simclock  # noqa: E402
from murder.sim.fleet import FleetConfig, build_and_run  # noqa: E402

#: BEP 3/6 message ids.
MESSAGES = {0: "CHOKE", 1: "UNCHOKE", 2: "INTERESTED", 3: "NOT_INTERESTED", 4: "HAVE",
            5: "BITFIELD", 6: "REQUEST", 7: "PIECE", 8: "CANCEL", 13: "SUGGEST",
            14: "HAVE_ALL", 15: "HAVE_NONE", 16: "REJECT", 17: "ALLOWED_FAST"}


def _kind(func, arg) -> str:
    name = getattr(func, "__qualname__", type(func).__name__)
    if name.endswith("SimTransport._receive"):
        data = arg
        if len(data) >= 68 and data[:1] == b"\x13":
            return "deliver handshake"
        if len(data) < 5:
            return "deliver keep-alive"
        return "deliver " + MESSAGES.get(data[4], f"message {data[4]}")
    if name.endswith("SimMessageProtocol.message_received"):
        msg_id = arg[0]
        return "deliver keep-alive" if msg_id is None else \
            "deliver " + MESSAGES.get(msg_id, f"message {msg_id}")
    if name.endswith("SimMessageProtocol.messages_received"):
        return "deliver " + MESSAGES.get(arg[0][0], f"message {arg[0][0]}")
    return name


def kinds(call) -> list[str]:
    """What one event does (a delivery's first message names it); a heap
    entry carrying a batch of deliveries counts each of its calls."""
    if isinstance(call, simclock.SimCall):
        return [_kind(call.func, call.args[0] if call.args else None)]
    return [_kind(f, arg) for f, arg in call.calls]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--hosts-per-rack", type=int, default=40)
    ap.add_argument("--oversubscription", type=float, default=4.0)
    ap.add_argument("--piece-length", default="32M")
    ap.add_argument("--real-piece-length", default="32K")
    ap.add_argument("--numwant", type=int, default=10)
    ap.add_argument("--max-connections", type=int, default=20)
    ap.add_argument("--rate-quantum", type=float, default=0.02)
    ap.add_argument("--startup-max", type=float, default=2.0)
    ap.add_argument("--policy", default="rack")
    ap.add_argument("--no-far-turns-first", action="store_true")
    ap.add_argument("--link", default="messages", choices=("messages", "bytes"))
    ap.add_argument("--cprofile", type=int, default=0,
                    help="also print the N functions with the most own CPU (slower)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    cfg = FleetConfig(hosts=args.hosts, hosts_per_rack=args.hosts_per_rack,
                      oversubscription=args.oversubscription,
                      piece_length=parse_rate(args.piece_length),
                      real_piece_length=parse_rate(args.real_piece_length),
                      numwant=args.numwant, max_connections=args.max_connections,
                      rate_quantum=args.rate_quantum, startup_max=args.startup_max,
                      policy=args.policy, far_turns_first=not args.no_far_turns_first,
                      link=args.link)
    counts: collections.Counter = collections.Counter()
    simclock.SimClock.observer = lambda call: counts.update(kinds(call))
    profiler = cProfile.Profile() if args.cprofile else None
    cpu0 = time.process_time()
    try:
        if profiler is not None:
            profiler.enable()
        result = build_and_run(cfg)
    finally:
        if profiler is not None:
            profiler.disable()
        simclock.SimClock.observer = None
    cpu = time.process_time() - cpu0
    total = sum(counts.values())
    print(f"{args.hosts} hosts, {cfg.num_pieces} pieces of {cfg.piece_length // 2**20} MiB "
          f"({cfg.real_piece_length // 1024} KiB real), {args.policy}: "
          f"{result.ratio:.2f} × bound, {total} calls in {result.events} events, "
          f"{result.rate_solves} rate solves, "
          f"{cpu:.1f} CPU-s ({1e6 * cpu / max(1, total):.0f} µs per call"
          f"{', with cProfile' if profiler else ''}), {total / args.hosts:.0f} calls per host")
    print(f"{'calls':>10} {'share':>6}  kind")
    for name, n in counts.most_common(16):
        print(f"{n:10d} {100 * n / total:5.1f}%  {name}")
    top = ""
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.cprofile)
        top = out.getvalue()
        print(top)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json + ".tmp", "w") as f:
            json.dump({"config": result.config, "events": dict(counts), "cpu_s": cpu,
                       "time_over_bound": result.ratio, "cprofile": top}, f, indent=1)
        os.replace(args.json + ".tmp", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
