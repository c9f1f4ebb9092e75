#!/usr/bin/env python3
"""Start-up CPU of a legacy ``murder_client.py peer``: start, fail, exit.

Each run is ``python <dist>/murder_client.py peer T SAVEAS 127.0.0.1`` with
``MURDER_TRACKER_TIMEOUT`` short and a tracker port nobody listens on, so the
peer pays its whole start-up (interpreter, imports, the detached worker)
and gives up.  The foreground reaps its worker on failure, so the children's
rusage of each run covers both processes.  Several dist folders run
interleaved (A B A B ...), and the medians are printed side by side; compare
with ``murder peer`` itself (``--murder``).

    .venv/bin/python bench/legacy_startup.py --dist new=contrib/capistrano_compat/dist \\
        --dist old=/tmp/old-dist --murder --pairs 20
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
VENV_PYTHON = os.path.join(REPO, ".venv", "bin", "python")
MURDER = os.path.join(REPO, ".venv", "bin", "murder")


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nobody listens there


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dist", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--murder", action="store_true", help="also `murder peer` itself")
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mzls-") as d:
        payload = os.path.join(d, "p.bin")
        with open(payload, "wb") as f:
            f.write(os.urandom(1 << 20))
        torrent = payload + ".torrent"
        subprocess.run([MURDER, "make-torrent", "--announce",
                        f"http://127.0.0.1:{dead_port()}/announce", "-o", torrent, "--quiet",
                        payload], check=True, capture_output=True)
        commands: dict[str, list[str]] = {}
        for spec in args.dist:
            name, _, path = spec.partition("=")
            subprocess.run([VENV_PYTHON, "-m", "compileall", "-q", path], check=False,
                           stdout=subprocess.DEVNULL)
            commands[name] = [VENV_PYTHON, os.path.join(path, "murder_client.py"), "peer",
                              torrent, os.path.join(d, "out"), "127.0.0.1"]
        if args.murder:
            commands["murder peer"] = [MURDER, "peer", "--torrent", torrent, "--saveas",
                                       os.path.join(d, "out"), "--ip", "127.0.0.1",
                                       "--tracker-timeout", "0.1", "--quiet"]
        env = dict(os.environ, MURDER_TRACKER_TIMEOUT="0.1")
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.pairs):
            for name, argv in commands.items():
                before = children_cpu()
                r = subprocess.run(argv, env=env, capture_output=True, timeout=60)
                if r.returncode == 0:
                    print(f"{name}: unexpectedly succeeded", file=sys.stderr)
                    return 1
                samples[name].append(children_cpu() - before)
    print(f"{'command':14} {'median CPU s':>12} {'min':>6} {'max':>6}  (start, fail, exit; "
          f"{args.pairs} interleaved runs)")
    for name, xs in samples.items():
        print(f"{name:14} {statistics.median(xs):12.3f} {min(xs):6.3f} {max(xs):6.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": vars(args), "samples": samples}, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
