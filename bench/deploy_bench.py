"""`murder deploy` vs `parallel-scp` vs the same swarm started without SSH (issue 12).

For each N, one fleet of N real sshd hosts in network namespaces
(bench/sshfleet.py), every host's link shaped to the same rate both ways,
the build host (198.18.0.2) included.  In the same run, one after the other,
each method puts one payload on every host and every copy's sha256 is checked:

* ``murder-deploy``: ``murder deploy`` (tracker, seeder, hashing, SSH sessions;
  time = command start to last host verified, and to the command's exit);
* ``parallel-scp``: Debian pssh's ``parallel-scp -p N`` over the same ssh config;
* ``direct-swarm``: ``murder tracker`` and ``murder seed`` started first, then
  every host's ``murder peer`` started directly in its namespace (no SSH);
  time = peers started to last peer complete.  ``murder-deploy`` minus this
  is the SSH + orchestration overhead.

Prints a table and writes JSON (default bench/results/deploy_bench.json).
Needs root, iproute2, openssh-server, pssh.  Run under ``flock /tmp/bench.lock``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import netns  # noqa: E402
import sshfleet  # noqa: E402

VENV_BIN = Path(sys.executable).parent
MURDER = str(VENV_BIN / "murder")


def _sha(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(fleet: sshfleet.SSHFleet, path: str, want: str) -> int:
    """Hosts whose copy at ``path`` has the right sha256 (then the copy is removed)."""
    ok = 0
    for i in range(len(fleet.hosts)):
        r = fleet.on_host(i, ["sha256sum", path])
        if r.returncode == 0 and r.stdout.split()[0] == want:
            ok += 1
        fleet.on_host(i, ["rm", "-rf", path, path + ".part"])
    return ok


def run_deploy(fleet, payload: Path, dest: str, work: Path, parallel: int | None) -> dict:
    report = work / "deploy-report.json"
    argv = fleet.deploy_argv([MURDER, "deploy", "-q", "--ssh-config", str(fleet.ssh_config),
                              "--remote-murder", MURDER, "--report", str(report),
                              *([] if parallel is None else ["--parallel", str(parallel)]),
                              *[a for h in fleet.hosts for a in ("--host", h.addr)],
                              str(payload), dest])
    t0 = time.time()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    t_exit = time.time() - t0
    doc = json.loads(report.read_text())
    last = max((h["completed"] or 0) for h in doc["hosts"]) - t0
    return {"exit": proc.returncode, "time_s": round(last, 2), "exit_s": round(t_exit, 2),
            "output_tail": proc.stdout[-300:]}


def run_pscp(fleet, payload: Path, dest: str, work: Path, n: int) -> dict:
    hosts = work / "pscp-hosts"
    hosts.write_text("".join(f"root@{h.addr}\n" for h in fleet.hosts))
    tool = shutil.which("parallel-scp") or shutil.which("pscp.pssh")
    for i in range(len(fleet.hosts)):
        fleet.on_host(i, ["mkdir", "-p", dest])
    argv = fleet.deploy_argv([tool, "-h", str(hosts), "-p", str(n), "-t", "0",
                              "-x", f"-F {fleet.ssh_config}", "-O", "BatchMode=yes",
                              str(payload), dest + "/"])
    t0 = time.time()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    return {"exit": proc.returncode, "time_s": round(time.time() - t0, 2),
            "output_tail": proc.stdout[-300:] + proc.stderr[-300:]}


def run_direct(fleet, payload: Path, dest: str, work: Path) -> dict:
    """Tracker + seeder on the build host, then peers started directly (no SSH)."""
    seeder_addr = fleet.topo.seeder.addr
    port = 6969
    announce = f"http://{seeder_addr}:{port}/announce"
    torrent = work / "direct.torrent"
    subprocess.run([MURDER, "make-torrent", "-q", "-a", announce, "-o", str(torrent),
                    str(payload)], check=True, capture_output=True, timeout=120)
    procs = []
    try:
        procs.append(subprocess.Popen(fleet.deploy_argv(
            [MURDER, "tracker", "--port", str(port), "--dfile", ""]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        seed = subprocess.Popen(fleet.deploy_argv(
            [MURDER, "seed", "--torrent", str(torrent), "--file", str(payload), "--skip-verify",
             "--ip", seeder_addr]), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        procs.append(seed)
        # The seeder is ready once it logged its first announce reply (bounded wait).
        deadline = time.time() + 30
        while True:
            line = seed.stderr.readline()
            if "seeder for" in line:
                break
            if not line or time.time() > deadline:
                raise RuntimeError("seeder did not start")
        time.sleep(0.5)  # its first announce (no readiness line is printed for it)
        status = []
        t0 = time.time()
        for i, h in enumerate(fleet.hosts):
            fleet.on_host(i, ["mkdir", "-p", dest])
            r, w = os.pipe()
            p = subprocess.Popen(
                ["nsenter", "-t", str(h.proc.pid), "-m", "-n", MURDER, "peer", "--torrent",
                 str(torrent), "--destination", dest, "--status-fd", str(w),
                 "--seed-until-swarm-done", "--max-linger", "30", "-q"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(w,))
            os.close(w)
            procs.append(p)
            status.append(os.fdopen(r))
        done = []
        for f in status:
            line = f.readline()
            done.append((time.time() - t0) if line.startswith("complete") else None)
        ok = all(t is not None for t in done)
        return {"exit": 0 if ok else 1,
                "time_s": round(max(t for t in done if t is not None), 2) if any(done) else None}
    finally:
        for p in reversed(procs):
            sshfleet.kill_group(p)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", default="8,16")
    ap.add_argument("--size-mib", type=int, default=64)
    ap.add_argument("--rate-mbit", type=float, default=40.0)
    ap.add_argument("--methods", default="murder-deploy,direct-swarm,parallel-scp")
    ap.add_argument("--parallel-sweep", default="",
                    help="also run murder deploy with these --parallel values (at the largest N)")
    ap.add_argument("--json", default=str(HERE / "results" / "deploy_bench.json"))
    args = ap.parse_args(argv)
    why = sshfleet.fleet_available()
    if why:
        print(f"deploy_bench: {why}", file=sys.stderr)
        return 2
    if "parallel-scp" in args.methods and not (shutil.which("parallel-scp")
                                               or shutil.which("pscp.pssh")):
        print("deploy_bench: parallel-scp not installed (Debian pssh)", file=sys.stderr)
        return 2
    netns.install_signal_handlers(3600)
    sizes = [int(x) for x in args.n.split(",")]
    results = []
    work = Path(tempfile.mkdtemp(prefix="murder-deploy-bench-"))
    try:
        payload = work / "release.bin"
        with open(payload, "wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(2**20))
        want = _sha(payload)
        for n in sizes:
            fleet = sshfleet.SSHFleet(work / f"fleet{n}", n, rate_mbit=args.rate_mbit)
            try:
                fleet.build()
                for i in range(n):
                    fleet.start(i, tmpfs_size=f"{args.size_mib * 3}m")
                runs = [(m, None) for m in args.methods.split(",")]
                if n == max(sizes) and args.parallel_sweep:
                    runs += [("murder-deploy", int(p)) for p in args.parallel_sweep.split(",")]
                for method, par in runs:
                    dest = str(fleet.root / f"{method}")
                    if method == "murder-deploy":
                        rec = run_deploy(fleet, payload, dest, work, par)
                    elif method == "parallel-scp":
                        rec = run_pscp(fleet, payload, dest, work, n)
                    elif method == "direct-swarm":
                        rec = run_direct(fleet, payload, dest, work)
                    else:
                        raise SystemExit(f"unknown method {method}")
                    rec["verified"] = _verify(fleet, f"{dest}/release.bin", want)
                    rec.update(method=method, n=n, parallel=par, size_mib=args.size_mib,
                               rate_mbit=args.rate_mbit)
                    results.append(rec)
                    label = method + (f" --parallel {par}" if par else "")
                    print(f"N={n:3d} {label:28s} {rec['time_s']!s:>8} s  "
                          f"verified {rec['verified']}/{n}  exit {rec['exit']}"
                          + (f"  (command exit at {rec['exit_s']} s)" if "exit_s" in rec else ""),
                          flush=True)
            finally:
                fleet.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"{'N':>3}  {'method':28s} {'time s':>8}  vs deploy  T_min={args.size_mib * 2**20 * 8 / (args.rate_mbit * 1e6):.1f}s")
    for n in sizes:
        base = next((r["time_s"] for r in results if r["n"] == n and r["method"] ==
                     "murder-deploy" and r["parallel"] is None), None)
        for r in (r for r in results if r["n"] == n):
            ratio = f"{r['time_s'] / base:6.2f}x" if base and r["time_s"] else "     -"
            label = r["method"] + (f" --parallel {r['parallel']}" if r["parallel"] else "")
            print(f"{n:3d}  {label:28s} {r['time_s']!s:>8}  {ratio}")
        direct = next((r["time_s"] for r in results if r["n"] == n and
                       r["method"] == "direct-swarm"), None)
        if base and direct:
            print(f"     SSH + orchestration overhead at N={n}: {base - direct:.2f} s "
                  f"({100 * (base - direct) / direct:.1f} % of the direct swarm)")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"args": vars(args), "results": results}, f, indent=1)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
