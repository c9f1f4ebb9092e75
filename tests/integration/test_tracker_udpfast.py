"""The C drain loop of the UDP tracker (murder/tracker/_udpfast.c) on real sockets.

Unit tests drive the C checks and packing without a socket
(``_udpfast.answer``); here its ``recvfrom``/``sendmsg`` loop reads real
datagrams from 127.0.0.1 (and ::1 when the machine has it), in-process, and
a real ``murder tracker`` says at start which path it answers with.  Every
wait is bounded; sockets are closed and processes stopped by PID.
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from conftest import stop_process
from murder.tracker import udpcodec
from murder.tracker.app import TrackerApp
from murder.tracker.store import PeerStore
from murder.tracker.udp import TrackerUDPPort, UDPTrackerCore, UDPTrackerProtocol
from murder.testing import fuzz_datagram
from test_tracker_fleet import free_udp_port

try:
    from murder.tracker import _udpfast
except ImportError:
    _udpfast = None  # type: ignore[assignment]

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(_udpfast is None, reason="murder.tracker._udpfast is not built "
                                                          "(no C compiler at install)")]

IH = bytes(range(20))


class Dropped:
    """Stands for UDPTrackerProtocol.dropped: counts replies the kernel refused."""

    def __init__(self) -> None:
        self.count = 0

    def dropped(self) -> None:
        self.count += 1


def make_core(**store_kw: Any) -> UDPTrackerCore:
    store = PeerStore(Clock(), rng=random.Random(1), **store_kw)
    return UDPTrackerCore(TrackerApp(store), secret=b"k" * 32, error_rate=1e9, error_burst=1e9)


def udp_socket(family: int = socket.AF_INET, host: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((host, 0))
    return s


def drain_all(server: socket.socket, core: UDPTrackerCore, expected: int,
              protocol: Any = None, timeout: float = 5.0) -> int:
    """Drain until ``expected`` datagrams were read (bounded in time)."""
    protocol = protocol or Dropped()
    read = 0
    deadline = time.monotonic() + timeout
    while read < expected and time.monotonic() < deadline:
        n, err = _udpfast.drain(server.fileno(), 1000, 8192, core, protocol)
        assert err == 0
        read += n
    return read


def receive(client: socket.socket, count: int = 1) -> list[bytes]:
    client.settimeout(5)
    return [client.recv(8192) for _ in range(count)]


class DrainTests:
    """drain() answers each queued datagram to its own sender and stops when empty."""

    def test_answers_every_sender_then_announces_in_c(self):
        """Connects from three sockets are answered to each; their announces get the
        other two as peers; the drain returns the count read and no error."""
        core = make_core()
        with udp_socket() as server, udp_socket() as a, udp_socket() as b, udp_socket() as c:
            server.setblocking(False)
            where = server.getsockname()
            clients = [a, b, c]
            for n, client in enumerate(clients):
                client.sendto(udpcodec.connect_request(n), where)
            assert drain_all(server, core, 3) == 3
            assert _udpfast.drain(server.fileno(), 1000, 8192, core, Dropped()) == (0, 0)
            ids = [udpcodec.parse_reply(receive(cl)[0]) for cl in clients]
            assert [r.transaction for r in ids] == [0, 1, 2]
            for rounds in range(2):  # the first fills the id memo, the second is all C
                for n, (client, reply) in enumerate(zip(clients, ids)):
                    client.sendto(udpcodec.announce_request(
                        reply.connection_id, 10 + n, IH, b"%020d" % n, 0, n, 0, "started",
                        0, -1, 7000 + n), where)
                    assert drain_all(server, core, 1) == 1
                answers = [udpcodec.parse_reply(receive(cl)[0]) for cl in clients]
            last = answers[2]
            assert isinstance(last, udpcodec.AnnounceReply)
            assert (last.transaction, last.seeders, last.leechers) == (12, 1, 2)
            assert sorted(last.peers[i:i + 6] for i in range(0, len(last.peers), 6)) == [
                socket.inet_aton("127.0.0.1") + p.to_bytes(2, "big") for p in (7000, 7001)]
            assert core.answered == 9

    def test_batch_bounds_one_drain(self):
        """At most ``batch`` datagrams per call; the rest stay queued for the next."""
        core = make_core()
        with udp_socket() as server, udp_socket() as client:
            server.setblocking(False)
            for n in range(5):
                client.sendto(udpcodec.connect_request(n), server.getsockname())
            assert _udpfast.drain(server.fileno(), 2, 8192, core, Dropped()) == (2, 0)
            assert drain_all(server, core, 3) == 3
            assert len(receive(client, 5)) == 5

    def test_port_doread_uses_c_and_counts_for_metrics(self):
        """TrackerUDPPort with ``fast`` set answers through drain() and counts the
        wakeup and its datagrams for /metrics, as the Python loop does."""
        core = make_core()
        with udp_socket() as server, udp_socket() as client:
            server.setblocking(False)
            port = TrackerUDPPort(0, UDPTrackerProtocol(core), "127.0.0.1", reactor=Clock())
            port.socket = server
            port.protocol.transport = port
            port.fast = _udpfast
            for n in range(4):
                client.sendto(udpcodec.connect_request(n), server.getsockname())
            client.sendto(b"junk", server.getsockname())
            port.doRead()
            assert len(receive(client, 4)) == 4
            metrics = core.app.metrics
            assert (metrics.udp_reads, metrics.udp_datagrams) == (1, 5)

    def test_ipv6_sender_answered_through_python(self):
        """An IPv6 sender's datagrams take the Python path and get IPv6 replies sent
        back to its address."""
        if not socket.has_ipv6:
            pytest.skip("no IPv6")
        try:
            server = udp_socket(socket.AF_INET6, "::1")
        except OSError as e:
            pytest.skip(f"no ::1 here: {e}")
        core = make_core()
        with server, udp_socket(socket.AF_INET6, "::1") as client:
            server.setblocking(False)
            where = server.getsockname()
            client.sendto(udpcodec.connect_request(4), where)
            assert drain_all(server, core, 1) == 1
            cid = udpcodec.parse_reply(receive(client)[0]).connection_id
            for n in range(2):
                client.sendto(udpcodec.announce_request(cid, n, IH, b"%020d" % n, 0, 1, 0, "",
                                                        0, -1, 6000 + n), where)
                assert drain_all(server, core, 1) == 1
                reply = udpcodec.parse_reply(receive(client)[0])
            assert reply.peers == socket.inet_pton(socket.AF_INET6, "::1") + \
                (6000).to_bytes(2, "big")


class DrainFuzzTests:
    """>= 10,000 random and mutated datagrams through a real socket into drain():
    nothing escapes, nothing is logged as a bug, valid requests are all answered."""

    def test_fuzz_through_the_socket(self):
        """12,000 datagrams in chunks of 100 (the socket buffer holds them), each
        chunk followed by a connect and an announce that must be answered."""
        core = make_core(max_torrents=64, max_peers=500)
        rng = random.Random(6)
        bugs: list[dict] = []

        def observe(event: dict) -> None:
            if event.get("log_failure") is not None:
                bugs.append(event)

        globalLogPublisher.addObserver(observe)
        try:
            with udp_socket() as server, udp_socket() as noise, udp_socket() as good:
                server.setblocking(False)
                where = server.getsockname()
                cid = core.connection_id("127.0.0.1")
                seeds = [udpcodec.connect_request(1),
                         udpcodec.announce_request(cid, 2, IH, b"p" * 20, 0, 5, 0, "started",
                                                   1, 50, 80),
                         udpcodec.scrape_request(cid, 3, [IH, b"\x01" * 20])]
                sent = 0
                for chunk in range(120):
                    for _ in range(100):
                        data = fuzz_datagram(rng, seeds, cid, chunk, IH)
                        noise.sendto(data, where)
                        sent += 1
                    good.sendto(udpcodec.connect_request(chunk), where)
                    good.sendto(udpcodec.announce_request(cid, chunk, IH, b"g" * 20, 0, 1, 0,
                                                          "", 0, 5, 999), where)
                    assert drain_all(server, core, 102) == 102
                    replies = [udpcodec.parse_reply(d) for d in receive(good, 2)]
                    assert [type(r) for r in replies] == [udpcodec.ConnectReply,
                                                          udpcodec.AnnounceReply], replies
                    if chunk % 10 == 9:
                        core.clock.advance(7)
                        cid = core.connection_id("127.0.0.1")
                noise.setblocking(False)
                while True:  # empty the noise socket's replies (bounded by the count)
                    try:
                        noise.recv(8192)
                    except BlockingIOError:
                        break
        finally:
            globalLogPublisher.removeObserver(observe)
        assert sent == 12_000 and bugs == []
        store = core.store
        assert core.dropped > 1000 and core.answered > 240
        assert store.peer_count <= 500 and len(store.torrents) <= 64
        assert store.peer_count == sum(len(t.peers) for t in store.torrents.values())


class TrackerProcessTests:
    """A real ``murder tracker`` says which UDP path answers, and answers on it."""

    @pytest.mark.parametrize("extra, path", [((), "C (murder.tracker._udpfast)"),
                                             (("--no-udp-fastpath",),
                                              "Python (--no-udp-fastpath)")])
    def test_start_line_names_the_path_and_it_answers(self, tmp_path: Path, extra, path):
        """The start log names the path (C unless --no-udp-fastpath); a connect and two
        announces over real UDP are answered on it."""
        port = free_udp_port()
        murder = str(Path(sys.executable).parent / "murder")
        log_path = tmp_path / "tracker.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([murder, "tracker", "--port", str(port), "--bind",
                                     "127.0.0.1", "--dfile", "", "--udp-port", str(port),
                                     *extra], stdout=log, stderr=subprocess.STDOUT,
                                    cwd=tmp_path)
        try:
            deadline = time.monotonic() + 20
            said = ""
            while "answered in" not in said and time.monotonic() < deadline:
                assert proc.poll() is None, log_path.read_text()
                time.sleep(0.05)
                said = log_path.read_text(errors="replace")
            assert f"answered in {path}" in said, said
            with udp_socket() as client:
                client.sendto(udpcodec.connect_request(1), ("127.0.0.1", port))
                cid = udpcodec.parse_reply(receive(client)[0]).connection_id
                for n in range(2):
                    client.sendto(udpcodec.announce_request(cid, n, IH, b"%020d" % n, 0, n, 0,
                                                            "started", 0, -1, 6000 + n),
                                  ("127.0.0.1", port))
                    reply = udpcodec.parse_reply(receive(client)[0])
                assert isinstance(reply, udpcodec.AnnounceReply) and reply.seeders == 1
                assert reply.peers == socket.inet_aton("127.0.0.1") + (6000).to_bytes(2, "big")
        finally:
            stop_process(proc)
