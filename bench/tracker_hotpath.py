"""Micro-benchmark: CPU per announce inside our tracker (UDP and HTTP), one process.

Feeds pre-built announce datagrams (the same mix as
``bench/udp_announce_load.c``: 1000 torrents, 50 peer ids, numwant 50,
``left`` 0 one time in 4, regular updates) straight into
:class:`~murder.tracker.udp.UDPTrackerProtocol` with a transport that only
counts, after a warm-up that fills every swarm.  Prints microseconds per
announce for the core alone (``UDPTrackerCore.handle``) and through the
protocol, best of ``--repeat`` runs (CPU time of this process, so other
work on the machine does not count), and writes
``bench/results/tracker_hotpath.json``.  Also, side by side: the same
announces through a loopback socket with our port and with Twisted's
``udp.Port``; HTTP announces (``bench/tracker_wrk.lua``'s queries) through
``TrackerApp.handle`` with and without ``parse_announce_fast``; and the
counter update the UDP path does per announce against a prometheus_client
counter.  Session 6: the C extension's rows (``_udpfast.answer`` around the
same core, and the loopback socket drained by its C loop).  These figures
justify the hand-tuned code (recorded in
bench/README.md); the end-to-end comparison with opentracker is
``tracker_announce.py --fleet``.

    .venv/bin/python bench/tracker_hotpath.py [--announces 200000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "tracker_hotpath.json"


class _CountingTransport:
    """Takes replies and counts them (the socket write is not measured here)."""

    def __init__(self) -> None:
        self.sent = 0
        self.bytes = 0

    def write(self, data: bytes, addr: object = None) -> None:
        self.sent += 1
        self.bytes += len(data)


def http_announces(args: argparse.Namespace, count: int) -> dict[str, float]:
    """CPU per HTTP announce in TrackerApp.handle, with and without the fast parser."""
    from twisted.internet.task import Clock

    from murder.tracker import announce_codec
    from murder.tracker.app import TrackerApp
    from murder.tracker.store import PeerStore

    clock = Clock()
    clock.advance(1_000_000)
    app = TrackerApp(PeerStore(clock, max_torrents=100_000, max_peers=1_000_000,
                               rng=random.Random(1)))
    rng = random.Random(9)
    hashes = [rng.randbytes(20) for _ in range(args.torrents)]
    peers = [b"-WK0001-" + rng.randbytes(12) for _ in range(50)]

    def escaped(raw: bytes) -> str:
        return "".join("%%%02X" % b for b in raw)

    def target(ih: bytes, p: int, left: int) -> bytes:
        # As bench/tracker_wrk.lua builds them.
        return (f"/announce?info_hash={escaped(ih)}&peer_id=-WK0001-{escaped(peers[p][8:])}"
                f"&port={6000 + p}&uploaded=0&downloaded=0&left={left}&compact=1"
                "&numwant=50").encode()

    for ih in hashes:
        for p in range(50):
            app.handle(target(ih, p, 1000), "127.0.0.1")
    load = [target(hashes[rng.randrange(len(hashes))], rng.randrange(50),
                   0 if rng.randrange(4) == 0 else 1000) for _ in range(count)]

    def run() -> float:
        handle = app.handle
        start = time.process_time()
        for t in load:
            handle(t, "127.0.0.1")
        return time.process_time() - start

    fast = min(run() for _ in range(args.repeat)) / count * 1e6
    real = getattr(announce_codec, "parse_announce_fast", None)
    if real is None:
        return {"announces": count, "fast_us": float("nan"), "generic_us": fast}
    announce_codec.parse_announce_fast = lambda *a, **k: None  # type: ignore[assignment]
    try:
        generic = min(run() for _ in range(args.repeat)) / count * 1e6
    finally:
        announce_codec.parse_announce_fast = real
    return {"announces": count, "fast_us": fast, "generic_us": generic}


def wakeup_costs(core: object, datagrams: list[bytes]) -> dict[str, float]:
    """CPU per datagram when each reactor wakeup finds 1, 4, 16 or 64 queued.

    A real reactor iteration (``reactor.iterate(0)``: epoll, Twisted's
    dispatch, our ``doRead`` until EAGAIN) over a loopback socket.
    """
    import socket

    from twisted.internet import reactor

    from murder.tracker import udp as tracker_udp

    from twisted.internet import udp

    port_class = getattr(tracker_udp, "TrackerUDPPort", udp.Port)
    port = port_class(0, tracker_udp.UDPTrackerProtocol(core), "127.0.0.1", reactor=reactor)
    port.startListening()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.setblocking(False)
    target = ("127.0.0.1", port.getHost().port)

    def drain() -> None:
        while True:
            try:
                client.recv(4096)
            except BlockingIOError:
                return

    out = {}
    try:
        for batch in (1, 4, 16, 64):
            spent, n = 0.0, 0
            for r in range(6000 // batch):
                for data in datagrams[r * batch % 1000:][:batch]:
                    client.sendto(data, target)
                start = time.process_time()
                reactor.iterate(0)
                spent += time.process_time() - start
                n += batch
                drain()
            out[f"batch_{batch}_us"] = spent / n * 1e6
    finally:
        port.stopListening()
        client.close()
    return out


def counter_costs(repeat: int) -> dict[str, float]:
    """The UDP path's per-announce counter update against prometheus_client's."""
    import timeit

    from prometheus_client import CollectorRegistry, Counter

    counter = Counter("x", "x", ["transport", "event", "result"], registry=CollectorRegistry())
    child = counter.labels("udp", "update", "ok")
    counts: dict[tuple[str, str, str], int] = {}
    keys = {"": ("udp", "update", "ok")}

    def dict_update() -> None:
        k = keys[""]
        counts[k] = counts.get(k, 0) + 1

    def labelled() -> None:
        counter.labels("udp", "update", "ok").inc()

    def best(fn: object) -> float:
        n = 200_000
        return min(timeit.repeat(fn, number=n, repeat=repeat,  # type: ignore[arg-type]
                                 timer=time.process_time)) / n * 1e6

    return {"dict_us": best(dict_update), "child_us": best(child.inc),
            "labels_us": best(labelled)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--announces", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--torrents", type=int, default=1000)
    parser.add_argument("--profile", action="store_true", help="cProfile one run instead")
    parser.add_argument("--quick", action="store_true",
                        help="only the UDP rows of our code (core, protocol, our port), for "
                             "before/after runs of one change")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to save the figures")
    args = parser.parse_args()

    from twisted.internet.task import Clock

    from murder.tracker import udpcodec
    from murder.tracker.app import TrackerApp
    from murder.tracker.store import PeerStore
    from murder.tracker.udp import UDPTrackerCore, UDPTrackerProtocol

    clock = Clock()
    clock.advance(1_000_000)
    store = PeerStore(clock, max_torrents=100_000, max_peers=1_000_000,
                      rng=random.Random(1))
    core = UDPTrackerCore(TrackerApp(store), secret=b"k" * 32)
    proto = UDPTrackerProtocol(core)
    transport = _CountingTransport()
    proto.transport = transport  # type: ignore[assignment]
    rng = random.Random(7)
    hashes = [rng.randbytes(20) for _ in range(args.torrents)]
    peers = [b"-UL0001-" + rng.randbytes(12) for _ in range(50)]
    host, addr = "127.0.0.1", ("127.0.0.1", 40000)
    cid = core.connection_id(host)

    def datagram(i: int, ih: bytes, peer: int) -> bytes:
        left = 0 if rng.randrange(4) == 0 else 1000
        return udpcodec.announce_request(cid, i & 0xFFFFFFFF, ih, peers[peer], 0, left, 0, "",
                                         peer, 50, 6000 + peer)

    # Warm-up: every peer in every swarm, so the measured announces are updates.
    for t, ih in enumerate(hashes):
        for p in range(50):
            core.handle(datagram(t * 50 + p, ih, p), host, 40000)
    load = [datagram(i, hashes[rng.randrange(len(hashes))], rng.randrange(50))
            for i in range(args.announces)]

    def run_core() -> float:
        handle = core.handle
        start = time.process_time()
        for data in load:
            handle(data, host, 40000)
        return time.process_time() - start

    def run_protocol() -> float:
        received = proto.datagramReceived
        start = time.process_time()
        for data in load:
            received(data, addr)
        return time.process_time() - start

    try:
        from murder.tracker import _udpfast
    except ImportError:  # not built (or an older checkout): C rows skipped
        _udpfast = None  # type: ignore[assignment]

    def run_c_answer() -> float:
        """Session 6: the C checks and packing around the same core, no socket."""
        answer = _udpfast.answer
        start = time.process_time()
        for data in load:
            answer(core, data, host, 40000)
        return time.process_time() - start

    def run_socket(port_class: type, fast: object = None) -> float:
        """Through a real loopback socket: datagrams queued, then one doRead."""
        import socket

        from twisted.internet import reactor

        port = port_class(0, UDPTrackerProtocol(core), "127.0.0.1", reactor=reactor)
        if fast is not None:
            port.fast = fast  # session 6: the C drain loop
        port.startListening()  # registers with the reactor, which never runs here
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.bind(("127.0.0.1", 0))
        client.setblocking(False)
        target = ("127.0.0.1", port.getHost().port)
        client_host = client.getsockname()[0]
        assert client_host == host
        spent = 0.0
        done = 0
        try:
            while done < len(load):
                batch = load[done:done + 100]
                for data in batch:
                    client.sendto(data, target)
                start = time.process_time()
                port.doRead()
                spent += time.process_time() - start
                done += len(batch)
                while True:
                    try:
                        client.recv(4096)
                    except BlockingIOError:
                        break
        finally:
            port.stopListening()
            client.close()
        return spent

    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        run_protocol()
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return 0
    from twisted.internet import udp

    from murder.tracker import udp as tracker_udp

    # Older code (PYTHONPATH=<an export of an earlier commit>) may lack the
    # port or the fast parser: their rows are then skipped.
    ours = getattr(tracker_udp, "TrackerUDPPort", None)
    n = len(load)
    core_us = min(run_core() for _ in range(args.repeat)) / n * 1e6
    proto_us = min(run_protocol() for _ in range(args.repeat)) / n * 1e6
    assert transport.sent >= n, "every announce must be answered"
    answered = core.answered
    ours_us = (min(run_socket(ours) for _ in range(args.repeat)) / n * 1e6
               if ours is not None else float("nan"))
    c_answer_us = c_socket_us = float("nan")
    if _udpfast is not None:
        c_answer_us = min(run_c_answer() for _ in range(args.repeat)) / n * 1e6
        c_socket_us = min(run_socket(ours, _udpfast) for _ in range(args.repeat)) / n * 1e6
    if args.quick:
        print(f"{n:,} announces x {args.repeat}; CPU time per announce, best run: "
              f"core {core_us:.2f} us, protocol {proto_us:.2f} us, "
              f"loopback socket + TrackerUDPPort.doRead {ours_us:.2f} us; "
              f"C: answer {c_answer_us:.2f} us, loopback socket + C drain {c_socket_us:.2f} us")
        return 0
    twisted_us = min(run_socket(udp.Port) for _ in range(args.repeat)) / n * 1e6
    runs = (2 if ours is not None else 1) + (2 if _udpfast is not None else 0)
    assert core.answered - answered >= runs * n * args.repeat * 0.99, "datagrams were lost"
    http = http_announces(args, min(n, 50_000))
    wakeups = wakeup_costs(core, load[:2000])
    counters = counter_costs(args.repeat)
    print(f"{n:,} announces x {args.repeat}, {args.torrents} torrents x 50 peers, numwant 50; "
          "CPU time per announce, best run")
    print(f"  UDPTrackerCore.handle                    {core_us:6.2f} us")
    print(f"  UDPTrackerProtocol.datagramReceived      {proto_us:6.2f} us")
    print(f"  loopback socket, TrackerUDPPort.doRead   {ours_us:6.2f} us  (recvfrom, sendto)")
    print(f"  loopback socket, twisted udp.Port.doRead {twisted_us:6.2f} us")
    print(f"  C: _udpfast.answer (checks, pack; core) {c_answer_us:6.2f} us")
    print(f"  loopback socket, C drain (_udpfast)      {c_socket_us:6.2f} us  (recvfrom, sendmsg)")
    print("  per datagram when a reactor wakeup finds  "
          + ", ".join(f"{k.split('_')[1]}: {v:.2f} us" for k, v in wakeups.items()))
    print(f"  HTTP TrackerApp.handle, fast path        {http['fast_us']:6.2f} us")
    print(f"  HTTP TrackerApp.handle, generic parser   {http['generic_us']:6.2f} us")
    print(f"  UDP counter update (dict, as udp.py)     {counters['dict_us']:6.3f} us")
    print(f"  prometheus_client labelled child .inc()  {counters['child_us']:6.3f} us")
    print(f"  prometheus_client .labels(...).inc()     {counters['labels_us']:6.3f} us")
    results = {"http": http, "counters": counters, "wakeups": wakeups,
               "announces": n, "repeat": args.repeat, "torrents": args.torrents,
               "core_us": core_us, "protocol_us": proto_us, "socket_us": ours_us,
               "socket_twisted_port_us": twisted_us, "c_answer_us": c_answer_us,
               "c_socket_us": c_socket_us, "python": sys.version.split()[0],
               "loadavg": os.getloadavg()[0]}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
