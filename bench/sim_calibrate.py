#!/usr/bin/env python3
"""Calibration of ``murder simulate`` against bench/swarm.py's measured runs.

Same settings as the measured runs of bench/README.md (session 2): 16 MiB,
128 KiB pieces (full fidelity: every real byte is carried), one seeder and
N receivers on one non-blocking switch, N=4, 8, 16 at 40 Mbit/s and N=32 at
16 Mbit/s, TCP goodput 0.956 of the line rate.  Start-up delay: each host
starts at a uniform random time in [S/2, S]; S is what the bench measured
where it did (N=16: "gate open → all 16 peers listening: 2.3–2.6 s", so 2.45;
N=32: "~0.4 × T_min" = 3.4 s) and ~0.153 s per host (the N=16 figure ÷ 16)
where it did not (N=4, N=8).  Prints the simulated time ÷ bound (median over
seeds) next to the measured medians and saves JSON.

    flock /tmp/bench.lock .venv/bin/python bench/sim_calibrate.py \\
        --json bench/results/sim-calibration.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import replace

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from murder.sim.fleet import FleetConfig, build_and_run  # noqa: E402

#: (N, Mbit/s, start-up S in s, measured ÷bound median, measured single runs,
#: source line in bench/README.md, the receivers' measured CPU-s in that run)
MEASURED = [
    (4, 40, 0.61, 1.33, (1.33, 1.38, 1.31), "session 2, 40 Mbit/s, medians of 3", 2.3),
    (8, 40, 1.22, 1.67, (1.65, 1.79, 1.67), "session 2, 40 Mbit/s, medians of 3", 5.7),
    (16, 40, 2.45, 2.07, (2.34, 2.07, 2.01), "session 2, 40 Mbit/s, medians of 3", 11.7),
    (32, 16, 3.4, 2.38, (), "session 2, 16 Mbit/s, median of 2", 30.0),
]
#: Start-up CPU per peer process (bench/README.md: "16 × ~0.2–0.4 CPU-s on 2 cores").
STARTUP_CPU_S = 0.3
PAYLOAD_MIB = 16


def cpu_per_mib(n: int, cpu_s: float, startup: float = STARTUP_CPU_S) -> float:
    """CPU-s per MiB a peer sends or receives, from the run's measured CPU.

    Each receiver gets one payload and sends (N−1)/N of one on average (the
    seeder sends the other copy); what its CPU did beyond start-up is spread
    over those bytes.  HAVEs and requests (which grow with N) are folded in.
    """
    handled = PAYLOAD_MIB * (1 + (n - 1) / n)
    return (cpu_s / n - startup) / handled


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--n", default="4,8,16,32")
    ap.add_argument("--json", default=None)
    ap.add_argument("--startup-scale", type=float, default=1.0,
                    help="multiply every start-up delay (sensitivity check)")
    ap.add_argument("--cpu-s-per-gib", type=float, default=0.0,
                    help="model the bench machine's shared CPU: CPU-s per GiB delivered "
                         "(0: off)")
    ap.add_argument("--cpu-cores", type=float, default=2.0)
    ap.add_argument("--cpu-model", choices=("none", "shared", "process"), default=None,
                    help="process: every host a process on --cpu-cores cores, shared "
                         "fairly among busy processes, each row's CPU per MiB from its "
                         "measured CPU, start-up = 0.2-0.4 CPU-s per peer on those cores "
                         "(replaces the start-up delay); shared: one CPU link all flows "
                         "cross (--cpu-s-per-gib); default: shared if --cpu-s-per-gib")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    model = args.cpu_model or ("shared" if args.cpu_s_per_gib else "none")
    wanted = {int(n) for n in args.n.split(",")}
    rows, records = [], []
    print(f"cpu model: {model}")
    print(f"{'N':>3} {'Mbit':>5} {'start-up s':>10} {'sim ÷bound (seeds)':>26} {'sim med':>8} "
          f"{'measured':>8} {'sim/meas':>8} {'sim seed up÷F':>13} {'wall s':>7}"
          + (f" {'CPU-s/MiB':>9} {'last start s':>12}" if model == "process" else ""))
    for n, mbit, s_up, measured, singles, source, cpu_s in MEASURED:
        if n not in wanted:
            continue
        s_up *= args.startup_scale
        ratios, seed_up, walls, starts = [], [], [], []
        per_mib = cpu_per_mib(n, cpu_s)
        for seed in seeds:
            cfg = FleetConfig(hosts=n, nic_bps=mbit * 1e6, payload=PAYLOAD_MIB * 2**20,
                              piece_length=2**17, real_piece_length=2**17,
                              startup_min=s_up / 2, startup_max=s_up, seed=seed,
                              cpu_cores=args.cpu_cores if model != "none" else 0.0,
                              cpu_s_per_gib=args.cpu_s_per_gib if model == "shared" else 0.0)
            if model == "process":
                cfg = replace(cfg, cpu_s_per_mib=per_mib, startup_cpu_s=STARTUP_CPU_S,
                              startup_min=0.0, startup_max=0.0)
            r = build_and_run(cfg)
            starts.append(r.last_start)
            ratios.append(r.ratio)
            seed_up.append(r.seeder_upload_ratio)
            walls.append(r.wall_s)
            records.append(r.to_json())
        med = statistics.median(ratios)
        shown_up = f"{s_up:10.2f}" if model != "process" else f"{'(cpu)':>10}"
        print(f"{n:3d} {mbit:5d} {shown_up} {' '.join(f'{x:.2f}' for x in ratios):>26} "
              f"{med:8.2f} {measured:8.2f} {med / measured:8.2f} "
              f"{statistics.median(seed_up):13.2f} {sum(walls):7.1f}"
              + (f" {per_mib:9.4f} {statistics.median(starts):12.2f}" if model == "process"
                 else ""), flush=True)
        rows.append(dict(n=n, mbit=mbit, startup_s=s_up, sim=ratios, sim_median=med,
                         measured_median=measured, measured_runs=singles, source=source,
                         measured_cpu_s=cpu_s, cpu_s_per_mib=per_mib if model == "process"
                         else None, last_start=starts))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json + ".tmp", "w") as f:
            json.dump({"cpu_model": model, "cpu_s_per_gib": args.cpu_s_per_gib, "cpu_cores": args.cpu_cores,
                       "startup_scale": args.startup_scale, "rows": rows, "runs": records},
                      f, indent=1)
        os.replace(args.json + ".tmp", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
