#!/usr/bin/env python3
"""Rack benchmark: random vs rack-aware peer handout with real processes, racks of hosts.

``real``: every run builds a fresh `netns.RackTopology` — racks of hosts on
per-rack bridges, joined by a spine over uplinks shaped to hosts_per_rack ×
rate ÷ oversubscription each way — and deploys one payload with our tracker,
``murder seed`` (rack 0) and one ``murder peer`` per host, exactly as
bench/swarm.py's ``murder`` method does (same launch gate, sha256-checked
completion).  Policies alternate within each repeat, so they share the
machine's load: ``random`` (``murder tracker``) and ``rack`` (``murder
tracker --topology FILE``, the file `RackTopology.write_topology` wrote).

``sim``: the same setting in the simulator (``murder simulate``'s
`build_and_run`, in this process at ``nice 19``; virtual time, so it needs
neither root nor the bench lock).  ``rack:nonear``: peers ignore the
tracker's near networks (the handout alone).

``compare``: the two side by side.

    flock /tmp/bench.lock .venv/bin/python bench/racks.py real --repeat 3 \\
        --json bench/results/racks-real.json
    .venv/bin/python bench/racks.py sim --json bench/results/racks-sim.json
    .venv/bin/python bench/racks.py compare bench/results/racks-real.json \\
        bench/results/racks-sim.json

Figures per run: time to the last host; the plain Kumar–Ross bound (ignores
racks); a rack-aware lower bound (below); seeder upload ÷ F (frames with
headers, as swarm.py); bytes that crossed rack uplinks ÷ (F × racks), from
the rack-side uplink veth's tx counter (frames with headers, after the
shaper; the spine side's counter is saved too); the slowest rack; qdisc
drops; CPU saturation.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import swarm  # noqa: E402  (bench/swarm.py: payload, Context, MurderMethod, monitor)
from gate import Gate, Proc, is_parked, stop_all  # noqa: E402
from netns import (Interrupted, RackTopology, cleanup_stale, install_signal_handlers,  # noqa: E402
                   list_namespaces, netns_available, verify_racks)

POLICIES = ("random", "rack")


# ------------------------------------------------------------------ bounds
def bounds(size: int, n: int, racks: int, rate_bytes: float, uplink_bytes: float) -> dict:
    """Lower bounds on the time to the last host, and one non-bound reference.

    ``plain``: Kumar–Ross, max(F/u_s, F/d, N·F/(u_s + Σu)) — ignores racks.
    ``rack``: plain, and each cut the uplinks impose: every rack without the
    seeder must take in at least F over its downlink (F/D), and the seeder's
    rack must send F out over its uplink (F/U).  A lower bound for any
    schedule; it exceeds the plain one only when F/D > F/u, i.e. when the
    uplink is slower than one host.
    ``uniform_sourcing``: not a bound — the time if every host drew its bytes
    evenly from all others (a rack-blind swarm): each rack then takes in
    hosts_per_rack × F × (R−1)/R over its downlink.
    """
    plain = swarm.kumar_ross_bound(size, rate_bytes, rate_bytes, [rate_bytes] * n)
    rack = max(plain, size / uplink_bytes) if racks > 1 else plain
    hpr = n // racks
    uniform = max(plain, hpr * size * (racks - 1) / racks / uplink_bytes) if racks > 1 else plain
    return {"plain_s": plain, "rack_s": rack, "uniform_sourcing_s": uniform}


# ------------------------------------------------------------------ real runs
def _listening_times(logdir: str, receivers: list, t0_wall: float) -> list[float | None]:
    """Seconds from the gate to each peer's '… on port N' start-up log line (None: not seen).

    The peer's log lines start with the local time of day to the millisecond
    (``12:47:02.191 murder peer: …``); read after the run, so the run itself
    pays nothing.  Used to choose the simulator's start-up delay.
    """
    lt = time.localtime(t0_wall)
    base = lt.tm_hour * 3600 + lt.tm_min * 60 + lt.tm_sec + (t0_wall % 1.0)
    out: list[float | None] = []
    for r in receivers:
        found = None
        try:
            with open(os.path.join(logdir, f"peer-{r.host.index}.log"), errors="replace") as f:
                found = next((line for line in f if " on port " in line), None)
        except OSError:
            pass
        try:
            h, m, sec = found.split(" ", 1)[0].split(":")  # type: ignore[union-attr]
            delta = (int(h) * 3600 + int(m) * 60 + float(sec) - base) % 86400
            out.append(delta if delta < 43200 else None)
        except (AttributeError, ValueError):
            out.append(None)
    return out


def _mkdir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path


def run_one(policy: str, repeat: int, payload: swarm.Payload, args: argparse.Namespace,
            sampler: swarm.CpuSampler, root: str) -> dict:
    """One policy on a fresh rack topology; returns the run's record."""
    n = args.racks * args.hosts_per_rack
    size = payload.size
    topo = RackTopology(n_peers=n, rate_mbit=args.rate_mbit, racks=args.racks,
                        oversubscription=args.oversubscription, queue_ms=args.queue_ms)
    b = bounds(size, n, args.racks, topo.rate_bytes, topo.uplink_bytes_per_s)
    rec: dict = {"policy": policy, "n": n, "racks": args.racks,
                 "hosts_per_rack": args.hosts_per_rack, "size_bytes": size,
                 "rate_mbit": args.rate_mbit, "oversubscription": args.oversubscription,
                 "uplink_mbit": topo.uplink_mbit, "repeat": repeat, "status": "ok",
                 "bound_s": b["plain_s"], **{f"bound_{k}": v for k, v in b.items()}}
    workdir = tempfile.mkdtemp(prefix=f"{policy}-r{repeat}-", dir=root)
    run_timeout = args.run_timeout or max(90.0, 4.0 * b["uniform_sourcing_s"] + 60.0)
    receivers: list[swarm.Receiver] = []
    with topo:
        base, peer_extra = args.variants.get(policy, (policy, []))
        tracker_extra = list(args.tracker_args) + args.variant_trackers.get(policy, [])
        if base == "rack":
            tracker_extra += ["--topology", topo.write_topology(
                os.path.join(workdir, "racks.topology"))]
        rec["base_policy"] = base
        rec["peer_args"] = list(args.murder_peer_args) + peer_extra
        rec["tracker_args"] = tracker_extra
        command = args.variant_commands.get(policy, swarm.MURDER)
        rec["command"] = command
        method = swarm.MurderMethod(policy, extra=peer_extra, tracker_extra=tracker_extra,
                                    command=command)
        stagger = args.variant_staggers.get(policy, 0.0)
        rec["rack_stagger_s"] = stagger
        ctx = swarm.Context(topo, payload, workdir, args)
        # One launch gate per rack (rack 0's is the context's own): with a
        # stagger, rack r's peers start r × stagger after rack 0's.
        gates = [ctx.gate] + [Gate(_mkdir(os.path.join(workdir, f"gate-rack{r}")))
                              for r in range(1, args.racks)]
        timers: list[threading.Timer] = []
        try:
            method.start_infra(ctx)
            for host in topo.peers:
                dest = os.path.join(workdir, f"dest-{host.index}")
                os.makedirs(dest)
                argv, env, r = method.receiver(ctx, host, dest)
                r.expected_size = size
                gate = gates[host.rack]
                r.proc = Proc.spawn(f"peer@{host.addr}", "peer", topo.argv(host, gate.wrap(argv)),
                                    log_path=os.path.join(ctx.logdir, f"peer-{host.index}.log"),
                                    env=dict(os.environ, **env), stdin=gate.stdin,
                                    cwd=workdir)
                receivers.append(r)
            ctx.wait_until("receivers parked at the gate",
                           lambda: all(is_parked(r.proc.pid, gates[r.host.rack])
                                       for r in receivers),
                           60, [r.proc for r in receivers])
            for p in ctx.infra + [r.proc for r in receivers]:
                p.snapshot_gate()
            tx0 = topo.link_bytes(topo.seeder)["tx_bytes"]
            up0 = topo.uplink_bytes()
            t0_wall = time.time()
            if stagger:
                timers = [threading.Timer(r * stagger, gates[r].open) for r in range(1, args.racks)]
                t0 = ctx.gate.open()
                for t in timers:
                    t.start()
            else:
                t0 = ctx.gate.open()
                for g in gates[1:]:
                    g.open()
            swarm.monitor(receivers, payload, t0 + run_timeout + args.racks * stagger)
            t_end = max((r.t_done for r in receivers if r.t_done), default=time.monotonic())
            tx1 = topo.link_bytes(topo.seeder)["tx_bytes"]
            up1 = topo.uplink_bytes()
            method.after_run(ctx, rec, time.monotonic() - t0)
            rec["qdisc_drops"] = topo.qdisc_drops()
        except Exception as e:  # noqa: BLE001 - a failed run is a result, not a crash
            rec.update(status="failed", reason=f"{type(e).__name__}: {e}")
            t0 = t_end = time.monotonic()
            t0_wall = time.time()
            tx0 = tx1 = 0
            up0 = up1 = [{"out": 0, "in": 0} for _ in range(args.racks)]
        finally:
            for t in timers:
                t.cancel()
                t.join(5)
            stop_all([r.proc for r in receivers if r.proc])
            stop_all(ctx.infra)
            for g in gates:
                g.close()
    failures = [f"{r.host.addr}: {r.failure}" for r in receivers if r.failure]
    if failures and rec["status"] == "ok":
        rec.update(status="failed", reason="; ".join(failures[:4]))
    xout = [a["out"] - b_["out"] for a, b_ in zip(up1, up0)]
    xin = [a["in"] - b_["in"] for a, b_ in zip(up1, up0)]
    per_rack: dict[int, float] = {}
    for r in receivers:
        if r.t_done:
            per_rack[r.host.rack] = max(per_rack.get(r.host.rack, 0.0), r.t_done - t0)
    listening = _listening_times(ctx.logdir, receivers, t0_wall)
    seen = [x for x in listening if x is not None]
    peers_cpu = sum(r.proc.cpu_after_gate or 0.0 for r in receivers if r.proc)
    rec.update({
        "time_s": (t_end - t0) if rec["status"] == "ok" else None,
        "receivers": [{"addr": r.host.addr, "rack": r.host.rack,
                       "t_s": (r.t_done - t0) if r.t_done else None, "failure": r.failure,
                       "cpu_s": r.proc.cpu_after_gate if r.proc else None,
                       "listening_s": listening[i]}
                      for i, r in enumerate(receivers)],
        "rack_last_s": [per_rack.get(k) for k in range(args.racks)],
        # Each rack's last completion from its own start (gate r opened at r × stagger).
        "rack_duration_s": [None if per_rack.get(k) is None else per_rack[k] - k * stagger
                            for k in range(args.racks)],
        "seeder_upload_bytes": tx1 - tx0,
        "seeder_upload_ratio": (tx1 - tx0) / size,
        "uplink_out_bytes": xout,
        "uplink_in_bytes": xin,
        "cross_rack_ratio": sum(xout) / (size * args.racks),
        "cross_rack_in_ratio": sum(xin) / (size * args.racks),
        "startup_s_max": max(seen) if seen else None,
        "peers_cpu_s": peers_cpu,
        "cpu_saturation": sampler.saturation(t0, t_end),
    })
    if rec["time_s"] is not None:
        rec["ratio"] = rec["time_s"] / b["plain_s"]
        rec["ratio_rack"] = rec["time_s"] / b["rack_s"]
    if rec["status"] == "failed":
        kept = os.path.join(args.failed_logs, os.path.basename(workdir))
        shutil.copytree(ctx.logdir, kept, dirs_exist_ok=True)
        rec["logs"] = kept
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return rec


COLUMNS = ("policy", "run", "time s", "plain s", "÷plain", "rack LB s", "÷rackLB",
           "seed up÷F", "xrack÷F·R", "slowest rack s", "drops", "CPU sat %")
#: "slowest rack s": the longest time any rack took from its own start to its
#: last host (= the rack's last completion when racks start together).


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def row(rec: dict) -> list[str]:
    run = str(rec["repeat"])
    if rec["status"] != "ok":
        return [rec["policy"], run, rec["status"].upper()] + [""] * (len(COLUMNS) - 3)
    return [rec["policy"], run, _f(rec["time_s"], ".2f"), _f(rec["bound_plain_s"], ".2f"),
            _f(rec.get("ratio"), ".2f"), _f(rec["bound_rack_s"], ".2f"),
            _f(rec.get("ratio_rack"), ".2f"), _f(rec["seeder_upload_ratio"], ".2f"),
            _f(rec["cross_rack_ratio"], ".2f"),
            _f(max((x for x in rec.get("rack_duration_s", rec["rack_last_s"]) if x is not None),
                   default=None), ".2f"),
            str(rec.get("qdisc_drops", "-")),
            _f(None if rec.get("cpu_saturation") is None else 100 * rec["cpu_saturation"], ".0f")]


def table(records: list[dict], header: bool = True) -> str:
    rows = ([list(COLUMNS)] if header else []) + [row(r) for r in records]
    widths = [max([len(COLUMNS[i]), 8] + [len(r[i]) for r in rows]) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(r, widths))) for r in rows]
    lines += [f"  {r['policy']} #{r['repeat']}: {r['status']}: {r.get('reason')}"
              + (f" [logs kept in {r['logs']}]" if r.get("logs") else "")
              for r in records if r["status"] != "ok"]
    return "\n".join(lines)


def summarize(records: list[dict]) -> list[dict]:
    """Median over repeats per policy of the ok runs."""
    out = []
    for policy in dict.fromkeys(r["policy"] for r in records):
        rs = [r for r in records if r["policy"] == policy]
        ok = [r for r in rs if r["status"] == "ok"]
        if not ok:
            out.append(dict(rs[0], repeat="all"))
            continue
        med = {k: ok[0].get(k) for k in (
            "policy", "base_policy", "rack_stagger_s", "n", "racks", "hosts_per_rack",
            "size_bytes", "rate_mbit", "oversubscription", "uplink_mbit", "bound_s",
            "bound_plain_s", "bound_rack_s", "bound_uniform_sourcing_s")}
        med.update(repeat="median", status="ok", runs=len(rs), ok_runs=len(ok))
        for key in ("time_s", "ratio", "ratio_rack", "seeder_upload_ratio", "cross_rack_ratio",
                    "cross_rack_in_ratio", "qdisc_drops", "cpu_saturation", "startup_s_max",
                    "peers_cpu_s"):
            vals = [r[key] for r in ok if r.get(key) is not None]
            med[key] = statistics.median(vals) if vals else None
        for key in ("rack_last_s", "rack_duration_s"):
            med[key] = [statistics.median(v) if v else None for v in
                        ([r[key][k] for r in ok if r.get(key) and r[key][k] is not None]
                         for k in range(ok[0]["racks"]))]
        out.append(med)
    return out


def speedups(summary: list[dict], records: list[dict]) -> list[str]:
    """Time of a random-handout policy ÷ time of a rack one: of the medians, and per repeat.

    Each rack policy P is paired with the random one named like P with "rack"
    replaced by "random" (``rack-nw8`` with ``random-nw8``), dropping trailing
    ``-word`` parts until one exists (``rack-nw8-nonear`` with ``random-nw8``).
    """
    med = {s["policy"]: s for s in summary if s.get("time_s")}
    lines = []
    for policy, s in med.items():
        if s.get("base_policy", policy) == "random" or policy.startswith("random"):
            continue
        other = policy.replace("rack", "random", 1)
        while other not in med and "-" in other:
            other = other.rsplit("-", 1)[0]  # random-nw8-nonear → random-nw8
        if other not in med or other == policy:
            continue
        pairs = []
        for rep in sorted({r["repeat"] for r in records}):
            a = [r["time_s"] for r in records if r["repeat"] == rep and r["policy"] == other
                 and r.get("time_s")]
            b = [r["time_s"] for r in records if r["repeat"] == rep and r["policy"] == policy
                 and r.get("time_s")]
            if a and b:
                pairs.append(a[0] / b[0])
        lines.append(f"{other} ÷ {policy}: {med[other]['time_s'] / s['time_s']:.2f}× "
                     f"(medians); per repeat: {', '.join(f'{x:.2f}' for x in pairs)}")
    return lines


def stagger_lines(summary: list[dict]) -> list[str]:
    """Staggered policy P: its slowest rack (from that rack's own start) ÷ the time of
    the all-at-once policy named like P without its trailing ``-word`` parts
    (``rack-st2`` ÷ ``rack``); the issue's target is ≤ 1.2."""
    med = {s["policy"]: s for s in summary if s.get("time_s")}
    lines = []
    for policy, s in med.items():
        if not s.get("rack_stagger_s"):
            continue
        other = policy
        while "-" in other:
            other = other.rsplit("-", 1)[0]
            if other in med and not med[other].get("rack_stagger_s"):
                break
        if other not in med or med[other].get("rack_stagger_s"):
            continue
        slowest = max(x for x in s["rack_duration_s"] if x is not None)
        lines.append(f"{policy} (racks {s['rack_stagger_s']:g} s apart): slowest rack "
                     f"{slowest:.2f} s from its own start = {slowest / med[other]['time_s']:.2f}× "
                     f"{other}'s all-at-once {med[other]['time_s']:.2f} s (medians); last host at "
                     f"{s['time_s']:.2f} s after rack 0's start")
    return lines


def cmd_real(args: argparse.Namespace) -> int:
    reason = netns_available()
    if reason:
        print(f"racks.py: {reason}; run as root on a kernel with network namespaces",
              file=sys.stderr)
        return 2
    if args.hosts_per_rack < 1 or args.racks < 2:
        print("racks.py: need at least 2 racks of at least 1 host", file=sys.stderr)
        return 2
    install_signal_handlers(args.timeout)
    import murder
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.dirname(murder.__file__)],
                   stdout=subprocess.DEVNULL, check=False)
    stale = cleanup_stale()
    if stale:
        print(f"removed stale namespaces of dead runs: {' '.join(stale)}")
    base = args.workdir or ("/dev/shm" if os.path.isdir("/dev/shm") else None)
    root = tempfile.mkdtemp(prefix=f"mzr{os.getpid()}-", dir=base)
    args.root = root
    n = args.racks * args.hosts_per_rack
    report: dict = {"config": {k: v for k, v in vars(args).items() if k != "func"},
                    "host": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()},
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    records: list[dict] = []
    sampler = swarm.CpuSampler().start()
    status = 0
    try:
        if args.verify_shaping:
            check = verify_racks(args.rate_mbit, args.oversubscription)
            report["shaping_check"] = check
            print(f"shaping check (2 racks × 2 hosts, {check['configured_mbit']:g} Mbit/s hosts, "
                  f"{check['uplink_mbit']:g} Mbit/s uplinks): in-rack stream "
                  f"{check['in_rack']:.1f}, cross-rack stream {check['cross_rack']:.1f} Mbit/s "
                  f"(goodput)")
        payload = swarm.make_payload(os.path.join(root, "src"), int(args.size_mib * 2**20))
        uplink = args.hosts_per_rack * args.rate_mbit / args.oversubscription
        print(f"{args.racks} racks × {args.hosts_per_rack} hosts (N={n}) at {args.rate_mbit:g} "
              f"Mbit/s, uplinks {uplink:g} Mbit/s ({args.oversubscription:g}:1), "
              f"{payload.size / 2**20:g} MiB, piece length {args.piece_length}; "
              f"tracker args {args.tracker_args}, peer args {args.murder_peer_args}")
        print(table([]), flush=True)
        for repeat in range(args.repeat):
            for policy in args.policies:
                rec = run_one(policy, repeat, payload, args, sampler, root)
                records.append(rec)
                print(table([rec], header=False), flush=True)
    except (KeyboardInterrupt, Interrupted) as e:
        print(f"racks.py: interrupted ({e or 'SIGINT'}); tearing down", file=sys.stderr)
        status = 130
    except Exception as e:  # noqa: BLE001 - report what we have, then fail
        print(f"racks.py: {type(e).__name__}: {e}; stopping", file=sys.stderr)
        report["error"] = f"{type(e).__name__}: {e}"
        status = 1
    finally:
        signal.alarm(0)
        sampler.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    summary = summarize(records)
    if records:
        b = records[0]
        print(f"\nbounds: plain Kumar–Ross {b['bound_plain_s']:.2f} s (ignores racks); "
              f"rack-aware lower bound {b['bound_rack_s']:.2f} s (also F ÷ uplink "
              f"= {b['size_bytes'] / (b['uplink_mbit'] * 1e6 / 8):.2f} s); "
              f"uniform sourcing (not a bound: every host draws evenly from all others) "
              f"{b['bound_uniform_sourcing_s']:.2f} s")
    print("\nmedians over repeats:")
    print(table(summary))
    for line in speedups(summary, records) + stagger_lines(summary):
        print(line)
    report.update(records=records, summary=summary, loadavg_end=os.getloadavg(),
                  finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    if args.json:
        _write_json(args.json, report)
        print(f"wrote {args.json}")
    left = [ns for ns in list_namespaces() if ns.startswith(f"mzb{os.getpid()}x")]
    if left:
        print(f"WARNING: namespaces left behind: {left}", file=sys.stderr)
        status = status or 1
    if any(r["status"] == "failed" for r in records):
        status = status or 1
    return status


def _write_json(path: str, doc: dict) -> None:
    """Write ``doc`` to ``path`` via a temp file renamed over it (nothing half-written)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, default=str)
    os.replace(tmp, path)


# ------------------------------------------------------------------ simulator
def measured_startup(path: str) -> str:
    """``MIN:MAX`` start-up delay for the simulator from a ``real`` run's JSON.

    Per ok run, the first and the last peer's gate → listening time (peer log
    lines); the medians of those over the runs.  The simulator draws each
    host's start uniformly in [MIN, MAX].
    """
    with open(path) as f:
        real = json.load(f)
    lo, hi = [], []
    for r in real["records"]:
        seen = [x["listening_s"] for x in r["receivers"] if x.get("listening_s") is not None]
        if r["status"] == "ok" and seen:
            lo.append(min(seen))
            hi.append(max(seen))
    if not lo:
        raise SystemExit(f"racks.py: {path} has no start-up times")
    return f"{statistics.median(lo):.2f}:{statistics.median(hi):.2f}"


def sim_config(args: argparse.Namespace, policy: str, seed: int):
    """The `FleetConfig` for the same setting as ``real`` (full fidelity: every byte real)."""
    from murder.sim.cli import core_settings
    from murder.sim.fleet import FleetConfig

    lo, _, hi = args.startup.partition(":")
    near = {"near": False} if policy.endswith(":nonear") else {}
    return FleetConfig(**near,
        hosts=args.racks * args.hosts_per_rack, hosts_per_rack=args.hosts_per_rack,
        nic_bps=args.rate_mbit * 1e6, oversubscription=args.oversubscription,
        payload=int(args.size_mib * 2**20), piece_length=args.piece_length,
        real_piece_length=args.piece_length, startup_min=float(lo),
        startup_max=float(hi or lo), policy=policy.removesuffix(":nonear"), numwant=args.numwant,
        max_connections=args.max_connections, seed=seed, rack_stagger=args.rack_stagger,
        cpu_cores=args.cpu_cores if args.cpu_s_per_gib else 0.0,
        cpu_s_per_gib=args.cpu_s_per_gib,
        core=core_settings(args.core))


def cmd_sim(args: argparse.Namespace) -> int:
    """Run the simulator in this process (``nice 19``: it does not need the bench lock)."""
    from murder.sim.cli import HEADER, summary_line
    from murder.sim.fleet import build_and_run

    os.nice(19)
    if args.startup_from:
        args.startup = measured_startup(args.startup_from)
        print(f"start-up delay from {args.startup_from}: uniform in {args.startup} s")
    cpu = (f", shared CPU {args.cpu_cores:g} cores × {args.cpu_s_per_gib:g} CPU-s/GiB"
           if args.cpu_s_per_gib else "")
    print(f"simulated: {args.racks} racks × {args.hosts_per_rack} at {args.rate_mbit:g} Mbit/s, "
          f"{args.oversubscription:g}:1, {args.size_mib:g} MiB, pieces {args.piece_length}, "
          f"numwant {args.numwant}, start-up {args.startup} s, racks {args.rack_stagger:g} s "
          f"apart{cpu}; seeds {args.seeds}")
    print("seed " + HEADER, flush=True)
    results = []
    for seed in args.seeds:
        for policy in args.policies:
            r = build_and_run(sim_config(args, policy, seed))
            print(f"{seed:4d} " + summary_line(r), flush=True)
            doc = r.to_json()
            doc["seed"] = seed
            doc["name"] = policy
            results.append(doc)
    _write_json(args.json, {"startup": args.startup, "startup_from": args.startup_from,
                            "seeds": args.seeds, "results": results})
    print(f"wrote {args.json}")
    return 0


# ------------------------------------------------------------------ compare
def cmd_compare(args: argparse.Namespace) -> int:
    with open(args.real) as f:
        real = json.load(f)
    with open(args.sim) as f:
        sim = json.load(f)
    w = max([10] + [len(x["policy"]) for x in real["summary"]])
    print(f"{'policy':{w}} {'sim policy':12} {'real s':>7} {'real ÷plain':>11} {'sim s':>7} {'sim ÷plain':>10} "
          f"{'sim/real':>8}  {'real xrack':>10} {'sim xrack':>9}  {'real seed':>9} "
          f"{'sim seed':>8}")
    rows = []
    pairs = dict(p.split("=", 1) for p in args.pair)
    for s in real["summary"]:
        if not s.get("time_s") or (args.pair and s["policy"] not in pairs):
            continue
        sim_policy = pairs.get(s["policy"], s["policy"])
        sims = [r for r in sim["results"] if r.get("name", r["config"]["policy"]) == sim_policy]
        t = [r["time_to_last"] for r in sims if r.get("time_to_last") is not None]
        if not t:
            continue
        st = statistics.median(t)
        xr = statistics.median(r["cross_rack_ratio"] for r in sims)
        su = statistics.median(r["seeder_upload_ratio"] for r in sims)
        ratio = st / s["time_s"]
        rows.append({"policy": s["policy"], "sim_policy": sim_policy, "real_s": s["time_s"], "sim_s": st,
                     "sim_over_real": ratio, "real_xrack": s["cross_rack_ratio"],
                     "sim_xrack": xr, "within_15pct": abs(ratio - 1) <= 0.15})
        print(f"{s['policy']:{w}} {sim_policy:12} {s['time_s']:7.2f} {s['ratio']:11.2f} {st:7.2f} "
              f"{st / s['bound_plain_s']:10.2f} {ratio:8.2f}  {s['cross_rack_ratio']:10.2f} "
              f"{xr:9.2f}  {s['seeder_upload_ratio']:9.2f} {su:8.2f}")
    med = {r["sim_policy"]: r for r in rows}
    if "random" in med and "rack" in med:
        a, b = med["random"], med["rack"]
        print(f"{a['policy']} ÷ {b['policy']}: real {a['real_s'] / b['real_s']:.2f}×, "
              f"sim {a['sim_s'] / b['sim_s']:.2f}×")
    if args.json:
        _write_json(args.json, {"real": args.real, "sim": args.sim, "rows": rows})
        print(f"wrote {args.json}")
    return 0


# ---------------------------------------------------------------------- cli
def _setting(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--racks", type=int, default=4)
    ap.add_argument("--hosts-per-rack", type=int, default=8)
    ap.add_argument("--rate-mbit", type=float, default=40.0,
                    help="per-host rate each way, Mbit/s (default 40)")
    ap.add_argument("--oversubscription", type=float, default=4.0,
                    help="rack uplink = hosts-per-rack × rate ÷ this (default 4)")
    ap.add_argument("--size-mib", type=float, default=16.0)
    ap.add_argument("--piece-length", type=int, default=131072,
                    help="torrent piece length in bytes (default 128 KiB, as calibrated)")
    ap.add_argument("--policies", default=",".join(POLICIES),
                    type=lambda s: [p.strip() for p in s.split(",") if p.strip()],
                    help="random (plain tracker), rack (tracker --topology); sim also "
                         "rack:nonear (peers ignore the tracker's near networks)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    real = sub.add_parser("real", help="real processes on emulated racks (root)")
    _setting(real)
    real.add_argument("--repeat", type=int, default=3)
    real.add_argument("--json")
    real.add_argument("--tracker-arg", dest="tracker_args", action="append", default=[],
                      help="extra argument for `murder tracker` in every policy "
                           "(e.g. --tracker-arg=--numwant-max=8)")
    real.add_argument("--murder-seed-arg", dest="murder_seed_args", action="append", default=[])
    real.add_argument("--murder-peer-arg", dest="murder_peer_args", action="append", default=[])
    real.add_argument("--variant", action="append", default=[], metavar="NAME=BASE [ARGS]",
                      help="another policy NAME run side by side: BASE (random or rack) "
                           "plus extra `murder seed`/`murder peer` arguments (shell-quoted); "
                           "list NAME in --policies (repeatable)")
    real.add_argument("--variant-tracker", action="append", default=[], metavar="NAME=ARGS",
                      help="extra `murder tracker` arguments for --variant NAME, e.g. "
                           "'rack-nw8=--numwant-max=8 --numwant-default=8' (repeatable)")
    real.add_argument("--variant-stagger", action="append", default=[], metavar="NAME=S",
                      help="--variant NAME's racks start S seconds apart (rack r's peers "
                           "r × S after rack 0's; time still counted from rack 0's start) "
                           "(repeatable)")
    real.add_argument("--variant-command", action="append", default=[], metavar="NAME=PATH",
                      help="run --variant NAME's seeder and peers with this `murder` "
                           "executable (e.g. a wrapper running an older checkout); the "
                           "tracker stays ours (repeatable)")
    real.add_argument("--queue-ms", type=float, default=100.0)
    real.add_argument("--run-timeout", type=float, default=None)
    real.add_argument("--setup-timeout", type=float, default=60.0)
    real.add_argument("--timeout", type=float, default=570.0,
                      help="global timeout, s; everything is torn down (default 570)")
    real.add_argument("--no-verify-shaping", dest="verify_shaping", action="store_false")
    real.add_argument("--workdir", default=None)
    real.add_argument("--keep", action="store_true")
    real.add_argument("--failed-logs", default="/tmp/mzb-failed-logs")
    real.set_defaults(func=cmd_real)
    sim = sub.add_parser("sim", help="the same setting in `murder simulate` (nice 19)")
    _setting(sim)
    sim.add_argument("--startup", default="1.7:3.4",
                     help="per-host start-up delay for the simulator, MIN:MAX s "
                          "(default 1.7:3.4, bench/README's N=32 calibration)")
    sim.add_argument("--startup-from", default=None, metavar="REAL_JSON",
                     help="take --startup from a `real` run's measured start-up times "
                          "(median first and last peer listening after the gate)")
    sim.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[1])
    sim.add_argument("--numwant", type=int, default=500,
                     help="peers per tracker reply (the real runs' --numwant-max) (default 500)")
    sim.add_argument("--max-connections", type=int, default=200)
    sim.add_argument("--core", default="",
                     help="swarm-core settings for every host, NAME=VALUE[,NAME=VALUE] "
                          "(as `murder simulate --core`): A/B a core knob")
    sim.add_argument("--rack-stagger", type=float, default=0.0,
                     help="rack r starts r × this many seconds later (default 0)")
    sim.add_argument("--cpu-s-per-gib", type=float, default=0.0,
                     help="model the bench machine's shared CPU: CPU-s per GiB delivered "
                          "(0: off; FleetConfig.cpu_s_per_gib)")
    sim.add_argument("--cpu-cores", type=float, default=2.0)
    sim.add_argument("--json", required=True)
    sim.set_defaults(func=cmd_sim)
    cmp_ = sub.add_parser("compare", help="real vs simulated, side by side")
    cmp_.add_argument("real")
    cmp_.add_argument("sim")
    cmp_.add_argument("--pair", action="append", default=[], metavar="REAL=SIM",
                      help="compare the real policy/variant REAL with the simulated policy "
                           "SIM (repeatable; default: equal names)")
    cmp_.add_argument("--json")
    cmp_.set_defaults(func=cmd_compare)
    args = ap.parse_args(argv)
    args.variants, args.variant_trackers = {}, {}
    for spec in getattr(args, "variant", []):
        name, sep, rest = spec.partition("=")
        words = shlex.split(rest)
        if not sep or not words or words[0] not in POLICIES or name in POLICIES:
            ap.error(f"--variant {spec!r}: expected NAME=BASE [ARGS], BASE one of "
                     f"{', '.join(POLICIES)}")
        args.variants[name] = (words[0], words[1:])
    for spec in getattr(args, "variant_tracker", []):
        name, sep, rest = spec.partition("=")
        if not sep or name not in args.variants:
            ap.error(f"--variant-tracker {spec!r}: expected NAME=ARGS for a --variant NAME")
        args.variant_trackers[name] = shlex.split(rest)
    args.variant_staggers = {}
    for spec in getattr(args, "variant_stagger", []):
        name, sep, secs = spec.partition("=")
        try:
            value = float(secs)
        except ValueError:
            value = -1.0
        if not sep or name not in args.variants or value < 0:
            ap.error(f"--variant-stagger {spec!r}: expected NAME=SECONDS for a --variant NAME")
        args.variant_staggers[name] = value
    args.variant_commands = {}
    for spec in getattr(args, "variant_command", []):
        name, sep, path = spec.partition("=")
        if not sep or name not in args.variants or not os.access(path, os.X_OK):
            ap.error(f"--variant-command {spec!r}: expected NAME=PATH to an executable, "
                     f"for a --variant NAME")
        args.variant_commands[name] = path
    if args.cmd == "sim":
        bad = {p for p in args.policies if p.removesuffix(":nonear") not in POLICIES}
        if bad:
            ap.error(f"unknown policies: {', '.join(sorted(bad))} (known: {', '.join(POLICIES)})")
    elif args.cmd == "real":
        bad = set(args.policies) - set(POLICIES) - set(args.variants)
        if bad:
            ap.error(f"unknown policies: {', '.join(sorted(bad))} (known: {', '.join(POLICIES)})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
