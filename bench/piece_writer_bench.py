#!/usr/bin/env python3
"""Piece completion in isolation: SHA-1 + write on the reactor thread vs PieceWriter.

What the peer's reactor thread pays per verified piece today
(``session._piece_complete``: ``hashlib.sha1(buffer)`` then
``storage.write_piece``) against handing the piece to
:class:`murder.peer.storage.PieceWriter` (a Twisted ThreadPool does both;
the "reactor" thread only submits and takes the result).  Writes go to a
DownloadStorage in ``--dir`` (default /dev/shm, as in the loopback pair).

Prints, per mode: wall MB/s, CPU-s per GiB of the calling ("reactor")
thread (``time.thread_time``) and of the whole process.  The reactor
thread's figure is what limits a one-threaded peer's download rate.

    .venv/bin/python bench/piece_writer_bench.py --size-mib 512 --repeat 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from twisted.python.threadpool import ThreadPool  # noqa: E402

from murder.metainfo import parse  # noqa: E402
from murder.peer.storage import DownloadStorage, PieceWriter  # noqa: E402


class _QueueReactor:
    """callFromThread into a list the "reactor" loop drains (one thread's view)."""

    def __init__(self) -> None:
        import queue
        self.queue: "queue.SimpleQueue" = queue.SimpleQueue()

    def callFromThread(self, f, *args, **kwargs):  # noqa: N802
        self.queue.put((f, args, kwargs))

    def run_pending(self, block: bool = False) -> int:
        n = 0
        while True:
            try:
                f, args, kwargs = self.queue.get(block=block and n == 0, timeout=10)
            except Exception:  # noqa: BLE001 - queue.Empty
                return n
            f(*args, **kwargs)
            n += 1


def make_meta(size: int, piece_length: int):
    import bencodepy
    pieces = []
    chunk = os.urandom(piece_length)
    num = -(-size // piece_length)
    for i in range(num):
        n = min(piece_length, size - i * piece_length)
        pieces.append(hashlib.sha1(chunk[:n]).digest())
    info = {b"name": b"bench.bin", b"length": size, b"piece length": piece_length,
            b"pieces": b"".join(pieces)}
    return parse(bencodepy.encode({b"announce": b"http://x/announce", b"info": info})), chunk


def run(mode: str, size: int, piece_length: int, directory: str, threads: int) -> dict:
    meta, chunk = make_meta(size, piece_length)
    target = os.path.join(directory, f"bench-{mode}.bin")
    storage = DownloadStorage(meta, target)
    storage.prepare()
    buffers = [bytearray(chunk[:meta.piece_size(i)]) for i in range(min(meta.num_pieces, 8))]
    t0, c0, p0 = time.monotonic(), time.thread_time(), time.process_time()
    if mode == "sync":
        for i in range(meta.num_pieces):
            buf = buffers[i % len(buffers)] if meta.piece_size(i) == piece_length else \
                bytearray(chunk[:meta.piece_size(i)])
            if hashlib.sha1(buf).digest() != meta.pieces[i]:
                raise SystemExit("hash mismatch")
            storage.write_piece(i, buf)
        pool = None
    else:
        pool = ThreadPool(minthreads=threads, maxthreads=threads, name="bench-writer")
        pool.start()
        reactor = _QueueReactor()
        writer = PieceWriter(storage, meta.pieces, reactor=reactor, threadpool=pool)
        bad = []
        for i in range(meta.num_pieces):
            while writer.full:
                reactor.run_pending(block=True)
            buf = buffers[i % len(buffers)] if meta.piece_size(i) == piece_length else \
                bytearray(chunk[:meta.piece_size(i)])  # never mutated: safe to share
            writer.submit(i, buf).addCallback(lambda ok, i=i: ok or bad.append(i))
            reactor.run_pending()
        while writer.pending:
            reactor.run_pending(block=True)
        if bad:
            raise SystemExit(f"hash mismatch: {bad[:3]}")
    t1, c1, p1 = time.monotonic(), time.thread_time(), time.process_time()
    if pool is not None:
        pool.stop()
    storage.discard()
    gib = size / 2**30
    return {"mode": mode, "threads": threads if mode == "pool" else 0, "mb_s": size / (t1 - t0) / 1e6,
            "reactor_cpu_s_per_gib": (c1 - c0) / gib, "process_cpu_s_per_gib": (p1 - p0) / gib}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--piece-length", type=int, default=2**20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    ap.add_argument("--json")
    args = ap.parse_args()
    size = args.size_mib * 2**20
    records = []
    with tempfile.TemporaryDirectory(prefix="mzpw-", dir=args.dir) as d:
        print(f"{'mode':6} {'MB/s':>7} {'reactor CPU s/GiB':>18} {'process CPU s/GiB':>18}")
        for _ in range(args.repeat):
            for mode in ("sync", "pool"):
                r = run(mode, size, args.piece_length, d, args.threads)
                records.append(r)
                print(f"{r['mode']:6} {r['mb_s']:7.0f} {r['reactor_cpu_s_per_gib']:18.3f} "
                      f"{r['process_cpu_s_per_gib']:18.3f}", flush=True)
    print("medians:")
    for mode in ("sync", "pool"):
        rs = [r for r in records if r["mode"] == mode]
        print(f"{mode:6} {statistics.median(r['mb_s'] for r in rs):7.0f} "
              f"{statistics.median(r['reactor_cpu_s_per_gib'] for r in rs):18.3f} "
              f"{statistics.median(r['process_cpu_s_per_gib'] for r in rs):18.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": vars(args), "records": records}, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
