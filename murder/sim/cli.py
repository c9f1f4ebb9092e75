"""``murder simulate``: one simulated deploy (or a comparison of handout policies).

Prints one line per policy: time to the last host ÷ the Kumar–Ross bound,
completion percentiles, seeder upload ÷ payload, bytes across racks ÷
(payload × racks), simulator events and wall time; ``--json`` saves
everything (each host's completion time included), ``--png`` draws the
completion CDF when matplotlib is installed (the ``bench`` extra).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace

from twisted.python import usage

from murder.errors import ConfigError
from murder.metainfo import write_atomic


def _size(text: str) -> int:
    from murder.peer.tap import parse_rate

    return parse_rate(text)


def _bits(text: str) -> float:
    """``"10G"``, ``"40M"``, ``"1e9"``: bits per second, decimal prefixes (as NICs)."""
    raw = text.strip().upper().removesuffix("BIT/S").removesuffix("BPS")
    scale = {"K": 1e3, "M": 1e6, "G": 1e9}.get(raw[-1:], 1.0)
    value = float(raw[:-1] if scale != 1.0 else raw)
    if not value > 0:
        raise ValueError("a rate must be positive")
    return value * scale


def core_settings(text: str) -> tuple[tuple[str, object], ...]:
    """``"upload_slots=0,far_pieces=1"`` → SwarmConfig fields with values of their type."""
    from dataclasses import fields

    from murder.peer.config import SwarmConfig

    types = {f.name: type(getattr(SwarmConfig(), f.name)) for f in fields(SwarmConfig)}
    out = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or name not in types:
            raise ValueError(f"--core: {item!r} is not NAME=VALUE with NAME a SwarmConfig field")
        kind = types[name]
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"--core: {name} is true or false")
            out.append((name, value.lower() in ("true", "1")))
        else:
            out.append((name, kind(value)))
    return tuple(out)


class Options(usage.Options):
    synopsis = "murder simulate [options]"
    longdesc = ("Simulate a deploy of one payload to HOSTS hosts in racks, running the "
                "project's own swarm and tracker code on a virtual clock over a "
                "flow-level network model (see murder/sim/net.py).")
    optParameters = [
        ["hosts", "n", "100", "Receiving hosts (the seeder is extra, in rack 0)."],
        ["hosts-per-rack", None, "0", "Hosts per rack (0: one non-blocking switch)."],
        ["nic", None, "10G", "NIC rate each way, bits/s (e.g. 40M, 10G)."],
        ["oversubscription", None, "1", "Rack uplink = hosts-per-rack × NIC ÷ this."],
        ["payload", None, "1G", "Payload size in bytes (K/M/G = 2^10/2^20/2^30)."],
        ["piece-length", None, "16M", "Piece length of the simulated torrent."],
        ["real-piece-length", None, "64K",
         "Real bytes carried per piece (fidelity: a block counts piece-length ÷ this "
         "on the network; equal to --piece-length for full fidelity)."],
        ["startup", None, "0", "Per-host start-up delay: SECONDS, or MIN:MAX (uniform)."],
        ["rack-stagger", None, "0", "Rack r starts r × SECONDS later."],
        ["policy", None, "random",
         "Tracker handout, or a comma-separated list to compare: random, rack, "
         "rack-far10, rack-gw2, rack-noseed, rack-strict; NAME:nonear: peers ignore "
         "the tracker's near networks (handout only)."],
        ["numwant", None, "500", "Peers asked of the tracker per announce."],
        ["max-connections", None, "200", "Peer connections per host."],
        ["far-pieces", None, "2", "Pieces a peer fetches from other racks at once "
         "(rack-aware policies: the tracker names each rack's networks)."],
        ["core", None, "", "Other swarm-core settings for every host, NAME=VALUE[,NAME=VALUE] "
         "(SwarmConfig fields, e.g. upload_slots=0,far_pieces=1): A/B a core knob."],
        ["seeders", None, "1", "Origin seeders."],
        ["hop-latency", None, "50e-6", "Seconds per network hop (2 in a rack, 4 across)."],
        ["goodput", None, str(1448 / 1514), "Payload share of the line rate (TCP, 1500 MTU)."],
        ["rate-quantum", None, "0",
         "Recompute fair shares at most every SECONDS (0: on every flow start/end)."],
        ["time-limit", None, "3600", "Virtual seconds before giving up."],
        ["seed", None, "1", "Random seed."],
        ["link", None, "messages",
         "How peers talk: messages (parsed message tuples, the fast default) or bytes "
         "(real peer-wire bytes through the production protocol)."],
        ["json", None, None, "Write the results as JSON to this file."],
        ["png", None, None, "Draw the completion CDF to this PNG (needs matplotlib)."],
    ]
    optFlags = [["progress", None, "Print a status line to stderr every 0.25 virtual s."],
                ["far-turns-first", None, "Uploaders give far requesters every other turn "
                 "first (rack-aware policies; the default)."],
                ["no-far-turns-first", None, "Uploaders serve far and near requesters in "
                 "arrival order."]]

    def postOptions(self) -> None:  # noqa: N802
        from murder.sim.fleet import FleetConfig
        from murder.tracker.topology import POLICIES

        try:
            startup = [float(x) for x in str(self["startup"]).split(":")]
            if len(startup) == 1:
                startup = startup * 2
            if len(startup) != 2 or not 0 <= startup[0] <= startup[1]:
                raise ValueError("--startup is SECONDS or MIN:MAX with MIN <= MAX")
            cfg = FleetConfig(
                hosts=int(self["hosts"]), hosts_per_rack=int(self["hosts-per-rack"]),
                nic_bps=_bits(self["nic"]), oversubscription=float(self["oversubscription"]),
                payload=_size(self["payload"]), piece_length=_size(self["piece-length"]),
                real_piece_length=_size(self["real-piece-length"]),
                startup_min=startup[0], startup_max=startup[1],
                rack_stagger=float(self["rack-stagger"]),
                numwant=int(self["numwant"]), max_connections=int(self["max-connections"]),
                far_pieces=int(self["far-pieces"]),
                far_turns_first=not self["no-far-turns-first"],
                seeders=int(self["seeders"]), hop_latency=float(self["hop-latency"]),
                goodput=float(self["goodput"]), rate_quantum=float(self["rate-quantum"]),
                time_limit=float(self["time-limit"]), seed=int(self["seed"]),
                link=str(self["link"]),
                core=core_settings(str(self["core"])))
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        checks = [
            (cfg.hosts >= 1, "--hosts must be at least 1"),
            (cfg.hosts_per_rack >= 0, "--hosts-per-rack cannot be negative"),
            (cfg.oversubscription >= 1, "--oversubscription must be >= 1"),
            (cfg.payload > 0, "--payload must be positive"),
            (cfg.real_piece_length >= 1 and cfg.real_piece_length & (cfg.real_piece_length - 1)
             == 0, "--real-piece-length must be a power of two"),
            (cfg.piece_length >= cfg.real_piece_length
             and cfg.piece_length % cfg.real_piece_length == 0,
             "--piece-length must be a multiple of --real-piece-length"),
            (cfg.num_pieces * cfg.real_piece_length <= 2**30,
             "too many real bytes: raise --piece-length or lower --real-piece-length"),
            (cfg.seeders >= 1 and cfg.numwant >= 1 and cfg.max_connections >= 1,
             "--seeders, --numwant and --max-connections must be at least 1"),
            (0 < cfg.goodput <= 1, "--goodput must be in (0, 1]"),
            (cfg.link in ("messages", "bytes"), "--link is messages or bytes"),
        ]
        for ok, message in checks:
            if not ok:
                raise usage.UsageError(message)
        policies = [p.strip() for p in str(self["policy"]).split(",") if p.strip()]
        for name in policies:
            name = name.removesuffix(":nonear")
            if name != "random" and name not in POLICIES:
                raise usage.UsageError(f"unknown --policy {name!r} (random, "
                                       f"{', '.join(POLICIES)})")
        if not policies:
            raise usage.UsageError("--policy names no policy")
        # NAME:nonear: the rack-aware list, but peers ignore the tracker's
        # near networks (the handout alone decides what crosses racks).
        self.configs = [replace(cfg, policy=name.removesuffix(":nonear"),
                                near=not name.endswith(":nonear")) for name in policies]


HEADER = (f"{'policy':12} {'hosts':>6} {'racks':>5} {'time s':>8} {'bound s':>8} {'÷bound':>7} "
          f"{'p50 s':>7} {'p90 s':>7} {'seed up÷F':>9} {'xrack÷F·R':>9} {'events':>10} "
          f"{'wall s':>7} {'CPU s':>7} {'rack max s':>10}")


def summary_line(result) -> str:
    cfg = result.config
    times = result.completion_times

    def pct(q: float) -> str:
        return f"{times[min(len(times) - 1, int(q * len(times)))]:7.2f}" if times else "      -"

    last = f"{result.time_to_last:8.2f}" if result.time_to_last is not None else \
        f"{'DNF':>8}"
    ratio = f"{result.ratio:7.2f}" if result.ratio is not None else f"{'-':>7}"
    xr = f"{result.cross_rack_ratio:9.2f}" if result.cross_rack_ratio is not None else \
        f"{'-':>9}"
    racks = -(-cfg["hosts"] // cfg["hosts_per_rack"]) if cfg["hosts_per_rack"] else 1
    span = f"{max(result.rack_duration):10.2f}" if result.rack_duration else f"{'-':>10}"
    name = cfg["policy"] + ("" if cfg.get("near", True) or cfg["policy"] == "random"
                            else ":nonear")
    return (f"{name:12} {result.hosts:6d} {racks:5d} {last} {result.bound:8.3f} "
            f"{ratio} {pct(0.5)} {pct(0.9)} {result.seeder_upload_ratio:9.2f} {xr} "
            f"{result.events:10d} {result.wall_s:7.1f} {result.cpu_s:7.1f} {span}")


def draw_png(results, path: str) -> None:
    """Completion CDF per policy, the bound dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        t = r.completion_times
        ax.step(t, [(i + 1) / r.hosts for i in range(len(t))], where="post",
                label=f"{r.config['policy']} ({r.ratio:.2f}× bound)" if r.ratio else
                r.config["policy"])
    ax.axvline(results[0].bound, linestyle="--", color="grey", label="Kumar–Ross bound")
    cfg = results[0].config
    ax.set_title(f"{cfg['hosts']} hosts, {cfg['payload'] / 2**20:.0f} MiB, "
                 f"{cfg['nic_bps'] / 1e6:.0f} Mbit/s NICs")
    ax.set_xlabel("seconds")
    ax.set_ylabel("hosts complete (fraction)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def main(command: str, args: list[str]) -> int:
    """Entry point of ``murder simulate``; returns the exit status."""
    options = Options()
    options.parseOptions(args)
    from murder.sim.fleet import build_and_run

    results = []
    print(HEADER)
    for cfg in options.configs:
        try:
            result = build_and_run(cfg, progress=(lambda line: print(line, file=sys.stderr,
                                                                    flush=True))
                                   if options["progress"] else None)
        except ConfigError:
            raise
        results.append(result)
        print(summary_line(result), flush=True)
    if options["json"]:
        doc = {"results": [r.to_json() for r in results]}
        write_atomic(options["json"], json.dumps(doc, indent=1).encode())
    if options["png"]:
        try:
            draw_png(results, options["png"])
        except ImportError:
            print("murder simulate: matplotlib is not installed; no PNG "
                  "(pip install matplotlib, the bench extra)", file=sys.stderr)
    return 0 if all(r.time_to_last is not None for r in results) else 1
