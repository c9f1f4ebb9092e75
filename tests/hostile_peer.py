"""A hostile BitTorrent peer for the fault tests (not a library module).

It announces itself to the torrent's tracker as a seed (``left=0``), accepts
peer-wire connections, claims every piece (HAVE_ALL with the fast extension,
else a full bitfield), unchokes, and then misbehaves:

``wrong``
    answers every REQUEST with random bytes of the right length, so every
    piece it contributes fails its SHA-1;
``garbage``
    follows the handshake with protocol garbage (oversized lengths, wrong
    fixed sizes, out-of-range indices, random bytes), one kind per connection;
``silent``
    accepts requests and never answers them (keep-alives only, so the
    connection is not merely idle);
``drop``
    answers the first REQUEST of a connection with a PIECE message cut
    half-way through its block, then closes the connection (a peer dying
    mid-piece).

Blocking sockets and one thread per connection: simple and independent of
the Twisted code under test.  Counters go to ``--stats`` (JSON, rewritten
atomically after every event) so a test can check the peer was really used::

    python tests/hostile_peer.py --torrent T --mode wrong --stats S [--port N]

Runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import struct
import sys
import threading
import time
import urllib.parse
import urllib.request

import bencodepy

PSTR = b"BitTorrent protocol"
FAST_BIT = 0x04  # reserved byte 7 (BEP 6)
REQUEST, PIECE, HAVE, BITFIELD = 6, 7, 4, 5
UNCHOKE, HAVE_ALL = 1, 0x0E
MODES = ("wrong", "garbage", "silent", "drop")


class Hostile:
    """Shared state: torrent geometry, counters, the stats file."""

    def __init__(self, torrent: bytes, mode: str, stats_path: str | None) -> None:
        meta = bencodepy.decode(torrent)
        info = meta[b"info"]
        import hashlib

        self.info_hash = hashlib.sha1(bencodepy.encode(info)).digest()
        self.announce = meta[b"announce"].decode()
        self.piece_length = info[b"piece length"]
        total = info.get(b"length") or sum(f[b"length"] for f in info[b"files"])
        self.num_pieces = len(info[b"pieces"]) // 20
        self.total = total
        self.mode = mode
        self.peer_id = b"-HS0001-" + os.urandom(12)
        self.stats_path = stats_path
        self.lock = threading.Lock()
        self.counts = {"mode": mode, "connections": 0, "requests": 0, "blocks_sent": 0,
                       "garbage_sent": 0, "closed_by_remote": 0, "announces": 0,
                       "dropped_mid_piece": 0}

    def bump(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n
            if self.stats_path:
                tmp = self.stats_path + ".tmp"
                with open(tmp, "w") as f:
                    json.dump(self.counts, f)
                os.replace(tmp, self.stats_path)

    # ------------------------------------------------------------- tracker
    def announce_loop(self, port: int, ip: str) -> None:
        event = "started"
        while True:
            query = urllib.parse.urlencode({
                "info_hash": self.info_hash, "peer_id": self.peer_id, "port": port,
                "uploaded": 0, "downloaded": 0, "left": 0, "compact": 1, "ip": ip,
                **({"event": event} if event else {}),
            })
            interval = 2.0
            try:
                with urllib.request.urlopen(f"{self.announce}?{query}", timeout=5) as r:
                    reply = bencodepy.decode(r.read())
                interval = min(float(reply.get(b"interval", 2)), 5.0)
                event = None
                self.bump("announces")
            except Exception as e:  # the tracker may be down: keep trying
                print(f"hostile: announce failed: {e}", file=sys.stderr, flush=True)
            time.sleep(interval)

    # ---------------------------------------------------------------- peer
    def serve(self, sock: socket.socket) -> None:
        self.bump("connections")
        try:
            hs = _recv_exact(sock, 68)
            if hs[0] != 19 or hs[1:20] != PSTR or hs[28:48] != self.info_hash:
                return
            fast = bool(hs[27] & FAST_BIT)
            reserved = bytearray(8)
            if fast:
                reserved[7] |= FAST_BIT
            sock.sendall(bytes([19]) + PSTR + bytes(reserved) + self.info_hash + self.peer_id)
            if fast:
                sock.sendall(struct.pack(">IB", 1, HAVE_ALL))
            else:
                nbytes = (self.num_pieces + 7) // 8
                bits = bytearray(b"\xff" * nbytes)
                if self.num_pieces % 8:
                    bits[-1] = (0xFF << (8 - self.num_pieces % 8)) & 0xFF
                sock.sendall(struct.pack(">IB", 1 + nbytes, BITFIELD) + bytes(bits))
            sock.sendall(struct.pack(">IB", 1, UNCHOKE))
            if self.mode == "garbage":
                self.send_garbage(sock)
            self.message_loop(sock)
        except (OSError, ConnectionError):
            self.bump("closed_by_remote")
        finally:
            sock.close()

    def send_garbage(self, sock: socket.socket) -> None:
        """One kind of protocol violation per connection, then random bytes."""
        rng = random.Random()
        kind = rng.randrange(5)
        if kind == 0:  # absurd length prefix
            data = struct.pack(">I", 0x7FFFFFF0) + os.urandom(64)
        elif kind == 1:  # HAVE with a 7-byte payload
            data = struct.pack(">IB", 8, HAVE) + os.urandom(7)
        elif kind == 2:  # HAVE for a piece that does not exist
            data = struct.pack(">IBI", 5, HAVE, self.num_pieces + 1000)
        elif kind == 3:  # REQUEST beyond the end of the piece
            data = struct.pack(">IBIII", 13, REQUEST, 0, self.piece_length, 2**14)
        else:  # a second bitfield of the wrong size
            data = struct.pack(">IB", 4, BITFIELD) + b"\xff\xff\xff"
        sock.sendall(data + os.urandom(rng.randrange(1, 512)))
        self.bump("garbage_sent")

    def message_loop(self, sock: socket.socket) -> None:
        sock.settimeout(2.0)
        buf = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                sock.sendall(b"\x00\x00\x00\x00")  # keep-alive
                continue
            if not chunk:
                self.bump("closed_by_remote")
                return
            buf += chunk
            while len(buf) >= 4:
                (length,) = struct.unpack(">I", buf[:4])
                if len(buf) < 4 + length:
                    break
                body, buf = buf[4:4 + length], buf[4 + length:]
                if length and body[0] == REQUEST and length == 13:
                    index, begin, blen = struct.unpack(">III", body[1:])
                    self.bump("requests")
                    if self.mode == "wrong":
                        head = struct.pack(">IBII", 9 + blen, PIECE, index, begin)
                        sock.sendall(head + os.urandom(blen))
                        self.bump("blocks_sent")
                    elif self.mode == "drop":
                        head = struct.pack(">IBII", 9 + blen, PIECE, index, begin)
                        sock.sendall(head + os.urandom(blen // 2))
                        self.bump("dropped_mid_piece")
                        return


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed during handshake")
        data += chunk
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--torrent", required=True)
    ap.add_argument("--mode", required=True, choices=MODES)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ip", default="127.0.0.1", help="address to listen on and announce")
    ap.add_argument("--stats", help="JSON counters file")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    with open(args.torrent, "rb") as f:
        hostile = Hostile(f.read(), args.mode, args.stats)
    hostile.bump("announces", 0)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.ip, args.port))
    listener.listen(64)
    port = listener.getsockname()[1]
    print(f"hostile {args.mode} listening on {args.ip}:{port}", flush=True)
    threading.Thread(target=hostile.announce_loop, args=(port, args.ip), daemon=True).start()
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=hostile.serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
