#!/usr/bin/env python3
"""Loopback pair: one seeder -> one peer over 127.0.0.1, no shaping, 1 GiB.

What a datacenter host with a fast NIC sees: how many MB/s one peer takes in
and how much CPU the peer and the seeder burn per GiB, murder beside aria2 and
libtorrent in one run, all announcing to the same tracker (ours, on
127.0.0.1) with the same torrent (``murder make-torrent``'s automatic piece
length unless ``--piece-length``).  Needs no root and no namespaces.

Per method and repeat: start the seeder and wait until the tracker's scrape
lists it; start the peer (t0); the peer is done at its done signal (murder:
the payload at its final path with full size, moved there only once
verified; aria2: its --on-bt-download-complete hook; libtorrent: the marker
lt_client.py writes on torrent_finished_alert).  The harness then checks the
file's sha256 (outside the timed window).

Figures: ``MB/s`` = size / (done - t0) in 10^6 bytes/s, start-up included;
``swarm s`` / ``swarm MB/s`` (murder only) = the peer's own time from its
swarm start (imports done, torrent read, storage allocated, port open) to
the verified payload, from its log, so the start-up share is seen;
``peer CPU s/GiB`` = the peer's user+sys CPU (wait4 rusage, whole life)
÷ GiB; ``seeder CPU s/GiB`` = the seeder's CPU between t0 and done
(/proc/<pid>/stat) ÷ GiB.  ``busy %`` = the machine's mean busy share of
both cores in the window (other sessions share this machine).

    .venv/bin/python bench/loopback_pair.py --size-mib 1024 --repeat 3 \\
        --methods murder,aria2,libtorrent --json bench/results/loopback.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bencodepy  # noqa: E402

from gate import Proc, proc_cpu_seconds, stop_all  # noqa: E402
from swarm import (ARIA2_COMMON, MURDER, VENV_PYTHON, CpuSampler, make_payload,  # noqa: E402
                   sha256_file)

LOOP = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOP, 0))
        return s.getsockname()[1]


def scrape_complete(port: int, info_hash: bytes) -> int:
    url = (f"http://{LOOP}:{port}/scrape?info_hash="
           + urllib.parse.quote_from_bytes(info_hash, safe=""))
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            files = bencodepy.decode(r.read())[b"files"]
        return int(next(iter(files.values()))[b"complete"]) if files else 0
    except Exception:  # noqa: BLE001 - anything undecodable means "not yet"
        return 0


def wait_until(what: str, check, timeout: float, procs: list[Proc]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        for p in procs:
            if not p.running:
                raise RuntimeError(f"{what}: {p.name} exited with {p.status}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(0.02)


class Run:
    """One method's seeder and peer for one repeat."""

    def __init__(self, method: str, args: argparse.Namespace, torrent: str, info_hash: bytes,
                 payload_dir: str, name: str, size: int, tracker_port: int, work: str) -> None:
        self.method, self.args, self.torrent = method, args, torrent
        self.info_hash, self.payload_dir, self.name, self.size = info_hash, payload_dir, name, size
        self.tracker_port, self.work = tracker_port, work
        self.dest = os.path.join(work, "dest")
        os.makedirs(self.dest)
        self.marker = os.path.join(work, "done")

    def spawn(self, role: str, argv: list[str], env: dict | None = None) -> Proc:
        return Proc.spawn(f"{role}-{self.method}", role, argv,
                          log_path=os.path.join(self.work, f"{role}.log"),
                          env=dict(os.environ, **(env or {})), cwd=self.work)

    def seeder_argv(self) -> list[str]:
        m = self.method
        if m == "aria2":
            return ["aria2c", *ARIA2_COMMON, "--listen-port=6881", "--check-integrity=true",
                    f"--dir={self.payload_dir}", self.torrent]
        if m == "libtorrent":
            return [VENV_PYTHON, os.path.join(HERE, "lt_client.py"), "--seed", "--torrent",
                    self.torrent, "--save-path", self.payload_dir, "--listen", f"{LOOP}:6881"]
        command = self.args.commands.get(m, MURDER)
        return [command, "seed", "--torrent", self.torrent, "--file",
                os.path.join(self.payload_dir, self.name), "--ip", LOOP, "--bind", LOOP,
                "--quiet", *self.args.extra.get(m, [])]

    def peer_argv(self) -> tuple[list[str], dict]:
        m = self.method
        if m == "aria2":
            hook = os.path.join(self.work, "hook.sh")
            with open(hook, "w") as f:
                f.write('#!/bin/sh\n: > "$MZB_MARKER"\n')
            os.chmod(hook, 0o755)
            return (["aria2c", *[a for a in ARIA2_COMMON if not a.startswith("--listen-port")],
                     "--listen-port=6882", f"--dir={self.dest}",
                     f"--on-bt-download-complete={hook}", self.torrent], {"MZB_MARKER": self.marker})
        if m == "libtorrent":
            return ([VENV_PYTHON, os.path.join(HERE, "lt_client.py"), "--torrent", self.torrent,
                     "--save-path", self.dest, "--listen", f"{LOOP}:6882",
                     "--marker", self.marker], {})
        command = self.args.commands.get(m, MURDER)
        # Not --quiet: the peer's "complete" line gives the swarm's own time
        # (``swarm_time``), so start-up is told apart from the transfer.
        return ([command, "peer", "--torrent", self.torrent, "--destination", self.dest,
                 "--ip", LOOP, "--bind", LOOP, "--seed-time", "0",
                 *self.args.extra.get(m, [])], {})

    def done(self) -> bool:
        if self.method in ("aria2", "libtorrent"):
            return os.path.exists(self.marker)
        try:
            return os.path.getsize(os.path.join(self.dest, self.name)) == self.size
        except OSError:
            return False

    def swarm_time(self) -> float | None:
        """Seconds from the murder peer's swarm start (torrent read, storage
        ready, port open) to its verified payload, from its own log line
        ``complete: … verified (N bytes in X.XXs)``; None for other clients."""
        if self.method in ("aria2", "libtorrent"):
            return None
        try:
            with open(os.path.join(self.work, "peer.log"), errors="replace") as f:
                found = re.findall(r"verified \(\d+ bytes in ([\d.]+)s\)", f.read())
        except OSError:
            return None
        return float(found[-1]) if found else None

    def execute(self, sampler: CpuSampler, timeout: float) -> dict:
        rec: dict = {"method": self.method, "status": "ok"}
        seeder = peer = None
        try:
            seeder = self.spawn("seeder", self.seeder_argv())
            wait_until("seeder announce", lambda: scrape_complete(self.tracker_port,
                                                                  self.info_hash) >= 1,
                       self.args.setup_timeout, [seeder])
            argv, env = self.peer_argv()
            if self.args.py_spy and self.method not in ("aria2", "libtorrent"):
                # Profile run (figures then include py-spy's own CPU): collapsed
                # stacks, idle samples left out, for bench/README.md's breakdown.
                out = os.path.join(self.args.py_spy, f"{self.method}-peer-{os.getpid()}.txt")
                argv = [self.args.py_spy_bin, "record", "--rate", "250", "--format", "raw",
                        "--nonblocking", "-o", out, "--", *argv]
            s0 = proc_cpu_seconds(seeder.pid) or 0.0
            peer = self.spawn("peer", argv, env)
            t0 = peer.started
            wait_until("peer done", self.done, timeout, [peer] if self.method != "murder" else [])
            t1 = time.monotonic()
            s1 = proc_cpu_seconds(seeder.pid) or 0.0
            if self.method not in ("aria2", "libtorrent") and not self.done():
                raise RuntimeError("murder peer exited before its payload was in place")
            # As swarm.py: hash while the clients still run; a file not yet
            # matching is re-hashed every 100 ms and done becomes the start of
            # the first matching hash (10 s at most).
            target = os.path.join(self.dest, self.name)
            rehashes = 0
            deadline = time.monotonic() + 10
            while True:
                start = time.monotonic()
                if sha256_file(target) == self.args.sha256:
                    break
                rehashes += 1
                if start > deadline:
                    raise RuntimeError("sha256 mismatch")
                time.sleep(0.1)
            if rehashes:
                t1 = start
        except Exception as e:  # noqa: BLE001 - a failed run is a result
            rec.update(status="failed", reason=f"{type(e).__name__}: {e}", logs=self.work)
            return rec
        finally:
            # murder's peer exits by itself (--seed-time 0); the others are stopped.
            if peer is not None and self.method == "murder":
                peer.wait(30)
            stop_all([p for p in (peer, seeder) if p is not None])
        gib = self.size / 2**30
        swarm_s = self.swarm_time()
        rec.update({
            "swarm_s": swarm_s,
            "swarm_mb_s": self.size / swarm_s / 1e6 if swarm_s else None,
            "rehashes": rehashes,
            "time_s": t1 - t0,
            "mb_s": self.size / (t1 - t0) / 1e6,
            "peer_cpu_s": peer.cpu_s,
            "peer_cpu_s_per_gib": (peer.cpu_s or 0.0) / gib,
            "peer_maxrss_kib": peer.maxrss_kib,
            "seeder_cpu_s": s1 - s0,
            "seeder_cpu_s_per_gib": (s1 - s0) / gib,
            "machine_busy": sampler.mean_busy(t0, t1),
            "cpu_saturation": sampler.saturation(t0, t1),
        })
        return rec


COLUMNS = ("method", "time s", "MB/s", "swarm s", "swarm MB/s", "peer CPU s/GiB",
           "seeder CPU s/GiB", "peer RSS MiB", "busy %")


def fmt(rec: dict) -> list[str]:
    if rec["status"] != "ok":
        return [rec["method"], rec["status"].upper(), rec.get("reason") or "",
                *[""] * (len(COLUMNS) - 3)]
    swarm = rec.get("swarm_s")
    return [rec["method"], f"{rec['time_s']:.2f}", f"{rec['mb_s']:.0f}",
            "-" if swarm is None else f"{swarm:.2f}",
            "-" if swarm is None else f"{rec['swarm_mb_s']:.0f}",
            f"{rec['peer_cpu_s_per_gib']:.2f}", f"{rec['seeder_cpu_s_per_gib']:.2f}",
            f"{(rec['peer_maxrss_kib'] or 0) / 1024:.0f}",
            "-" if rec["machine_busy"] is None else f"{100 * rec['machine_busy']:.0f}"]


def table(records: list[dict], header: bool = True) -> str:
    rows = ([list(COLUMNS)] if header else []) + [fmt(r) for r in records]
    widths = [max(len(r[i]) for r in rows + [list(COLUMNS)]) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths))) for r in rows)


def medians(records: list[dict]) -> list[dict]:
    out = []
    for m in dict.fromkeys(r["method"] for r in records):
        ok = [r for r in records if r["method"] == m and r["status"] == "ok"]
        if not ok:
            continue
        med = {"method": m, "status": "ok", "runs": len(ok)}
        for k in ("time_s", "mb_s", "swarm_s", "swarm_mb_s", "peer_cpu_s_per_gib", "seeder_cpu_s_per_gib",
                  "peer_maxrss_kib", "machine_busy", "peer_cpu_s", "seeder_cpu_s"):
            vals = [r[k] for r in ok if r.get(k) is not None]
            med[k] = statistics.median(vals) if vals else None
        out.append(med)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=float, default=1024.0)
    ap.add_argument("--methods", default="murder,aria2,libtorrent")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--piece-length", type=int, default=None)
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=ARGS",
                    help="a murder method with extra seed/peer arguments (list NAME in --methods)")
    ap.add_argument("--variant-command", action="append", default=[], metavar="NAME=PATH",
                    help="run variant NAME with another `murder` executable")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per download")
    ap.add_argument("--setup-timeout", type=float, default=120.0)
    ap.add_argument("--workdir", default=None, help="default: a fresh dir in /dev/shm")
    ap.add_argument("--json")
    ap.add_argument("--py-spy", metavar="DIR", help="profile each murder peer with py-spy "
                    "(collapsed stacks into DIR; CPU figures then include py-spy's)")
    args = ap.parse_args(argv)
    args.py_spy_bin = os.path.join(os.path.dirname(sys.executable), "py-spy")
    if args.py_spy:
        os.makedirs(args.py_spy, exist_ok=True)
        if not os.access(args.py_spy_bin, os.X_OK):
            ap.error(f"--py-spy: {args.py_spy_bin} missing (.venv/bin/pip install py-spy)")
    args.methods = [m for m in args.methods.split(",") if m]
    args.extra, args.commands = {}, {}
    for spec in args.variant:
        name, _, extra = spec.partition("=")
        args.extra[name] = shlex.split(extra)
    for spec in args.variant_command:
        name, _, path = spec.partition("=")
        args.commands[name] = path
        args.extra.setdefault(name, [])
    for m in args.methods:
        if m not in ("murder", "aria2", "libtorrent") and m not in args.extra:
            ap.error(f"unknown method {m!r}")
    if "aria2" in args.methods and not shutil.which("aria2c"):
        ap.error("aria2c not installed (drop aria2 from --methods)")

    import murder
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.dirname(murder.__file__)],
                   stdout=subprocess.DEVNULL, check=False)
    base = args.workdir or ("/dev/shm" if os.path.isdir("/dev/shm") else None)
    root = tempfile.mkdtemp(prefix="mzloop-", dir=base)
    size = int(args.size_mib * 2**20)
    sampler = CpuSampler().start()
    records: list[dict] = []
    tracker = None
    status = 0
    try:
        payload = make_payload(os.path.join(root, "src"), size)
        args.sha256 = payload.sha256
        port = free_port()
        torrent = os.path.join(root, "payload.torrent")
        mk = [MURDER, "make-torrent", "--announce", f"http://{LOOP}:{port}/announce",
              "-o", torrent, "--quiet"]
        if args.piece_length:
            mk += ["--piece-length", str(args.piece_length)]
        subprocess.run(mk + [payload.path], check=True, timeout=600)
        with open(torrent, "rb") as f:
            info = bencodepy.decode(f.read())[b"info"]
        info_hash = hashlib.sha1(bencodepy.encode(info)).digest()
        print(f"payload {size / 2**20:.0f} MiB, piece length {info[b'piece length']}, "
              f"tracker http://{LOOP}:{port}", flush=True)
        tracker = Proc.spawn("tracker", "tracker", [
            MURDER, "tracker", "--port", str(port), "--bind", LOOP,
            "--dfile", os.path.join(root, "tracker.dfile")],
            log_path=os.path.join(root, "tracker.log"), cwd=root)
        wait_until("tracker", lambda: scrape_complete(port, b"\0" * 20) >= 0 and
                   _port_open(port), 30, [tracker])
        print(table([]), flush=True)
        for repeat in range(args.repeat):
            for m in args.methods:
                work = tempfile.mkdtemp(prefix=f"{m}-{repeat}-", dir=root)
                run = Run(m, args, torrent, info_hash, os.path.dirname(payload.path),
                          payload.name, size, port, work)
                rec = run.execute(sampler, args.timeout)
                rec["repeat"] = repeat
                records.append(rec)
                print(table([rec], header=False), flush=True)
                if rec["status"] != "ok":
                    kept = os.path.join("/tmp/mzloop-failed", os.path.basename(work))
                    shutil.copytree(work, kept, dirs_exist_ok=True,
                                    ignore=shutil.ignore_patterns("dest"))
                    print(f"  logs kept in {kept}", flush=True)
                    status = 1
                shutil.rmtree(work, ignore_errors=True)
    except KeyboardInterrupt:
        status = 130
    finally:
        if tracker is not None:
            stop_all([tracker])
        sampler.stop()
        shutil.rmtree(root, ignore_errors=True)
    summary = medians(records)
    if args.repeat > 1:
        print("\nmedians:")
        print(table(summary))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"config": vars(args), "cpus": os.cpu_count(), "records": records,
                       "summary": summary, "loadavg_end": os.getloadavg()}, f, indent=1,
                      default=str)
        print(f"wrote {args.json}")
    return status


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((LOOP, port), timeout=1):
            return True
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
