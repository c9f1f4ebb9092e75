"""Benchmark: announces/s and latency of our tracker vs opentracker, with wrk.

Starts ``murder tracker`` and Debian's ``opentracker`` on free loopback
ports (each pinned to CPU 0 with ``taskset`` when available; wrk runs on
CPU 1), drives each with ``wrk`` and ``bench/tracker_wrk.lua`` (compact
announces, random info hashes and peer ids from fixed pools), prints a
side-by-side table and the ratio, and writes
``bench/results/tracker_announce.json``.

    .venv/bin/python bench/tracker_announce.py [--duration 10] [--connections 32]

Target (issue): >= 50 % of opentracker's rate with p99 < 20 ms.  Add
``--close`` to send ``Connection: close`` on every announce (one TCP
connection each, as most BitTorrent clients do); results then go to
``bench/results/tracker_announce_close.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LUA = HERE / "tracker_wrk.lua"
RESULTS = HERE / "results" / "tracker_announce.json"
RESULTS_CLOSE = HERE / "results" / "tracker_announce_close.json"
PROBE = ("/announce?info_hash=%01%02%03%04%05%06%07%08%09%0A%0B%0C%0D%0E%0F%10%11%12%13%14"
         "&peer_id=-PR0001-000000000000&port=6881&left=0&compact=1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cpu: int, argv: list[str]) -> list[str]:
    if shutil.which("taskset") and os.cpu_count() and os.cpu_count() > cpu:
        return ["taskset", "-c", str(cpu), *argv]
    return argv


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 15.0) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{PROBE}", timeout=2) as r:
                return r.read()
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server on port {port} not ready after {timeout}s")


def run_wrk(port: int, duration: int, connections: int, threads: int, hashes: Path,
            close: bool) -> dict:
    extra = ["-H", "Connection: close"] if close else []
    out = subprocess.run(
        pinned(1, ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency",
                   *extra, "-s", str(LUA), f"http://127.0.0.1:{port}/announce"]),
        capture_output=True, text=True, timeout=duration + 60, check=True,
        env={**os.environ, "WRK_HASHES": str(hashes)}).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("WRKJSON "))
    stats = json.loads(line[len("WRKJSON "):])
    stats["rate"] = stats["requests"] / (stats["duration_us"] / 1e6)
    return stats


def bench(name: str, argv: list[str], port: int, args, workdir: Path) -> dict:
    log = open(workdir / f"{name}.log", "w")
    proc = subprocess.Popen(pinned(0, argv), stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        probe = wait_ready(port, proc)
        if b"failure reason" in probe:
            raise RuntimeError(f"{name} refused the probe announce: {probe!r}")
        stats = run_wrk(port, args.duration, args.connections, args.threads,
                        workdir / "whitelist", args.close)
        # The server must still answer properly after the load.
        after = wait_ready(port, proc)
        stats["healthy_after"] = b"failure reason" not in after and after.startswith(b"d")
        return stats
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds of wrk per tracker")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--torrents", type=int, default=1000, help="info hashes in the pool")
    parser.add_argument("--skip-opentracker", action="store_true")
    parser.add_argument("--close", action="store_true",
                        help="one connection per announce (Connection: close), as BitTorrent "
                             "clients do; opentracker never keeps connections alive anyway")
    args = parser.parse_args()
    for tool in ("wrk",):
        if not shutil.which(tool):
            print(f"{tool} is not installed", file=sys.stderr)
            return 1
    murder = Path(sys.executable).parent / "murder"
    results: dict = {"duration_s": args.duration, "connections": args.connections,
                     "threads": args.threads, "torrents": args.torrents, "lua": str(LUA.relative_to(ROOT)),
                     "pinned": bool(shutil.which("taskset")), "keepalive": not args.close}
    with tempfile.TemporaryDirectory(prefix="tracker-bench-") as tmp:
        workdir = Path(tmp)
        # Pool of info hashes for wrk, and opentracker's whitelist (its Debian
        # build only tracks listed torrents); the probe's hash is the first.
        pool = [bytes(range(1, 21)).hex()] + [os.urandom(20).hex() for _ in range(args.torrents)]
        (workdir / "whitelist").write_text("\n".join(pool) + "\n")
        # opentracker drops to user nobody, which must still read the list.
        os.chmod(workdir, 0o755)
        os.chmod(workdir / "whitelist", 0o644)
        port = free_port()
        results["murder"] = bench("murder", [
            str(murder), "tracker", "--port", str(port), "--bind", "127.0.0.1", "--dfile", "",
            "--max-torrents", "100000", "--max-peers", "1000000"], port, args, workdir)
        if not args.skip_opentracker and shutil.which("opentracker"):
            port = free_port()
            results["opentracker"] = bench("opentracker", [
                "opentracker", "-i", "127.0.0.1", "-p", str(port), "-P", str(free_port()),
                "-d", tmp, "-w", "whitelist"], port, args, workdir)
    ours, theirs = results["murder"], results.get("opentracker")
    rows = [("announces/s", "rate", "{:,.0f}"), ("p50 ms", "p50_us", "{:.2f}"),
            ("p90 ms", "p90_us", "{:.2f}"), ("p99 ms", "p99_us", "{:.2f}"),
            ("max ms", "max_us", "{:.2f}"), ("socket errors", None, "{}")]
    mode = ("close: one connection per announce" if args.close else
            "keep-alive: wrk reuses connections (opentracker closes each one anyway)")
    print(f"{args.connections} connections, {args.duration} s each, {mode}")
    print(f"{'':16}{'murder':>14}{'opentracker':>14}")
    for label, key, fmt in rows:
        def cell(stats):
            if stats is None:
                return "-"
            if key is None:
                return fmt.format(sum(stats[k] for k in stats if k.startswith("errors_")))
            value = stats[key] / (1000 if key.endswith("_us") else 1)
            return fmt.format(value)
        print(f"{label:16}{cell(ours):>14}{cell(theirs):>14}")
    if theirs:
        ratio = ours["rate"] / theirs["rate"]
        results["ratio"] = ratio
        results["target_met"] = ratio >= 0.5 and ours["p99_us"] < 20_000
        print(f"ratio murder/opentracker: {ratio:.2f}  (target >= 0.50 with p99 < 20 ms: "
              f"{'met' if results['target_met'] else 'NOT met'})")
    path = RESULTS_CLOSE if args.close else RESULTS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
