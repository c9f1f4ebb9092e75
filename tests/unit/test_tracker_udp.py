"""BEP 15 in memory: the datagram codec, the tracker core and protocol, the peer's
UDP client and its retry schedule, and a fuzz run of >= 10,000 datagrams."""

from __future__ import annotations

import random
import socket
import struct
import sys
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from murder.errors import AnnounceError, TrackerUnreachable, UDPCodecError
from murder.peer.announcer import AnnounceParams, AnnounceReply, Announcer
from murder.peer.udptracker import UDPTimeout, UDPTrackerClient, parse_udp_url
from murder.tracker import udpcodec
from murder.tracker.auth import Authoriser
from murder.tracker.store import PeerStore
from murder.tracker.udp import UDPTrackerCore, UDPTrackerProtocol
from murder.tracker.app import TrackerApp
from murder.testing import fuzz_datagram

try:
    from murder.tracker import _udpfast
except ImportError:  # built without a C compiler: only the pure-Python path
    _udpfast = None  # type: ignore[assignment]

IH = bytes(range(20))
V4 = "10.0.0.1"

#: Which path answers in the tests of the core: "python" (UDPTrackerCore.handle)
#: or "c" (murder.tracker._udpfast, which hands Python what it does not take).
_PATH = "python"


class CPath:
    """A UDPTrackerCore whose ``handle`` is the C extension's: the same checks,
    calls and packing as its drain loop, without a socket."""

    def __init__(self, core: UDPTrackerCore) -> None:
        object.__setattr__(self, "core", core)

    def handle(self, data: bytes, host: str, port: int) -> bytes | None:
        return _udpfast.answer(self.core, data, host, port)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.core, name)


def on_path(core: UDPTrackerCore) -> Any:
    """``core`` answering through the path under test (see ``both_paths``)."""
    return CPath(core) if _PATH == "c" else core


@pytest.fixture(params=["python", "c"])
def both_paths(request, monkeypatch):
    """Runs a test once with the pure-Python core and once through the C path."""
    if request.param == "c" and _udpfast is None:
        pytest.skip("murder.tracker._udpfast is not built (no C compiler at install)")
    monkeypatch.setattr(sys.modules[__name__], "_PATH", request.param)
    return request.param


def make_core(clock: Clock | None = None, **kw) -> UDPTrackerCore:
    store = PeerStore(clock or Clock(), rng=random.Random(1))
    return on_path(UDPTrackerCore(TrackerApp(store, **kw), secret=b"k" * 32))


def connect(core: UDPTrackerCore, host: str = V4) -> int:
    reply = udpcodec.parse_reply(core.handle(udpcodec.connect_request(7), host, 6881))
    assert isinstance(reply, udpcodec.ConnectReply) and reply.transaction == 7
    return reply.connection_id


def announce(core: UDPTrackerCore, n: int, host: str = V4, left: int = 10,
             event: str = "started", num_want: int = -1, cid: int | None = None) -> Any:
    cid = connect(core, host) if cid is None else cid
    data = udpcodec.announce_request(cid, 100 + n, IH, b"%020d" % n, 0, left, 0, event,
                                     n, num_want, 6000 + n)
    raw = core.handle(data, host, 6881)
    return None if raw is None else udpcodec.parse_reply(raw)


def peers4(blob: bytes) -> list[tuple[str, int]]:
    return [(socket.inet_ntoa(blob[i:i + 4]), struct.unpack(">H", blob[i + 4:i + 6])[0])
            for i in range(0, len(blob), 6)]


class UDPCodecTests:
    """Datagrams are built and parsed exactly as BEP 15 lays them out."""

    def test_connect_layout(self):
        """A connect request is magic, action 0, transaction: 16 bytes."""
        assert udpcodec.connect_request(5) == bytes.fromhex("0000041727101980" "00000000"
                                                            "00000005")
        assert udpcodec.parse_request(udpcodec.connect_request(5)) == udpcodec.ConnectRequest(5)

    def test_announce_roundtrip(self):
        """An announce is 98 bytes and parses back field by field; BEP 41 options are skipped."""
        data = udpcodec.announce_request(1, 2, IH, b"P" * 20, 3, 4, 5, "completed", 6, 7, 8,
                                         ip=0x0A000001)
        assert len(data) == 98
        req = udpcodec.parse_request(data + b"\x02\x05/path")
        assert req == udpcodec.UDPAnnounce(1, 2, IH, b"P" * 20, 3, 4, 5, "completed",
                                           0x0A000001, 6, 7, 8)

    def test_replies_roundtrip(self):
        """Connect, announce, scrape and error replies parse back."""
        assert udpcodec.parse_reply(udpcodec.connect_reply(3, 99)) == udpcodec.ConnectReply(3, 99)
        assert udpcodec.parse_reply(udpcodec.announce_reply(4, 15, 2, 1, b"x" * 6)) == \
            udpcodec.AnnounceReply(4, 15, 2, 1, b"x" * 6)
        assert udpcodec.parse_reply(udpcodec.scrape_reply(5, [(1, 2, 3)])) == \
            udpcodec.ScrapeReply(5, ((1, 2, 3),))
        assert udpcodec.parse_reply(udpcodec.error_reply(6, "nope")) == \
            udpcodec.ErrorReply(6, "nope")

    @pytest.mark.parametrize("data, reason, transaction", [
        (b"", "datagram shorter than 16 bytes", None),
        (b"\x00" * 15, "datagram shorter than 16 bytes", None),
        (struct.pack(">QII", 1, 0, 9), "connect without the BEP 15 protocol id", None),
        (struct.pack(">QII", 1, 1, 9) + b"x" * 10, "announce of 26 bytes (needs 98)", 9),
        (struct.pack(">QII", 1, 2, 9), "scrape needs whole 20-byte info hashes", 9),
        (struct.pack(">QII", 1, 2, 9) + b"x" * 21, "scrape needs whole 20-byte info hashes", 9),
        (struct.pack(">QII", 1, 2, 9) + b"x" * 20 * 75, "more than 74 info hashes", 9),
        (struct.pack(">QII", 1, 7, 9), "unknown action 7", 9),
        (udpcodec.announce_request(1, 9, IH, IH, 0, 0, 0, "", 0, 0, 1)[:80]
         + struct.pack(">I", 4) + b"\x00" * 14, "invalid event 4", 9),
    ])
    def test_malformed_requests(self, data, reason, transaction):
        """Malformed requests raise UDPCodecError with the reason and, when readable,
        the transaction id to address an error to."""
        with pytest.raises(UDPCodecError) as e:
            udpcodec.parse_request(data)
        assert e.value.reason == reason and e.value.transaction == transaction


@pytest.mark.usefixtures("both_paths")
class UDPTrackerCoreTests:
    """The core answers BEP 15 requests from the shared store (both paths)."""

    def test_connection_id_valid_one_to_two_minutes(self):
        """An id is accepted for at least 60 s and at most 120 s, only from its host."""
        clock = Clock()
        core = make_core(clock)
        cid = connect(core)
        assert core.valid(cid, V4) and not core.valid(cid, "10.0.0.2")
        clock.advance(119.9)
        assert core.valid(cid, V4)
        clock.advance(0.1)
        assert not core.valid(cid, V4)
        clock.advance(59.9)  # an id from late in a bucket still lives 60 s
        late = connect(core)
        clock.advance(60)
        assert core.valid(late, V4)
        other = on_path(UDPTrackerCore(core.app, secret=b"j" * 32))
        assert not other.valid(late, V4)  # keyed: another secret, another id

    def test_announce_gets_other_peers(self):
        """Announces register peers; each gets the others (not itself) and the counts."""
        core = make_core()
        announce(core, 1, left=0, host="10.0.0.1")
        reply = announce(core, 2, host="10.0.0.2")
        assert isinstance(reply, udpcodec.AnnounceReply)
        assert (reply.transaction, reply.interval, reply.seeders, reply.leechers) == \
            (102, 15, 1, 1)
        assert peers4(reply.peers) == [("10.0.0.1", 6001)]

    def test_ipv6_sender_gets_ipv6_peers(self):
        """A sender over IPv6 gets 18-byte IPv6 peers, an IPv4 one 6-byte IPv4 peers;
        a v4-mapped sender counts as IPv4."""
        core = make_core()
        announce(core, 1, host="fd00::1")
        announce(core, 2, host="10.0.0.2")
        six = announce(core, 3, host="fd00::3")
        assert six.peers == socket.inet_pton(socket.AF_INET6, "fd00::1") + struct.pack(">H", 6001)
        mapped = announce(core, 4, host="::ffff:10.0.0.4")
        assert sorted(peers4(mapped.peers)) == [("10.0.0.2", 6002)]

    def test_shares_the_store_with_http(self):
        """A peer announced over HTTP is handed to a UDP peer, and vice versa."""
        core = make_core()
        query = ("info_hash=" + "".join(f"%{b:02x}" for b in IH)
                 + "&peer_id=" + "h" * 20 + "&port=7000&left=0&compact=1")
        assert core.app.handle(f"/announce?{query}".encode(), "10.9.9.9").code == 200
        reply = announce(core, 1)
        assert peers4(reply.peers) == [("10.9.9.9", 7000)] and reply.seeders == 1
        http = core.app.handle(f"/announce?{query}".encode(), "10.9.9.9")
        assert b"5:peers6:" + socket.inet_aton(V4) + struct.pack(">H", 6001) in http.body

    def test_numwant_stopped_and_trusted_ip(self):
        """num_want caps the peers; stopped removes the peer; ip= only from trusted hosts."""
        core = make_core()
        for n in range(1, 6):
            announce(core, n, host=f"10.0.0.{n}")
        assert len(announce(core, 9, host="10.0.0.9", num_want=2).peers) == 12
        assert announce(core, 9, host="10.0.0.9", event="stopped").peers == b""
        assert core.store.peer_count == 5
        cid = connect(core, "8.8.8.8")
        data = udpcodec.announce_request(cid, 1, IH, b"x" * 20, 0, 1, 0, "", 0, -1, 7,
                                         ip=0x0A0A0A0A)
        core.handle(data, "8.8.8.8", 1)
        assert core.store.torrents[IH].peers[b"x" * 20].ip == "8.8.8.8"
        data = udpcodec.announce_request(connect(core), 1, IH, b"y" * 20, 0, 1, 0, "", 0, -1, 7,
                                         ip=0x0A0A0A0A)
        core.handle(data, V4, 1)
        assert core.store.torrents[IH].peers[b"y" * 20].ip == "10.10.10.10"

    def test_scrape(self):
        """Scrape answers seeders, completed, leechers per hash in order; unknown: zeros."""
        core = make_core()
        announce(core, 1, left=0)
        announce(core, 2, left=0, event="completed")
        announce(core, 3)
        data = udpcodec.scrape_request(connect(core), 5, [IH, b"\xee" * 20])
        reply = udpcodec.parse_reply(core.handle(data, V4, 1))
        assert reply == udpcodec.ScrapeReply(5, ((2, 1, 1), (0, 0, 0)))

    def test_errors(self):
        """Bad connection ids, ports and refusals of the store get an error datagram."""
        core = make_core()
        data = udpcodec.announce_request(12345, 77, IH, IH, 0, 0, 0, "", 0, -1, 1)
        assert core.handle(data, V4, 1) == udpcodec.error_reply(
            77, "connection id expired or invalid")
        assert announce(core, 0, cid=connect(core)) is not None
        bad_port = udpcodec.announce_request(connect(core), 8, IH, IH, 0, 0, 0, "", 0, -1, 0)
        assert udpcodec.parse_reply(core.handle(bad_port, V4, 1)).message == \
            "invalid port: must be 1-65535"
        core.store.set_allowed({})
        assert announce(core, 1).message == "torrent not allowed on this tracker"

    def test_no_reply_without_transaction(self):
        """Runts and connects without the magic get no reply at all."""
        core = make_core()
        assert core.handle(b"hello", V4, 1) is None
        assert core.handle(struct.pack(">QII", 5, 0, 1), V4, 1) is None

    def test_error_replies_rate_limited(self):
        """Error replies stop after the burst and resume as the bucket refills."""
        clock = Clock()
        store = PeerStore(clock)
        core = on_path(UDPTrackerCore(TrackerApp(store), error_rate=10, error_burst=20))
        bad = udpcodec.announce_request(1, 1, IH, IH, 0, 0, 0, "", 0, -1, 1)
        answers = [core.handle(bad, V4, 1) for _ in range(100)]
        assert sum(a is not None for a in answers) == 20
        clock.advance(1)
        answers = [core.handle(bad, V4, 1) for _ in range(100)]
        assert sum(a is not None for a in answers) == 10
        assert core.errors.refused == 170
        # Valid requests are never rate limited.
        assert isinstance(announce(core, 1), udpcodec.AnnounceReply)

    def test_auth_tracker_refuses_udp(self):
        """With announce authorisation on, UDP announces get an error (no token in BEP 15)."""
        store = PeerStore(Clock())
        core = on_path(UDPTrackerCore(TrackerApp(store, auth=Authoriser([b"s" * 32]))))
        reply = announce(core, 1)
        assert isinstance(reply, udpcodec.ErrorReply) and "auth token" in reply.message
        assert store.peer_count == 0


class HandleSpy(UDPTrackerCore):
    """A core counting the datagrams given to its pure-Python ``handle``."""

    handled = 0

    def handle(self, data: bytes, host: str, port: int) -> bytes | None:
        self.handled += 1
        return super().handle(data, host, port)


@pytest.mark.skipif(_udpfast is None, reason="murder.tracker._udpfast is not built")
class UDPFastPathTests:
    """The C path answers the common announce itself and hands Python the rest."""

    def core(self, **kw) -> HandleSpy:
        return HandleSpy(TrackerApp(PeerStore(Clock(), rng=random.Random(1)), **kw),
                         secret=b"k" * 32)

    def request(self, core: UDPTrackerCore, host: str = V4, **fields) -> bytes:
        cid = udpcodec.parse_reply(_udpfast.answer(core, udpcodec.connect_request(1), host,
                                                   1)).connection_id
        args = dict(info_hash=IH, peer_id=b"p" * 20, downloaded=0, left=5, uploaded=0,
                    event="", key=7, num_want=-1, port=6881)
        args.update(fields)
        return udpcodec.announce_request(cid, 9, **args)

    def test_common_announce_never_reaches_handle(self):
        """A valid IPv4 announce with a connection id in the core's memo is answered
        in C (the store updated through _apply), with the reply Python would send.
        The host's first announce fills the memo in Python."""
        core = self.core()
        before = core.handled
        _udpfast.answer(core, self.request(core, event="started"), V4, 1)
        assert core.handled == before + 2  # the connect and the memo's first fill
        for event in ("", "completed", "", "stopped"):
            data = self.request(core, event=event)
            handled = core.handled
            reply = _udpfast.answer(core, data, V4, 1)
            assert core.handled == handled
            leechers = 0 if event == "stopped" else 1
            assert udpcodec.parse_reply(reply) == udpcodec.AnnounceReply(9, 15, leechers, 0,
                                                                         b"")
        assert core.store.torrents[IH].downloaded == 1 and core.store.peer_count == 0
        assert core.answered == 10
        assert core.app.metrics.announces[("udp", "completed", "ok")] == 1

    @pytest.mark.parametrize("host, fields, app", [
        ("fd00::1", {}, {}),                          # IPv6 sender
        ("::ffff:10.0.0.1", {}, {}),                  # v4-mapped: Python maps it
        (V4, {"ip": 0x0A000009}, {}),                 # ip field: trusted networks
        (V4, {"port": 0}, {}),                        # refused
        (V4, {}, {"auth": Authoriser([b"s" * 32])}),  # refused: needs a token
    ])
    def test_unusual_announces_go_to_python(self, host, fields, app):
        """IPv6 senders, the ip field and refusals are left to the pure-Python path,
        whose reply is sent as is."""
        core = self.core(**app)
        data = self.request(core, host=host, **fields)
        handled = core.handled
        reply = _udpfast.answer(core, data, host, 1)
        assert core.handled == handled + 1 and reply is not None

    def test_unknown_event_and_stale_id_go_to_python(self):
        """An event number past 3 and an id from a bucket that ended are Python's."""
        core = self.core()
        data = bytearray(self.request(core))
        data[80:84] = (9).to_bytes(4, "big")
        handled = core.handled
        assert udpcodec.parse_reply(_udpfast.answer(core, bytes(data), V4, 1)).message == \
            "invalid event 9"
        assert core.handled == handled + 1
        data = self.request(core)
        core.clock.advance(120)
        handled = core.handled
        reply = udpcodec.parse_reply(_udpfast.answer(core, data, V4, 1))
        assert reply.message == "connection id expired or invalid"
        assert core.handled == handled + 1

    def test_bug_in_apply_is_counted_not_raised(self):
        """An exception in the store while answering in C is counted and logged as a
        bug like Python's path does, with no reply."""
        core = self.core()
        _udpfast.answer(core, self.request(core), V4, 1)  # fills the id memo
        data = self.request(core, event="started")  # a new announce: through _apply
        handled = core.handled
        bugs: list[dict] = []

        def broken(*args):
            raise RuntimeError("store broke")

        core.store.update = broken
        globalLogPublisher.addObserver(bugs.append)
        try:
            assert _udpfast.answer(core, data, V4, 1) is None
        finally:
            globalLogPublisher.removeObserver(bugs.append)
        assert core.dropped == 1 and core.handled == handled  # answered in C, not Python
        failures = [e for e in bugs if e.get("log_failure") is not None]
        assert len(failures) == 1 and "store broke" in str(failures[0]["log_failure"].value)

    def test_counts_too_large_for_the_reply_are_a_bug_not_a_crash(self):
        """A count that does not fit the reply's 32 bits is dropped and counted, as the
        pure path's struct.pack error is."""
        core = self.core()
        _udpfast.answer(core, self.request(core), V4, 1)  # fills the memo, adds the peer
        core.app.interval = 2 ** 32
        for event in ("started", ""):  # through _apply, then the C store path
            handled = core.handled
            assert _udpfast.answer(core, self.request(core, event=event), V4, 1) is None
            assert core.handled == handled + 1  # only the connect went to Python
        assert core.dropped == 2


def store_state(core: UDPTrackerCore) -> tuple:
    """Everything an announce can change: torrents, every peer field, caches, counters."""
    import dataclasses

    store = core.store
    torrents = tuple(
        (ih, t.seeders, t.downloaded, t.empty_since, t._c4,
         tuple(dataclasses.astuple(p) for p in t.peers.values()),
         tuple(dataclasses.astuple(p) for p in t.departed.values()))
        for ih, t in store.torrents.items())
    return (torrents, store.peer_count, store.departed_count, store.reported_uploaded,
            store.reported_downloaded, core.answered, core.dropped,
            sorted(core.app.metrics.announces.items()))


class ApplySpy(UDPTrackerCore):
    """A core counting the regular updates that reached its Python ``_apply``."""

    updates = 0

    def _apply(self, *args: Any) -> Any:
        result = super()._apply(*args)
        if args[6] == "" and isinstance(result, tuple):
            self.updates += 1
        return result


@pytest.mark.skipif(_udpfast is None, reason="murder.tracker._udpfast is not built")
class UDPPathsAgreeTests:
    """The C path, which updates the store itself for regular re-announces, leaves
    exactly the state and sends exactly the replies of the pure-Python path."""

    @pytest.mark.parametrize("seed", range(8))
    def test_random_announce_sequences(self, seed):
        """400 random datagrams (events, counters up to 2**64, moved ports, numwant,
        IPv6 and v4-mapped senders, time steps around the 0.2 s rate gap) into two
        identical cores, one per path: same reply and same whole store after each."""
        rng = random.Random(seed)
        clocks = [Clock(), Clock()]
        cores = [kind(TrackerApp(PeerStore(c, rng=random.Random(1), max_peers=40)),
                      secret=b"k" * 32, error_rate=1e9, error_burst=1e9)
                 for kind, c in zip((UDPTrackerCore, ApplySpy), clocks)]
        paths = [cores[0].handle, CPath(cores[1]).handle]
        hosts = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "fd00::1", "::ffff:10.0.0.2"]
        hashes = [bytes([n]) * 20 for n in range(3)]
        counters: dict[bytes, list[int]] = {}
        for step in range(400):
            if rng.random() < 0.1:
                dt = rng.choice([0.05, 0.1, 0.2, 0.25, 3.0, 61.0])
                for clock in clocks:
                    clock.advance(dt)
            n = rng.randrange(8)
            peer = b"%020d" % n
            # Mostly each peer from its own host (the C store path's case), at times not.
            host = hosts[n % len(hosts)] if rng.random() < 0.9 else rng.choice(hosts)
            if rng.random() < 0.05:
                data = udpcodec.connect_request(step)
            else:
                up, down = counters.setdefault(peer, [0, 0])
                if rng.random() < 0.7:
                    counters[peer] = [up + rng.randrange(10**6), down + rng.randrange(10**6)]
                elif rng.random() < 0.1:
                    counters[peer] = [rng.getrandbits(64), rng.getrandbits(64)]
                up, down = counters[peer]
                event = rng.choice(["", "", "", "", "", "", "", "started", "completed",
                                    "stopped"])
                data = udpcodec.announce_request(
                    cores[0].connection_id(host.replace("::ffff:", "")), step,
                    rng.choice(hashes), peer, down,
                    rng.choice([0, 0, 1000, 1000, 5, 5, 2**63 + 1]), up, event, rng.getrandbits(32),
                    rng.choice([-1, -1, -1, -1, -1, 0, 2, 50]), 6001 if rng.random() < 0.95 else 6002,
                    ip=0 if rng.random() < 0.95 else 0x0A000009)
            replies = [handle(data, host, 1) for handle in paths]
            assert replies[0] == replies[1], (step, replies)
            assert store_state(cores[0]) == store_state(cores[1]), step
        # The C store path really answered (regular updates that never reached _apply).
        in_c = cores[1].app.metrics.announces.get(("udp", "update", "ok"), 0) - \
            cores[1].updates
        assert in_c > 25, (in_c, cores[1].updates)


class FakeDatagramTransport:
    """Records what a DatagramProtocol writes."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def write(self, data: bytes, addr: Any) -> None:
        self.sent.append((data, addr))


@pytest.mark.usefixtures("both_paths")
class UDPFuzzTests:
    """>= 10,000 random and mutated datagrams into the protocol: nothing escapes,
    nothing is logged as a bug, and valid requests in between are all answered
    (both paths; the C drain loop on a real socket: tests/integration)."""

    def test_fuzz(self):
        """12,000 datagrams (random, mutated valid ones, truncations) then checks."""
        clock = Clock()
        store = PeerStore(clock, max_torrents=64, max_peers=500)
        core = on_path(UDPTrackerCore(TrackerApp(store), secret=b"f" * 32, error_rate=1e9,
                                      error_burst=1e9))
        proto = UDPTrackerProtocol(core)
        proto.transport = FakeDatagramTransport()
        rng = random.Random(15)
        cid = core.connection_id("10.0.0.1")
        seeds = [udpcodec.connect_request(1),
                 udpcodec.announce_request(cid, 2, IH, b"p" * 20, 0, 5, 0, "started", 1, 50, 80),
                 udpcodec.scrape_request(cid, 3, [IH, b"\x01" * 20])]
        bugs: list[dict] = []

        def observe(event: dict) -> None:
            if event.get("log_failure") is not None:
                bugs.append(event)

        globalLogPublisher.addObserver(observe)
        valid_sent = 0
        try:
            for i in range(12_000):
                data = fuzz_datagram(rng, seeds, cid, i, IH)
                host = rng.choice(["10.0.0.1", "10.0.0.2", "fd00::1", "::ffff:10.0.0.1"])
                proto.datagramReceived(data, (host, rng.randrange(1, 65536)))
                if i % 100 == 0:
                    before = len(proto.transport.sent)
                    proto.datagramReceived(udpcodec.connect_request(i), ("10.0.0.1", 9))
                    good = udpcodec.announce_request(cid, i, IH, b"g" * 20, 0, 1, 0, "", 0, 5,
                                                     999)
                    proto.datagramReceived(good, ("10.0.0.1", 9))
                    valid_sent += 2
                    replies = [udpcodec.parse_reply(d) for d, _ in proto.transport.sent[before:]]
                    assert [type(r) for r in replies] == [udpcodec.ConnectReply,
                                                          udpcodec.AnnounceReply], replies
                if i % 1000 == 0:
                    clock.advance(7)
                    cid = core.connection_id("10.0.0.1")
        finally:
            globalLogPublisher.removeObserver(observe)
        assert bugs == []
        assert valid_sent == 240
        assert core.dropped > 1000 and core.answered > 240
        assert store.peer_count <= 500 and len(store.torrents) <= 64
        assert store.peer_count == sum(len(t.peers) for t in store.torrents.values())


# ---------------------------------------------------------------- peer side


class LoopReactor(Clock):
    """A Clock whose ``listenUDP`` wires the client to an in-memory UDP tracker.

    ``drop`` counts datagrams to lose on the way to the tracker, to exercise
    retransmissions; ``sent`` records when each datagram was sent.
    """

    def __init__(self, core: UDPTrackerCore | None, client_host: str = "10.0.0.1") -> None:
        super().__init__()
        self.core = core
        self.client_host = client_host
        self.drop = 0
        self.sent: list[tuple[float, bytes]] = []
        self.open_ports = 0

    def listenUDP(self, port, proto, interface="", maxPacketSize=8192):  # noqa: N802
        reactor = self

        class Transport:
            def write(self, data, addr):
                reactor.sent.append((reactor.seconds(), data))
                if reactor.drop > 0 or reactor.core is None:
                    reactor.drop -= 1
                    return
                reply = reactor.core.handle(data, reactor.client_host, 40000)
                if reply is not None:
                    reactor.callLater(0, proto.datagramReceived, reply, addr)

        class Port:
            def stopListening(self):
                reactor.open_ports -= 1

        proto.transport = Transport()
        self.open_ports += 1
        proto.startProtocol()
        return Port()


def params(n: int = 1, left: int = 5, event: str | None = "started") -> AnnounceParams:
    return AnnounceParams(IH, b"%020d" % n, 6000 + n, 0, 0, left, event, None, 50)


def outcome(d: defer.Deferred) -> list:
    out: list = []
    d.addBoth(out.append)
    return out


class UDPClientTests:
    """The peer's BEP 15 client against the in-memory tracker core."""

    def test_url(self):
        """udp://host:port URLs parse; others are refused with a readable reason."""
        assert parse_udp_url("udp://10.0.0.5:6969/announce") == ("10.0.0.5", 6969)
        assert parse_udp_url("udp://[fd00::5]:6969") == ("fd00::5", 6969)
        for bad in ("udp://host/announce", "http://h:1/", "udp://:5/"):
            with pytest.raises(AnnounceError):
                parse_udp_url(bad)

    def test_announce_and_connection_id_reuse(self):
        """Connect + announce (2 round trips); a second announce within a minute reuses
        the connection id (1 round trip); after a minute it connects again."""
        core = make_core()
        reactor = LoopReactor(core)
        announce(core, 9, host="10.0.0.9", left=0)
        client = UDPTrackerClient(reactor)
        got = outcome(client.announce("udp://127.0.0.1:6969/announce", params(), 30))
        reactor.advance(0)
        reply = got[0]
        assert isinstance(reply, AnnounceReply)
        assert reply.peers == [(("10.0.0.9", 6009), None)]
        assert (reply.interval, reply.complete, reply.incomplete) == (15.0, 1, 1)
        assert len(reactor.sent) == 2
        outcome(client.announce("udp://127.0.0.1:6969/announce", params(event=None), 30))
        reactor.advance(0)
        assert len(reactor.sent) == 3
        reactor.advance(61)
        outcome(client.announce("udp://127.0.0.1:6969/announce", params(event=None), 30))
        reactor.advance(0)
        assert len(reactor.sent) == 5 and reactor.open_ports == 0

    def test_stale_connection_id_reconnects(self):
        """A cached id the tracker no longer accepts (it restarted) makes one new connect."""
        core = make_core()
        reactor = LoopReactor(core)
        client = UDPTrackerClient(reactor)
        outcome(client.announce("udp://127.0.0.1:6969", params(), 30))
        reactor.advance(0)
        reactor.core = make_core(reactor)
        reactor.core._secret = b"other" * 8
        got = outcome(client.announce("udp://127.0.0.1:6969", params(event=None), 30))
        reactor.advance(0)
        assert isinstance(got[0], AnnounceReply)
        assert len(reactor.sent) == 5  # connect, announce | announce (error), connect, announce

    def test_retry_schedule(self):
        """Lost datagrams are resent after 15 s, then 30 s more (BEP 15), within the bound."""
        core = make_core()
        reactor = LoopReactor(core)
        reactor.drop = 2
        got = outcome(UDPTrackerClient(reactor).announce("udp://127.0.0.1:1", params(), 60))
        reactor.pump([1] * 50)
        assert isinstance(got[0], AnnounceReply)
        assert [t for t, _ in reactor.sent] == [0, 15, 45, 45]

    def test_timeout(self):
        """Silence fails the announce with UDPTimeout at the bound and closes the port."""
        reactor = LoopReactor(None)
        got = outcome(UDPTrackerClient(reactor).announce("udp://127.0.0.1:1", params(), 20))
        reactor.pump([1] * 19)
        assert got == []
        reactor.advance(1)
        assert got[0].check(UDPTimeout)
        assert "no UDP connect reply within 20s (1 retransmissions)" in str(got[0].value)
        assert [t for t, _ in reactor.sent] == [0, 15] and reactor.open_ports == 0

    def test_error_reply_is_an_answer(self):
        """An error datagram fails the announce with AnnounceError (the tracker answered)."""
        core = make_core()
        core.store.set_allowed({})
        reactor = LoopReactor(core)
        got = outcome(UDPTrackerClient(reactor).announce("udp://127.0.0.1:1", params(), 20))
        reactor.advance(0)
        assert got[0].check(AnnounceError)
        assert str(got[0].value) == "tracker refused: torrent not allowed on this tracker"


class HTTPDown:
    """An HTTP client for which every tracker is down (connection refused)."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def get(self, url: str, timeout: float) -> defer.Deferred:
        from twisted.internet.error import ConnectionRefusedError

        self.urls.append(url)
        return defer.fail(ConnectionRefusedError())


class AnnouncerUDPTests:
    """The Announcer uses udp:// URLs and falls back along the list (BEP 12)."""

    def test_udp_tracker_feeds_the_swarm(self):
        """A torrent listing only a udp:// tracker gets its peers through it."""
        core = make_core()
        announce(core, 9, host="10.0.0.9", left=0)
        reactor = LoopReactor(core)
        replies: list = []
        a = Announcer(reactor, HTTPDown(), ("udp://127.0.0.1:6969/announce",), IH,
                      b"%020d" % 1, 6001, None, lambda: (0, 0, 5), replies.append,
                      udp=UDPTrackerClient(reactor))
        started = outcome(a.start())
        reactor.advance(0)
        reactor.advance(0)
        assert isinstance(started[0], AnnounceReply)
        assert replies[0].peers == [(("10.0.0.9", 6009), None)]
        assert core.store.torrents[IH].peers[b"%020d" % 1].port == 6001

    def test_dead_udp_falls_back_to_http_then_gives_up(self):
        """A silent udp:// tracker is given its share of --tracker-timeout, then the
        next URL is tried; with both dead, TrackerUnreachable names the UDP timeout."""
        reactor = LoopReactor(None)
        http = HTTPDown()
        a = Announcer(reactor, http, ("udp://127.0.0.1:1/announce", "http://127.0.0.1:2/a"),
                      IH, b"%020d" % 1, 6001, None, lambda: (0, 0, 5), lambda r: None,
                      tracker_timeout=40, udp=UDPTrackerClient(reactor))
        failed = outcome(a.start())
        reactor.pump([0.5] * 39)
        assert http.urls == []  # the UDP attempt has 20 s of the 40
        reactor.pump([0.5] * 3)  # after the usual 0.5 s backoff
        assert http.urls == ["http://127.0.0.1:2/a?" + http.urls[0].split("?", 1)[1]]
        reactor.pump([0.5] * 60)
        error = failed[0].value
        assert isinstance(error, TrackerUnreachable)
        assert 40 <= error.seconds < 41
        assert "Connection was refused" in str(error) or "no UDP" in str(error)


class TrackerOptionsTests:
    """--udp-port, --udp-bind and --store are validated and reach the service."""

    @staticmethod
    def parse(*argv: str):
        from murder.tracker.tap import Options

        options = Options()
        options.parseOptions(["--dfile", "", *argv])
        return options.config

    def test_udp_options(self):
        """The UDP port binds --udp-bind, else --bind's address, else all IPv4."""
        assert self.parse().udp_port is None
        c = self.parse("--udp-port", "6969")
        assert (c.udp_port, c.udp_bind) == (6969, "")
        assert self.parse("--udp-port", "1", "--bind", "127.0.0.1").udp_bind == "127.0.0.1"
        assert self.parse("--udp-port", "1", "--udp-bind", "::").udp_bind == "::"

    @pytest.mark.parametrize("argv, message", [
        (["--udp-port", "x"], "--udp-port must be an integer"),
        (["--udp-port", "70000"], "--udp-port must be between 0 and 65535"),
        (["--udp-port", "1", "--udp-bind", "localhost"], "--udp-bind must be an IP address"),
        (["--store", "memcached://h"], "--store: 'memcached://h': use redis://"),
    ])
    def test_errors(self, argv, message):
        """Bad values are usage errors saying what is wrong."""
        from twisted.python import usage

        with pytest.raises(usage.UsageError) as e:
            self.parse(*argv)
        assert str(e.value).startswith(message)

    def test_service_has_udp_listener(self):
        """buildService adds a UDP listener sharing the HTTP app's store."""
        from twisted.internet.testing import MemoryReactor

        from murder.tracker.tap import buildService

        class Reactor(MemoryReactor, Clock):
            def __init__(self):
                MemoryReactor.__init__(self)
                Clock.__init__(self)

        reactor = Reactor()
        top = buildService(self.parse("--udp-port", "6969", "--udp-bind", "127.0.0.1"),
                           reactor)
        udp = top.getServiceNamed("tracker-udp")
        assert (udp.portnum, udp.interface, udp.reactor) == (6969, "127.0.0.1", reactor)
        assert top.udp.store is top.store


    def test_udp_fast_path_built_and_used(self):
        """Where a C compiler exists the install builds murder.tracker._udpfast, and
        the UDP listener uses it unless --no-udp-fastpath: the C path cannot be off
        without anyone noticing."""
        import shutil

        from twisted.internet.testing import MemoryReactor

        from murder.tracker.tap import buildService

        if shutil.which("cc") is None and shutil.which("gcc") is None:
            pytest.skip("no C compiler: the install keeps the pure-Python UDP path")
        assert _udpfast is not None, (
            "murder/tracker/_udpfast.c was not built: run pip install -e . and read its "
            "output")

        class Reactor(MemoryReactor, Clock):
            def __init__(self):
                MemoryReactor.__init__(self)
                Clock.__init__(self)

        # An in-place build (pip install -e .) older than its source would test old C.
        import os

        source = os.path.join(os.path.dirname(_udpfast.__file__), "_udpfast.c")
        if os.path.exists(source):
            assert os.path.getmtime(_udpfast.__file__) >= os.path.getmtime(source), (
                "murder/tracker/_udpfast.c changed since it was built: run pip install -e .")
        on = buildService(self.parse("--udp-port", "6969"), Reactor())
        off = buildService(self.parse("--udp-port", "6969", "--no-udp-fastpath"), Reactor())
        assert on.getServiceNamed("tracker-udp").fast is _udpfast
        assert off.getServiceNamed("tracker-udp").fast is None


class _QueuedSocket:
    """A UDP socket holding queued datagrams; records what is sent (no real socket)."""

    def __init__(self, datagrams: list[tuple[bytes, tuple[str, int]]],
                 refuse_sends: bool = False) -> None:
        self.queue = list(datagrams)
        self.sent: list[tuple[bytes, Any]] = []
        self.refuse_sends = refuse_sends

    def recvfrom(self, size: int) -> tuple[bytes, tuple[str, int]]:
        if not self.queue:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        data, addr = self.queue.pop(0)
        return data[:size], addr

    def sendto(self, data: bytes, addr: Any) -> int:
        if self.refuse_sends:
            raise OSError(101, "Network is unreachable")
        self.sent.append((data, addr))
        return len(data)


class TrackerUDPPortTests:
    """The tracker's UDP port answers every queued datagram at once, bounded per wakeup."""

    def port(self, sock: _QueuedSocket, batch: int = 1000):
        from murder.tracker.udp import TrackerUDPPort

        core = make_core()
        port = TrackerUDPPort(0, UDPTrackerProtocol(core), "127.0.0.1", reactor=Clock())
        port.socket = sock
        port.protocol.transport = port
        port.batch = batch
        return core, port

    def test_drains_queue_and_answers_each_sender(self):
        """One doRead answers every queued request, each to its own address, and
        stops at EAGAIN; a datagram needing no answer gets none."""
        sock = _QueuedSocket([(udpcodec.connect_request(n), (f"10.0.0.{n}", 6000 + n))
                              for n in range(1, 4)] + [(b"junk", ("10.0.0.9", 1))])
        core, port = self.port(sock)
        port.doRead()
        assert sock.queue == [] and [addr for _, addr in sock.sent] == [
            ("10.0.0.1", 6001), ("10.0.0.2", 6002), ("10.0.0.3", 6003)]
        for n, (data, _) in enumerate(sock.sent, 1):
            reply = udpcodec.parse_reply(data)
            assert reply == udpcodec.ConnectReply(n, core.connection_id(f"10.0.0.{n}"))

    def test_batch_bounds_one_wakeup(self):
        """At most `batch` datagrams per doRead, so other connections get their turn."""
        sock = _QueuedSocket([(udpcodec.connect_request(n), ("10.0.0.1", 1))
                              for n in range(5)])
        _, port = self.port(sock, batch=2)
        port.doRead()
        assert len(sock.sent) == 2 and len(sock.queue) == 3

    def test_asks_for_a_receive_buffer_a_fleet_burst_fits_in(self):
        """The port's socket asks for a 4 MiB receive buffer (the kernel caps it at
        net.core.rmem_max, and reports twice what it grants): more than Linux's
        default, which queues only 256 announces."""
        from murder.tracker.udp import TrackerUDPPort

        port = TrackerUDPPort(0, UDPTrackerProtocol(make_core()), "127.0.0.1", reactor=Clock())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:
            default = plain.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        try:
            with open("/proc/sys/net/core/rmem_max") as f:
                cap = int(f.read())
        except OSError:
            pytest.skip("no /proc/sys/net/core/rmem_max (not Linux)")
        if cap <= default // 2:
            pytest.skip(f"net.core.rmem_max ({cap}) allows no larger buffer than the default")
        skt = port.createInternetSocket()
        try:
            granted = skt.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        finally:
            skt.close()
        assert granted == 2 * min(port.receive_buffer, cap) and granted > default

    def test_wakeups_and_datagrams_counted_for_metrics(self):
        """Each doRead counts one wakeup and the datagrams it read (the batch bound
        included), and /metrics exposes both: their ratio is datagrams per wakeup."""
        sock = _QueuedSocket([(udpcodec.connect_request(n), ("10.0.0.1", 1))
                              for n in range(5)] + [(b"junk", ("10.0.0.2", 1))])
        core, port = self.port(sock, batch=4)
        port.doRead()
        port.doRead()
        port.doRead()
        metrics = core.app.metrics
        assert (metrics.udp_reads, metrics.udp_datagrams) == (3, 6)
        text = metrics.render().decode()
        assert "murder_tracker_udp_reads_total 3.0" in text
        assert "murder_tracker_udp_datagrams_total 6.0" in text

    def test_unsendable_reply_is_dropped_and_counted(self):
        """A reply the kernel refuses is dropped (UDP may) and counted; reading goes on."""
        sock = _QueuedSocket([(udpcodec.connect_request(n), ("10.0.0.1", 1))
                              for n in range(3)], refuse_sends=True)
        core, port = self.port(sock)
        port.doRead()
        assert sock.queue == [] and core.dropped == 3
        port.write(b"x", ("10.0.0.1", 1))
        assert core.dropped == 4

    def test_announce_fast_path_matches_codec(self):
        """An announce through the port gets the reply the codec describes: the other
        peers (IPv4 for an IPv4 sender), counts and interval; a v4-mapped sender is IPv4."""
        core = make_core()
        for n in (1, 2):
            announce(core, n, left=0 if n == 1 else 10)
        cid = core.connection_id(V4)
        data = udpcodec.announce_request(cid, 77, IH, b"%020d" % 3, 0, 10, 0, "started", 3,
                                         -1, 6003)
        sock = _QueuedSocket([(data, ("::ffff:" + V4, 9))])
        _, port = self.port(sock)
        port.protocol.core = core
        port.doRead()
        reply = udpcodec.parse_reply(sock.sent[0][0])
        assert isinstance(reply, udpcodec.AnnounceReply) and reply.transaction == 77
        assert (reply.interval, reply.seeders, reply.leechers) == (15, 1, 2)
        assert sorted(peers4(reply.peers)) == [(V4, 6001), (V4, 6002)]
