"""Micro-benchmark: what the UDP tracker's socket loop costs per datagram, three ways.

An echo server on loopback (the reply is a fixed 320-byte announce-sized
answer, so only the socket work is measured), fed ``--queue`` datagrams at a
time by a client socket in the same process, then drained once:

* ``recvfrom + sendto`` — what :class:`murder.tracker.udp.TrackerUDPPort` does;
* ``recvfrom_into + sendto`` — a preallocated buffer instead of a new bytes
  object per datagram (then a bytes copy of the datagram, as the core needs);
* ``recvmmsg + sendmmsg (ctypes)`` — up to 64 datagrams per system call, the
  batching Python's socket module does not offer, called through ``ctypes``
  (no C extension), each datagram copied out and its reply pointed to in place.

User and system CPU seconds per datagram (``getrusage``) are printed per
variant, several rounds interleaved, and saved to
``bench/results/tracker_udp_syscalls.json``.  These decide whether the
tracker's drain loop should change (bench/README.md, "Session 5 tracker").

    .venv/bin/python bench/tracker_udp_syscalls.py [--rounds 300] [--queue 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import resource
import socket
import sys
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "tracker_udp_syscalls.json"
BATCH = 64
MSG_DONTWAIT = 0x40
REQUEST = b"r" * 98
REPLY = b"p" * 320


class _IOVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(_IOVec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


def _handle(data: bytes, host: str, port: int) -> bytes:
    """Stands in for UDPTrackerCore.handle: the same arguments, a fixed reply."""
    return REPLY


def _plain(server: socket.socket) -> Callable[[], None]:
    recvfrom, sendto = server.recvfrom, server.sendto

    def drain() -> None:
        while True:
            try:
                data, addr = recvfrom(8192)
            except BlockingIOError:
                return
            sendto(_handle(data, addr[0], addr[1]), addr)
    return drain


def _into(server: socket.socket) -> Callable[[], None]:
    recvfrom_into, sendto = server.recvfrom_into, server.sendto
    buf = bytearray(8192)
    view = memoryview(buf)

    def drain() -> None:
        while True:
            try:
                n, addr = recvfrom_into(buf)
            except BlockingIOError:
                return
            sendto(_handle(view[:n].tobytes(), addr[0], addr[1]), addr)
    return drain


def _mmsg(server: socket.socket) -> Callable[[], None]:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    recvmmsg, sendmmsg = libc.recvmmsg, libc.sendmmsg
    bufs = (ctypes.c_char * 2048 * BATCH)()
    names = (ctypes.c_char * 16 * BATCH)()  # sockaddr_in; replies reuse them in place
    riov, rmsg = (_IOVec * BATCH)(), (_MMsgHdr * BATCH)()
    siov, smsg = (_IOVec * BATCH)(), (_MMsgHdr * BATCH)()
    for i in range(BATCH):
        riov[i].iov_base, riov[i].iov_len = ctypes.addressof(bufs[i]), 2048
        rmsg[i].msg_hdr.msg_iov, rmsg[i].msg_hdr.msg_iovlen = ctypes.pointer(riov[i]), 1
        rmsg[i].msg_hdr.msg_name = ctypes.addressof(names[i])
        smsg[i].msg_hdr.msg_iov, smsg[i].msg_hdr.msg_iovlen = ctypes.pointer(siov[i]), 1
        smsg[i].msg_hdr.msg_name, smsg[i].msg_hdr.msg_namelen = ctypes.addressof(names[i]), 16
    fd = server.fileno()
    string_at, inet_ntoa = ctypes.string_at, socket.inet_ntoa
    keep: list[bytes] = [b""] * BATCH  # replies stay alive until sendmmsg

    def drain() -> None:
        while True:
            for i in range(BATCH):
                rmsg[i].msg_hdr.msg_namelen = 16
            n = recvmmsg(fd, rmsg, BATCH, MSG_DONTWAIT, None)
            if n <= 0:
                return
            for i in range(n):
                raw = names[i].raw
                reply = _handle(string_at(riov[i].iov_base, rmsg[i].msg_len),
                                inet_ntoa(raw[4:8]), int.from_bytes(raw[2:4], "big"))
                keep[i] = reply
                siov[i].iov_base = ctypes.cast(ctypes.c_char_p(reply), ctypes.c_void_p).value
                siov[i].iov_len = len(reply)
            sendmmsg(fd, smsg, n, 0)
            if n < BATCH:
                return
    return drain


def measure(drain: Callable[[], None], client: socket.socket, target: tuple[str, int],
            rounds: int, queue: int) -> tuple[float, float]:
    """(user, system) microseconds per datagram over ``rounds`` drains of ``queue``."""
    user = system = 0.0
    answered = 0
    for _ in range(rounds):
        for _ in range(queue):
            client.sendto(REQUEST, target)
        before = resource.getrusage(resource.RUSAGE_SELF)
        drain()
        after = resource.getrusage(resource.RUSAGE_SELF)
        user += after.ru_utime - before.ru_utime
        system += after.ru_stime - before.ru_stime
        while True:
            try:
                client.recv(4096)
                answered += 1
            except BlockingIOError:
                break
    if answered != rounds * queue:
        raise RuntimeError(f"{rounds * queue - answered} datagrams unanswered")
    n = rounds * queue
    return user / n * 1e6, system / n * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--queue", type=int, default=64, help="datagrams queued per drain")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for s in (server, client):
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        target = server.getsockname()
        variants = {"recvfrom + sendto": _plain(server),
                    "recvfrom_into + sendto": _into(server),
                    "recvmmsg + sendmmsg (ctypes)": _mmsg(server)}
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        print(f"{args.queue} datagrams queued per drain, {args.rounds} drains per run; "
              "CPU per datagram:")
        for r in range(args.repeat):
            for name, drain in variants.items():
                user, system = measure(drain, client, target, args.rounds, args.queue)
                runs[name].append((user, system))
                print(f"  run {r + 1}  {name:30} user {user:5.2f} us  sys {system:5.2f} us"
                      f"  total {user + system:5.2f} us", flush=True)
    finally:
        server.close()
        client.close()
    best = {name: min(u + s for u, s in rs) for name, rs in runs.items()}
    for name, total in best.items():
        print(f"best {name:30} {total:5.2f} us per datagram")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"queue": args.queue, "rounds": args.rounds,
                                     "runs": runs, "best_us": best,
                                     "loadavg": os.getloadavg()[0]}, indent=1) + "\n")
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
