#!/usr/bin/env python3
"""The floor under the loopback pair: receive + SHA-1 + write, nothing else.

A sender process pushes the payload over one loopback TCP connection with
``os.sendfile`` (no Python per byte); the receiver does only what any peer
must: ``recv_into`` a piece buffer, SHA-1 the piece, ``pwrite`` it to a file
(in ``--dir``, default /dev/shm like the loopback pair).  Modes:

- ``inline``: all three on one thread (what a one-threaded peer pays);
- ``pool``: hash + write handed to a 2-thread pool (hashlib and pwrite
  release the GIL), receiving continues meanwhile;
- ``recv``: receive only (the kernel copy; no hash, no write).

Figures: MB/s and the receiver's CPU-s per GiB (process CPU incl. its
threads).  No BitTorrent framing, no bookkeeping: a Python peer cannot go
below these.

    .venv/bin/python bench/loopback_floor.py --size-mib 1024 --repeat 3
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def sender(path: str, port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s, open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        sent = 0
        while sent < size:
            sent += os.sendfile(s.fileno(), f.fileno(), sent, size - sent)


def receive(mode: str, path: str, size: int, piece: int, out_dir: str) -> dict:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    proc = subprocess.Popen([sys.executable, __file__, "--send", path, "--port", str(port)])
    conn, _ = srv.accept()
    srv.close()
    out = os.path.join(out_dir, f"floor-{mode}.bin")
    fd = os.open(out, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    pool = concurrent.futures.ThreadPoolExecutor(2) if mode == "pool" else None
    futures = []

    def hash_and_write(buf: bytearray, offset: int) -> bytes:
        digest = hashlib.sha1(buf).digest()
        os.pwrite(fd, buf, offset)
        return digest

    c0, t0 = time.process_time(), time.monotonic()
    got = 0
    while got < size:
        n = min(piece, size - got)
        buf = bytearray(n)
        view = memoryview(buf)
        pos = 0
        while pos < n:
            k = conn.recv_into(view[pos:], n - pos)
            if not k:
                raise SystemExit("sender closed early")
            pos += k
        if mode == "inline":
            hash_and_write(buf, got)
        elif mode == "pool":
            futures.append(pool.submit(hash_and_write, buf, got))
            if len(futures) > 64:
                futures.pop(0).result()
        got += n
    for f in futures:
        f.result()
    c1, t1 = time.process_time(), time.monotonic()
    if pool:
        pool.shutdown()
    conn.close()
    proc.wait(30)
    os.close(fd)
    os.unlink(out)
    gib = size / 2**30
    return {"mode": mode, "mb_s": size / (t1 - t0) / 1e6, "cpu_s_per_gib": (c1 - c0) / gib}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--piece-length", type=int, default=2**20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    ap.add_argument("--json")
    ap.add_argument("--send", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.send:
        sender(args.send, args.port)
        return 0
    size = args.size_mib * 2**20
    records = []
    with tempfile.TemporaryDirectory(prefix="mzfloor-", dir=args.dir) as d:
        path = os.path.join(d, "payload.bin")
        with open(path, "wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(2**20))
        print(f"{'mode':7} {'MB/s':>6} {'receiver CPU s/GiB':>19}")
        for _ in range(args.repeat):
            for mode in ("recv", "inline", "pool"):
                r = receive(mode, path, size, args.piece_length, d)
                records.append(r)
                print(f"{r['mode']:7} {r['mb_s']:6.0f} {r['cpu_s_per_gib']:19.2f}", flush=True)
    print("medians:")
    for mode in ("recv", "inline", "pool"):
        rs = [r for r in records if r["mode"] == mode]
        print(f"{mode:7} {statistics.median(r['mb_s'] for r in rs):6.0f} "
              f"{statistics.median(r['cpu_s_per_gib'] for r in rs):19.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": vars(args), "records": records}, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
