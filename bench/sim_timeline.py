#!/usr/bin/env python3
"""Where a simulated deploy's time goes: a fleet-wide timeline of link use.

Runs one ``murder simulate`` configuration and samples the model every
``--step`` virtual seconds: how many hosts hold a piece, how busy the
upload links of those holders are (the Kumar–Ross bound assumes every
uplink works all the time), how busy the downloaders' links are, the
seeder's link, and for idle holders *why* they are idle (nobody asks them,
or requests are queued but not sent).  Then per-host milestones: first
piece, completion, the seeder's first pass (every piece left once).

    nice -n 10 .venv/bin/python bench/sim_timeline.py --hosts 1000 \\
        --json bench/results/sim-timeline-1000.json

Virtual time: the figures do not depend on machine load (no bench lock).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from murder.peer.tap import parse_rate  # noqa: E402
from murder.sim.fleet import FleetConfig, build_and_run  # noqa: E402


class Sampler:
    """Samples link use every ``step`` virtual seconds (a probe for build_and_run)."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.rows: list[dict[str, Any]] = []
        self.first_piece: dict[int, float] = {}
        self.seeder_first_pass: float | None = None

    def __call__(self, clock: Any, net: Any, hosts: list[Any]) -> None:
        self.clock, self.net, self.hosts = clock, net, hosts
        clock.callLater(self.step, self.sample)

    def sample(self) -> None:
        net, hosts = self.net, self.hosts
        now = self.clock.now
        up_rate: dict[int, float] = {}
        down_rate: dict[int, float] = {}
        down_flows: dict[int, int] = {}
        for p in net.active:
            up_rate[p.src] = up_rate.get(p.src, 0.0) + p.rate
            down_rate[p.dst] = down_rate.get(p.dst, 0.0) + p.rate
            down_flows[p.dst] = down_flows.get(p.dst, 0) + 1
        holders = idle_holders = idle_asked = idle_wanted = 0
        up_sum = down_sum = 0.0
        downloaders = complete = 0
        seeder_rate = 0.0
        for h in hosts:
            s = h.swarm
            if s is None:
                continue
            cap_up = net.cap[net.host_up[h.net_id]]
            cap_down = net.cap[net.host_down[h.net_id]]
            if s.have.count and h.index not in self.first_piece and not h.seeder:
                self.first_piece[h.index] = now
            if h.seeder:
                seeder_rate = up_rate.get(h.net_id, 0.0) / cap_up
                if self.seeder_first_pass is None and s.uploads.first_copy_at is not None:
                    self.seeder_first_pass = s.uploads.first_copy_at
            if s.have.count:
                holders += 1
                r = up_rate.get(h.net_id, 0.0)
                up_sum += min(1.0, r / cap_up)
                if r < 0.05 * cap_up:
                    idle_holders += 1
                    conns = s.connections.values()
                    if any(c.upload_queue for c in conns):
                        idle_asked += 1
                    elif any(c.peer_interested for c in conns):
                        idle_wanted += 1
            if h.completed_at is not None:
                complete += 1
            elif not h.seeder:
                downloaders += 1
                down_sum += min(1.0, down_rate.get(h.net_id, 0.0) / cap_down)
        flows = [down_flows[h.net_id] for h in hosts
                 if h.net_id in down_flows and h.completed_at is None and not h.seeder]
        self.rows.append(dict(
            t=now, complete=complete, holders=holders,
            up_util=up_sum / holders if holders else 0.0,
            down_util=down_sum / downloaders if downloaders else 0.0,
            seeder=seeder_rate, idle_holders=idle_holders, idle_asked=idle_asked,
            idle_wanted=idle_wanted, flows_per_dl=statistics.mean(flows) if flows else 0.0,
            fleet_up=sum(min(r, net.cap[net.host_up[i]]) for i, r in up_rate.items())
            / sum(net.cap[net.host_up[h.net_id]] for h in hosts)))
        if complete < sum(1 for h in hosts if not h.seeder):
            self.clock.callLater(self.step, self.sample)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--hosts-per-rack", type=int, default=40)
    ap.add_argument("--oversubscription", type=float, default=4.0)
    ap.add_argument("--nic", type=float, default=10e9, help="bits/s")
    ap.add_argument("--payload", default="1G")
    ap.add_argument("--piece-length", default="32M")
    ap.add_argument("--real-piece-length", default="32K")
    ap.add_argument("--numwant", type=int, default=10)
    ap.add_argument("--max-connections", type=int, default=20)
    ap.add_argument("--rate-quantum", type=float, default=0.02)
    ap.add_argument("--startup-max", type=float, default=0.0)
    ap.add_argument("--policy", default="rack")
    ap.add_argument("--step", type=float, default=0.05)
    ap.add_argument("--every", type=int, default=2, help="print every Nth sample")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    policy, near = args.policy, True
    if policy.endswith(":nonear"):
        policy, near = policy.removesuffix(":nonear"), False
    cfg = FleetConfig(hosts=args.hosts, hosts_per_rack=args.hosts_per_rack,
                      oversubscription=args.oversubscription, nic_bps=args.nic,
                      payload=parse_rate(args.payload),
                      piece_length=parse_rate(args.piece_length),
                      real_piece_length=parse_rate(args.real_piece_length),
                      numwant=args.numwant, max_connections=args.max_connections,
                      rate_quantum=args.rate_quantum, startup_max=args.startup_max,
                      policy=policy, near=near)
    sampler = Sampler(args.step)
    result = build_and_run(cfg, probe=sampler)
    print(f"{args.hosts} hosts, {cfg.num_pieces} pieces of {cfg.piece_length / 2**20:g} MiB, "
          f"{args.policy}: last {result.time_to_last:.3f} s = {result.ratio:.2f} × bound "
          f"({result.bound:.3f} s); seeder first pass "
          f"{sampler.seeder_first_pass or float('nan'):.3f} s")
    firsts = list(sampler.first_piece.values())
    done = result.completion_times
    print(f"first piece (±{args.step:g} s): p10 {pct(firsts, 0.1):.2f} p50 {pct(firsts, 0.5):.2f} "
          f"p90 {pct(firsts, 0.9):.2f} max {max(firsts):.2f}; complete: p10 {pct(done, 0.1):.2f} "
          f"p50 {pct(done, 0.5):.2f} p90 {pct(done, 0.9):.2f} max {max(done):.2f}")
    print("holders: hosts with ≥1 piece; up: mean uplink use of holders; fleet up: all "
          "uplinks' use; down: mean downlink use of incomplete hosts; idle: holders "
          "sending < 5 %, of which asked (requests queued) / wanted (interested, no requests)")
    print(f"{'t s':>6} {'done':>6} {'holders':>7} {'up %':>5} {'fleet up %':>10} {'down %':>6} "
          f"{'seed %':>6} {'idle':>5} {'asked':>5} {'wanted':>6} {'flows/dl':>8}")
    for k, r in enumerate(sampler.rows):
        if k % args.every and k != len(sampler.rows) - 1:
            continue
        print(f"{r['t']:6.2f} {r['complete']:6d} {r['holders']:7d} {100 * r['up_util']:5.0f} "
              f"{100 * r['fleet_up']:10.0f} {100 * r['down_util']:6.0f} "
              f"{100 * r['seeder']:6.0f} {r['idle_holders']:5d} {r['idle_asked']:5d} "
              f"{r['idle_wanted']:6d} {r['flows_per_dl']:8.2f}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json + ".tmp", "w") as f:
            json.dump({"result": result.to_json(), "rows": sampler.rows,
                       "first_piece": firsts, "seeder_first_pass": sampler.seeder_first_pass},
                      f, indent=1)
        os.replace(args.json + ".tmp", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
