"""Fuzz the tracker in memory with random and mutated queries.

Requests go through the real server path: bytes into the HTTP protocol
(:mod:`murder.tracker.fasthttp`, kept-alive connections, reopened when the
server closes one), answers parsed by the standard library.  Every answer
must be bencode with either ``failure reason`` or the expected keys (or a
4xx with a failure reason), never a 500 or an exception; the store's
counters must stay consistent and within its caps; and the tracker must
still answer a valid announce afterwards.
"""

from __future__ import annotations

import random
import time
from urllib.parse import quote_from_bytes

import bencodepy
from hypothesis import given, settings, strategies as st
from twisted.internet.task import Clock

from murder.tracker.fasthttp import TrackerHTTPFactory
from murder.tracker.store import PeerStore
from murder.tracker.app import TrackerApp
from tracker_harness import Connection, parse_responses

MAX_TORRENTS = 64
MAX_PEERS = 800
ANNOUNCE_KEYS = {b"complete", b"incomplete", b"interval", b"min interval", b"peers"}
FIELDS = [b"info_hash", b"peer_id", b"port", b"uploaded", b"downloaded", b"left", b"event",
          b"compact", b"no_peer_id", b"numwant", b"ip", b"key", b"trackerid"]
NASTY = [b"", b"0", b"-1", b"65536", b"99999999999999999999999", b"1e3", b" 1", b"\x00",
         b"%", b"%zz", b"\xff\xfe", b"started", b"stopped", b"completed", b"::1", b"1.2.3.4",
         b"fd00::7", b"999.1.1.1", b"x" * 300, b"\xd9\xa3\xd9\xa3", b"+5", b"0x10"]


class FuzzTracker:
    """The tracker behind its HTTP protocol, one kept-alive connection per client."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.store = PeerStore(self.clock, max_torrents=MAX_TORRENTS, max_peers_per_torrent=200,
                               max_peers=MAX_PEERS, rng=random.Random(3))
        self.factory = TrackerHTTPFactory(TrackerApp(self.store, numwant_max=50), self.clock)
        self.connections: dict[str, Connection] = {}

    def raw(self, request: bytes, client: str = "127.0.0.1") -> tuple[int, bytes, bool]:
        """Send raw request bytes; (status, body, closed) of the first answer."""
        conn = self.connections.get(client)
        if conn is None or conn.closed:
            conn = self.connections[client] = Connection(self.factory, client)
        conn.send(request)
        data = conn.take()
        first = parse_responses(data, ["GET"] * data.count(b"HTTP/1.1 "))[0]
        return first.status, first.body, conn.closed


def make_tracker() -> tuple[FuzzTracker, PeerStore, Clock]:
    tracker = FuzzTracker()
    return tracker, tracker.store, tracker.clock


#: Bytes a request line cannot carry raw; clients send them %-escaped.
_UNSENDABLE = {b" ": b"%20", b"\r": b"%0D", b"\n": b"%0A"}


def render(tracker: FuzzTracker, path: bytes, query: bytes,
           client: str = "127.0.0.1") -> tuple[int, bytes]:
    """GET ``path?query`` over HTTP, escaping what a request line cannot hold."""
    for raw, escaped in _UNSENDABLE.items():
        query = query.replace(raw, escaped)
    target = path + (b"?" + query if query else b"")
    code, body, _ = tracker.raw(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % target, client)
    return code, body


def check(path: bytes, code: int, body: bytes) -> None:
    """The answer is well-formed bencode of the right shape."""
    assert code != 500, body
    reply = bencodepy.decode(body)
    assert isinstance(reply, dict)
    if b"failure reason" in reply:
        assert set(reply) == {b"failure reason"} and isinstance(reply[b"failure reason"], bytes)
        assert code in (200, 400, 404, 414)
        return
    assert code == 200
    if path == b"/announce":
        assert ANNOUNCE_KEYS <= set(reply) <= ANNOUNCE_KEYS | {b"peers6"}
        peers = reply[b"peers"]
        assert (isinstance(peers, bytes) and len(peers) % 6 == 0) or isinstance(peers, list)
        assert len(peers) <= 50 * 6
    else:
        assert set(reply) == {b"files"}
        for stats in reply[b"files"].values():
            assert set(stats) == {b"complete", b"incomplete", b"downloaded"}


def check_store(store: PeerStore) -> None:
    """Counters agree with the peers held, and every cap holds."""
    assert len(store.torrents) <= MAX_TORRENTS
    assert store.peer_count == sum(len(t.peers) for t in store.torrents.values()) <= MAX_PEERS
    for t in store.torrents.values():
        assert t.seeders == sum(1 for p in t.peers.values() if p.left == 0)
        assert len(t.peers) <= 200


def random_query(rng: random.Random, hashes: list[bytes]) -> tuple[bytes, bytes]:
    """A valid announce mutated at random, or a scrape, or plain garbage."""
    kind = rng.random()
    if kind < 0.05:
        return rng.choice([b"/announce", b"/scrape", b"/x"]), bytes(
            rng.randrange(256) for _ in range(rng.randrange(200)))
    if kind < 0.15:
        hs = [rng.choice(hashes) if rng.random() < 0.7 else rng.randbytes(rng.choice([19, 20, 21]))
              for _ in range(rng.randrange(4))]
        return b"/scrape", b"&".join(b"info_hash=" + quote_from_bytes(h).encode() for h in hs)
    fields = {
        b"info_hash": rng.choice(hashes) if rng.random() < 0.8 else rng.randbytes(20),
        b"peer_id": b"-FZ0001-%012d" % rng.randrange(400),
        b"port": b"%d" % rng.randrange(1, 65536),
        b"uploaded": b"0", b"downloaded": b"0",
        b"left": rng.choice([b"0", b"100", b"5000"]),
        b"event": rng.choice([b"", b"started", b"completed", b"stopped"]),
        b"compact": rng.choice([b"0", b"1"]),
        b"numwant": b"%d" % rng.randrange(-1, 100),
        b"ip": b"10.%d.%d.%d" % (rng.randrange(256), rng.randrange(256), rng.randrange(256)),
    }
    for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
        field = rng.choice(FIELDS)
        action = rng.random()
        if action < 0.3:
            fields.pop(field, None)
        elif action < 0.6:
            fields[field] = rng.choice(NASTY)
        else:
            fields[field] = rng.randbytes(rng.randrange(40))
    parts = [k + b"=" + quote_from_bytes(v).encode() for k, v in fields.items()]
    if rng.random() < 0.05:
        parts.append(rng.choice(parts))  # a repeated key
    if rng.random() < 0.05:
        parts.append(b"&&=%%%=&" + rng.randbytes(5))
    rng.shuffle(parts)
    return b"/announce", b"&".join(parts)


class TrackerFuzzTests:
    """The tracker survives >= 10,000 hostile requests and stays bounded."""

    def test_random_and_mutated_queries(self):
        """10,000 random/mutated announces and scrapes: well-formed answers, bounded store."""
        tracker, store, clock = make_tracker()
        rng = random.Random(20240601)
        hashes = [rng.randbytes(20) for _ in range(20)]
        started = time.monotonic()
        outcomes = {"ok": 0, "failure": 0}
        for i in range(10_000):
            path, query = random_query(rng, hashes)
            client = "127.0.0.1" if i % 3 else "203.0.113.9"
            code, body = render(tracker, path, query, client)
            check(path, code, body)
            outcomes["failure" if b"failure reason" in body[:20] else "ok"] += 1
            if i % 1000 == 0:
                clock.advance(30)
                store.expire()
                check_store(store)
        check_store(store)
        # The mix exercised both outcomes substantially.
        assert outcomes["ok"] > 2000 and outcomes["failure"] > 1000, outcomes
        assert time.monotonic() - started < 30
        # Still working: a valid announce on a fresh hash in a torrent slot gets peers.
        code, body = render(tracker, b"/announce", b"info_hash=" + quote_from_bytes(
            hashes[0]).encode() + b"&peer_id=-OK0001-000000000000&port=1&left=1&compact=1")
        reply = bencodepy.decode(body)
        assert code == 200 and ANNOUNCE_KEYS <= set(reply), reply

    def test_random_hash_flood_hits_cap(self):
        """Announcing thousands of random info hashes stops at the torrent cap."""
        tracker, store, _ = make_tracker()
        rng = random.Random(5)
        refused = 0
        for _ in range(3000):
            query = (b"info_hash=" + quote_from_bytes(rng.randbytes(20)).encode()
                     + b"&peer_id=" + quote_from_bytes(rng.randbytes(20)).encode()
                     + b"&port=6881&left=0&compact=1")
            code, body = render(tracker, b"/announce", query)
            refused += body == b"d14:failure reason34:tracker is full: too many torrentse"
        assert len(store.torrents) == MAX_TORRENTS
        assert refused == 3000 - MAX_TORRENTS
        check_store(store)

    @settings(max_examples=300, deadline=None)
    @given(path=st.sampled_from([b"/announce", b"/scrape", b"/", b"/status.json", b"/a"]),
           query=st.binary(max_size=300))
    def test_arbitrary_bytes(self, path, query):
        """Arbitrary raw query bytes on any path never produce a 500 or an exception.

        Bytes a request line cannot hold (space, CR, LF) get a 400 that closes
        the connection; anything else reaches the tracker.
        """
        tracker, store, _ = make_tracker()
        code, body, closed = tracker.raw(b"GET " + path + b"?" + query + b" HTTP/1.1\r\n\r\n")
        assert code != 500
        if any(c in query for c in b" \r\n"):
            assert code == 400 and closed
            assert set(bencodepy.decode(body)) == {b"failure reason"}
        elif path in (b"/announce", b"/scrape", b"/a"):
            check(b"/announce" if path == b"/a" else path, code, body)
        check_store(store)
