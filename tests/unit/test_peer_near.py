"""Near before far: peers of a rack-aware deploy ask far connections only for
what no near one supplies (murder/peer/requests.py, picker.py), from the
tracker's ``near`` key (murder/tracker/topology.py, app.py) to the announcer.

All in memory: cores over :class:`murder.testing.MemoryNetwork` on a ``Clock``.
"""

from __future__ import annotations

import random

import pytest
from twisted.internet.task import Clock

from murder import bencode
from murder.peer.announcer import parse_response
from murder.peer.picker import Picker
from murder.peer.session import Swarm, SwarmConfig
from murder.peer.wire import BLOCK_SIZE, Bitfield
from murder.testing import MemoryNetwork, MemoryStorage, build_torrent
from murder.testing import pattern as payload

PLEN = 2**15
RACK_A = "10.0.1.0/24"
RACK_B = "10.0.2.0/24"


def bits(n: int, members=None) -> Bitfield:
    bf = Bitfield(n, full=members is None)
    for i in members or ():
        bf.add(i)
    return bf


def picker(n: int = 8) -> Picker:
    return Picker(n, piece_length=4 * BLOCK_SIZE, total_length=4 * BLOCK_SIZE * n,
                  random_first=0, rng=random.Random(1))


class PickerFarTests:
    """The picker's far mode on its own."""

    def test_far_peer_skips_pieces_a_near_one_holds(self):
        """A far request never starts or continues a piece a near connection holds."""
        p = picker()
        p.peer_bitfield(range(8))
        p.near_bitfield([0, 1, 2, 3, 4, 5])
        got = p.next_requests("far", bits(8), 100, far=True, far_pieces=8)
        assert {b[0] for b in got} == {6, 7}

    def test_near_peer_asked_for_anything(self):
        """A near (or unclassified) connection is asked as before: all pieces."""
        p = picker()
        p.near_bitfield(range(8))
        got = p.next_requests("near", bits(8), 100)
        assert {b[0] for b in got} == set(range(8))

    def test_far_pieces_caps_pieces_started_from_far(self):
        """Only ``far_pieces`` pieces no near connection holds are in progress at once;
        pieces already started may be continued by another far connection."""
        p = picker()
        first = p.next_requests("F1", bits(8), 3, far=True, far_pieces=2)
        second = p.next_requests("F2", bits(8), 4, far=True, far_pieces=2)
        started = {b[0] for b in first + second}
        assert len(started) == 2  # F2 finished F1's piece, then started one more
        more = p.next_requests("F3", bits(8), 100, far=True, far_pieces=2)
        assert {b[0] for b in more} <= started  # no third piece
        assert len(more) == 8 - 3 - 4

    def test_owned_limits_new_far_pieces(self):
        """With ``owned``, a far connection starts only pieces this host owns."""
        p = picker()
        owned = bytearray(8)
        owned[5] = 1
        got = p.next_requests("far", bits(8), 100, far=True, far_pieces=8, owned=owned)
        assert {b[0] for b in got} == {5}

    def test_a_refused_untouched_piece_is_new_to_far_connections(self):
        """A piece started from a near holder that refused every block (a
        super-seeding seeder) is, for a far connection, a new piece: taken
        only if we own it, and not counted against ``far_pieces`` meanwhile.
        Continued as "started", every refused rack mate fetched it across
        the uplink (bench/README.md, session 8)."""
        p = picker()
        p.near_bitfield([3])
        blocks = p.next_requests("seeder", bits(8, [3]), 4)
        assert {b[0] for b in blocks} == {3}
        p.near_gone([3])  # the near holder refused it
        for block in blocks:
            p.request_dropped("seeder", block)
        assert 3 in p.in_progress
        owned = bytearray(8)
        owned[5] = 1
        got = p.next_requests("far", bits(8), 100, far=True, far_pieces=1, owned=owned)
        assert {b[0] for b in got} == {5}
        owned[3] = 1
        got = p.next_requests("far2", bits(8), 100, far=True, far_pieces=2, owned=owned)
        assert {b[0] for b in got} == {3}

    def test_a_far_piece_with_a_block_in_is_continued(self):
        """A piece with a block received is finished from any far connection
        that holds it, ours or not: its bytes are already in the rack."""
        p = picker()
        (first, *rest) = p.next_requests("near", bits(8, [2]), 4)
        p.block_received("near", *first[:2], bytes(first[2]))
        for block in rest:
            p.request_dropped("near", block)
        got = p.next_requests("far", bits(8, [2]), 100, far=True, far_pieces=8,
                              owned=bytearray(8))
        assert sorted(got) == sorted(rest)

    def test_near_counts_follow_bitfields(self):
        """near_has/near_gone/near_reset keep the per-piece count of near holders."""
        p = picker(4)
        p.near_bitfield([0, 1])
        p.near_has(1)
        assert p.near_availability == [1, 2, 0, 0]
        p.near_gone([1])
        assert p.near_availability == [1, 1, 0, 0]
        p.near_reset()
        assert p.near_availability == [0, 0, 0, 0]


class RackFleet:
    """A seeder in rack A, ``per_rack`` peers in racks A and B, in memory."""

    def __init__(self, per_rack: int = 4, pieces: int = 24, near: bool = True,
                 **config) -> None:
        self.meta, self.data = build_torrent(payload(pieces * PLEN), piece_length=PLEN)
        self.clock = Clock()
        self.net = MemoryNetwork()
        self.done: list[str] = []
        n = self.meta.num_pieces
        self.seeder = Swarm(self.meta, MemoryStorage(self.meta, self.data),
                            Bitfield(n, full=True), self.clock,
                            SwarmConfig(super_seed=True, **config), rng=random.Random(0),
                            dialer=self.net)
        self.net.listen(self.seeder, ("10.0.1.200", 6881))
        self.peers: dict[str, Swarm] = {}
        for r, cidr in (("a", RACK_A), ("b", RACK_B)):
            for i in range(per_rack):
                ip = cidr.replace("0/24", str(i + 10))
                swarm = Swarm(self.meta, MemoryStorage(self.meta), Bitfield(n), self.clock,
                              SwarmConfig(**config), rng=random.Random(f"{r}{i}"),
                              dialer=self.net, on_complete=lambda ip=ip: self.done.append(ip))
                if near:
                    swarm.near.set_near([cidr])
                self.net.listen(swarm, (ip, 6881))
                self.peers[ip] = swarm
        for swarm in [self.seeder, *self.peers.values()]:
            swarm.start()

    def announce_all(self) -> None:
        for swarm in self.peers.values():
            swarm.add_peers([(a, None) for a in self.net.listeners])
        self.net.flush()

    def run(self, seconds: float, step: float = 0.25) -> None:
        for _ in range(int(seconds / step)):
            self.clock.advance(step)
            self.net.flush()

    def rack_b_from_far(self) -> int:
        """Payload bytes rack B's hosts received from outside rack B."""
        return sum(c.downloaded for ip, s in self.peers.items() if ip.startswith("10.0.2.")
                   for c in s.connections.values() if not c.address[0].startswith("10.0.2."))

    def deploy(self, seconds: float = 60) -> float:
        """Announce, run, check every host completed with the exact payload;
        rack B's bytes from outside it, in payloads."""
        self.announce_all()
        self.run(seconds)
        assert sorted(self.done) == sorted(self.peers)
        for swarm in self.peers.values():
            assert bytes(swarm.storage.buffer) == self.data
        return self.rack_b_from_far() / self.meta.total_length


class NearPreferenceTests:
    """Whole in-memory deploys across two racks."""

    def test_classification_from_near_networks(self):
        """Connections inside the tracker's near networks are distance 0, others 1;
        without near networks every connection is 0 (no preference)."""
        fleet = RackFleet(per_rack=2)
        fleet.seeder.got_request = lambda *args: None  # no download: connections stay
        fleet.announce_all()
        a = fleet.peers["10.0.1.10"]
        distances = {c.address[0]: c.distance for c in a.connections.values()}
        assert distances["10.0.1.11"] == 0 and distances["10.0.1.200"] == 0
        assert distances["10.0.2.10"] == 1 and distances["10.0.2.11"] == 1
        a.near.set_near([])
        assert {c.distance for c in a.connections.values()} == {0}
        assert a.picker.near_availability == [0] * a.meta.num_pieces

    def test_ipv4_mapped_addresses_are_classified_as_ipv4(self):
        """An incoming connection seen by a dual-stack listener (::ffff:a.b.c.d)
        is near when a.b.c.d is."""
        fleet = RackFleet(per_rack=1)
        r = fleet.peers["10.0.1.10"].near
        assert r.distance("::ffff:10.0.1.77") == 0
        assert r.distance("::ffff:10.0.2.77") == 1
        assert r.distance("not an address") == 1

    def test_counts_survive_reclassification(self):
        """Changing the near networks recounts near holders exactly."""
        fleet = RackFleet(per_rack=2)
        fleet.announce_all()
        fleet.run(30)
        a = fleet.peers["10.0.2.10"]
        a.near.set_near([RACK_A])  # now rack A is "near" for this host
        expect = [0] * a.meta.num_pieces
        for c in a.connections.values():
            if c.address[0].startswith("10.0.1."):
                for i in c.bits:
                    expect[i] += 1
        assert a.picker.near_availability == expect

    def test_rack_b_fetches_each_piece_about_once_across_racks(self):
        """With near networks, rack B's four hosts together receive about one
        payload from rack A; without, far connections carry far more; every
        host completes with the exact payload either way."""
        results = {}
        for near in (True, False):
            results[near] = RackFleet(per_rack=4, near=near).deploy()
        assert results[True] <= 1.5
        assert results[False] > results[True] + 0.5

    def test_silent_near_holder_does_not_starve(self):
        """A near connection that holds every piece but never answers is snubbed;
        its pieces are then fetched from far and the download completes."""
        fleet = RackFleet(per_rack=1, snub_timeout=3.0)
        b = fleet.peers["10.0.2.10"]
        mute = Swarm(fleet.meta, MemoryStorage(fleet.meta, fleet.data),
                     Bitfield(fleet.meta.num_pieces, full=True), fleet.clock, SwarmConfig(),
                     rng=random.Random(9), dialer=fleet.net)
        fleet.net.listen(mute, ("10.0.2.99", 6881))
        mute.got_request = lambda *args: None  # takes requests, never serves
        mute.start()
        fleet.announce_all()
        fleet.run(20)
        assert "10.0.2.10" in fleet.done
        assert bytes(b.storage.buffer) == fleet.data

    def test_near_refusal_releases_the_piece_to_far(self):
        """A near holder that refuses a piece stops counting as its near source,
        so a far connection may be asked for it."""
        fleet = RackFleet(per_rack=1)
        fleet.seeder.got_request = lambda *args: None  # takes requests, serves nothing
        a = fleet.peers["10.0.1.10"]
        out = fleet.net.connect(a, ("10.0.1.200", 6881))
        assert out is not None
        fleet.net.flush()
        seeder = out.peer
        assert seeder.distance == 0 and seeder.outstanding
        assert a.picker.near_availability == [1] * a.meta.num_pieces
        block = next(iter(seeder.outstanding))
        a.got_reject(seeder, *block)
        assert a.picker.near_availability[block[0]] == 0
        assert sum(a.picker.near_availability) == a.meta.num_pieces - 1
        a.connection_lost(seeder)
        assert a.picker.near_availability == [0] * a.meta.num_pieces


class OwnerRingTests:
    """Which host of a rack brings each piece across the uplink."""

    def _rack(self, n: int, pieces: int = 64):
        meta, data = build_torrent(payload(pieces * PLEN), piece_length=PLEN)
        clock, net = Clock(), MemoryNetwork()
        swarms = []
        for i in range(n):
            s = Swarm(meta, MemoryStorage(meta), Bitfield(meta.num_pieces), clock,
                      SwarmConfig(), rng=random.Random(i), dialer=net)
            s.near.set_near([RACK_A])
            net.listen(s, (f"10.0.1.{i + 10}", 6881))
            swarms.append(s)
        return swarms, net

    def test_full_views_partition_the_pieces(self):
        """When every host is connected to every other, each piece has exactly one owner."""
        swarms, net = self._rack(6)
        for s in swarms:
            s.add_peers([(a, None) for a in net.listeners])
        net.flush()
        counts = [0] * swarms[0].meta.num_pieces
        for s in swarms:
            for i, flag in enumerate(s.near.owned()):
                counts[i] += bool(flag)
        assert counts == [1] * len(counts)
        assert sum(1 for s in swarms if any(s.near.owned())) >= 4  # shared out

    def test_partial_views_leave_no_piece_unowned(self):
        """Hosts that see only some rack mates may duplicate, never leave a gap."""
        swarms, net = self._rack(8)
        addresses = list(net.listeners)
        rng = random.Random(3)
        for s in swarms:
            s.add_peers([(a, None) for a in rng.sample(addresses, 2)])
        net.flush()
        union = [0] * swarms[0].meta.num_pieces
        for s in swarms:
            for i, flag in enumerate(s.near.owned()):
                union[i] |= bool(flag)
        assert all(union)

    def test_alone_owns_everything(self):
        """A host with no near connection owns every piece."""
        swarms, _ = self._rack(1)
        assert all(swarms[0].near.owned())


class NearKeyTests:
    """The tracker's ``near`` key and the announcer's reading of it."""

    def _app(self, topology_text: str | None):
        from murder.tracker import topology
        from murder.tracker.app import TrackerApp
        from murder.tracker.store import PeerStore

        store = PeerStore(Clock(), rng=random.Random(1))
        if topology_text is not None:
            store.handout = topology.RackAwareHandout(topology.parse(topology_text))
        return TrackerApp(store)

    @staticmethod
    def _announce(app, ip: str, compact: int = 1) -> bytes:
        q = (f"/announce?info_hash={'a' * 20}&peer_id={ip.replace('.', '-'):-<20}"
             f"&port=6881&uploaded=0&downloaded=0&left=10&compact={compact}")
        return app.handle(q.encode(), ip).body

    def test_reply_names_the_requesters_rack_networks(self):
        """With --topology the reply carries ``near``: the CIDRs of the requester's
        location (all of them), and the announcer reads them."""
        app = self._app("10.0.1.0/24 dc/row1/rack1\n10.0.9.0/24 dc/row1/rack1\n"
                        "10.0.2.0/24 dc/row1/rack2\n")
        body = self._announce(app, "10.0.1.5")
        reply = bencode.decode(body)
        assert sorted(reply[b"near"]) == [b"10.0.1.0/24", b"10.0.9.0/24"]
        assert sorted(parse_response(body).near) == ["10.0.1.0/24", "10.0.9.0/24"]
        dict_reply = bencode.decode(self._announce(app, "10.0.2.5", compact=0))
        assert dict_reply[b"near"] == [b"10.0.2.0/24"]

    def test_ipv4_mapped_requester_is_located(self):
        """A requester seen as ::ffff:a.b.c.d (dual-stack socket) gets a.b.c.d's rack."""
        from murder.tracker import topology

        handout = topology.RackAwareHandout(topology.parse("10.0.1.0/24 dc/row1/rack1\n"))
        assert handout.near_networks("::ffff:10.0.1.5") == [b"10.0.1.0/24"]

    def test_outside_every_cidr_gets_an_empty_near(self):
        """A requester outside every CIDR gets ``near`` empty: no preference."""
        app = self._app("10.0.1.0/24 dc/row1/rack1\n")
        body = self._announce(app, "192.0.2.7")
        assert bencode.decode(body)[b"near"] == []
        assert parse_response(body).near == ()

    def test_reply_unchanged_without_topology(self):
        """Without --topology there is no ``near`` key and the reply is the
        codec's plain one, byte for byte."""
        from murder.tracker import announce_codec as codec

        app = self._app(None)
        body = self._announce(app, "10.0.1.5")
        assert b"near" not in bencode.decode(body)
        assert parse_response(body).near == ()
        plain = codec.compact_reply(complete=0, incomplete=1, interval=app.interval,
                                    min_interval=app.min_interval, peers=b"")
        assert body == plain

    def test_compact_reply_with_near_is_canonical_bencode(self):
        """The hand-written compact reply with ``near`` equals bencode's own encoding."""
        from murder.tracker import announce_codec as codec

        got = codec.compact_reply(complete=1, incomplete=2, interval=15, min_interval=5,
                                  peers=b"\x0a\x00\x01\x05\x1a\xe1", near=[b"10.0.1.0/24"])
        assert got == bencode.encode({b"complete": 1, b"incomplete": 2, b"interval": 15,
                                      b"min interval": 5, b"near": [b"10.0.1.0/24"],
                                      b"peers": b"\x0a\x00\x01\x05\x1a\xe1"})

    def test_garbage_near_is_ignored(self):
        """A ``near`` that is not a list of strings, or holds bad CIDRs, changes nothing."""
        body = bencode.encode({b"interval": 15, b"peers": b"", b"near": 5})
        assert parse_response(body).near == ()
        meta, _ = build_torrent(payload(4 * PLEN), piece_length=PLEN)
        s = Swarm(meta, MemoryStorage(meta), Bitfield(meta.num_pieces), Clock())
        s.near.set_near(["not a cidr", "10.0.0.0/33"])
        assert not s.near.on


class FarTurnsFirstTests:
    """SwarmConfig.far_turns_first: far requesters get every other upload turn first."""

    def _serve(self, far_first: bool) -> list[str]:
        from murder.peer.interfaces import Peer
        from murder.peer.ratelimit import RateLimiter
        from murder.peer.uploads import Uploads

        meta, data = build_torrent(payload(4 * PLEN), piece_length=PLEN)
        clock = Clock()
        p = Picker(meta.num_pieces, piece_length=PLEN, total_length=meta.total_length)
        for i in range(meta.num_pieces):
            p.mark_have(i)
        uploads = Uploads(clock, SwarmConfig(upload_slots=1, far_turns_first=far_first), meta,
                          p, MemoryStorage(meta, data), RateLimiter(clock, 0, 0, lambda _: None))
        order: list[str] = []

        class Link:
            def __init__(self, name: str) -> None:
                self.address = (name, 1)
                self.peer_id = name.encode().ljust(20, b"-")
                self.fast = True
                self.outgoing = False

            def send_piece(self, index: int, begin: int, data: bytes) -> None:
                if not order or order[-1] != self.address[0]:
                    order.append(self.address[0])

            def __getattr__(self, name: str):
                return lambda *args: None

        busy, n1, n2, f1, f2 = (Peer(Link(n), Bitfield(meta.num_pieces))
                                for n in ("busy", "n1", "n2", "f1", "f2"))
        f1.distance = f2.distance = 1
        for peer in (busy, n1, n2, f1, f2):
            uploads.set_choking(peer, False)
        busy.send_paused = True  # holds the slot while the others line up
        uploads.got_request(busy, 0, 0, BLOCK_SIZE)
        uploads.ready(busy)
        for i, peer in enumerate((n1, n2, f1, f2)):
            uploads.got_request(peer, i, 0, PLEN)
            uploads.ready(peer)
        busy.send_paused = False
        uploads.ready(busy)
        return order

    def test_far_requesters_alternate_ahead(self):
        """With it: far, near, far, near; without: in arrival order."""
        assert self._serve(True) == ["busy", "f1", "n1", "f2", "n2"]
        assert self._serve(False) == ["busy", "n1", "n2", "f1", "f2"]


class NearIdleTests:
    """When the near connections run out of work, far ones are asked at once."""

    def test_far_connection_asked_when_last_near_piece_arrives(self):
        """A piece only a far connection holds, owned by a rack mate, is asked
        of the far connection as soon as the last near request is answered,
        not at the next tick (the clock does not move here).  With no far
        wait and any piece as fallback (``far_wait=0, far_backups=-1``;
        ``FarWaitTests`` and ``BackupTests`` have the waits)."""
        meta, data = build_torrent(payload(16 * PLEN), piece_length=PLEN)
        n = meta.num_pieces
        swarm = Swarm(meta, MemoryStorage(meta), Bitfield(n), Clock(),
                      SwarmConfig(far_wait=0, far_backups=-1), rng=random.Random(3))
        swarm.near.set_near([RACK_A])
        near = swarm.connection_ready(_Link("10.0.1.11"))
        far = swarm.connection_ready(_Link("10.0.2.11"))
        owned = swarm.near.owned()
        theirs = next(i for i in range(n) if not owned[i])  # the near host's to bring in
        ours = next(i for i in range(n) if i != theirs)
        swarm.got_bitfield(near, bits(n, [ours]))
        swarm.got_bitfield(far, bits(n, [theirs]))
        swarm.got_unchoke(near)
        swarm.got_unchoke(far)
        assert {b[0] for b in near.outstanding} == {ours}
        assert not far.outstanding  # not ours to fetch while the near one works
        for index, begin, length in sorted(near.outstanding):
            at = index * PLEN + begin
            swarm.got_block(near, index, begin, data[at:at + length])
        assert ours in swarm.have
        assert {b[0] for b in far.outstanding} == {theirs}


class _Link:
    """A connection's far end that records nothing (the core's requests are
    read from ``Peer.outstanding``)."""

    def __init__(self, ip: str) -> None:
        self.address = (ip, 6881)
        self.peer_id = ip.encode().ljust(20, b"-")
        self.fast = True
        self.outgoing = True

    def __getattr__(self, name: str):
        return lambda *args: None


def _asked_far_when_the_wait_ends(swarm: Swarm, clock: Clock, piece: int) -> None:
    """A far connection offering only ``piece`` is not asked for it before
    ``NO_ESTIMATE_WAIT`` and is asked then, by the wake-up alone."""
    far = swarm.connection_ready(_Link("10.0.2.11"))
    swarm.got_bitfield(far, bits(swarm.meta.num_pieces, [piece]))
    swarm.got_unchoke(far)
    assert not far.outstanding
    clock.advance(swarm.near.NO_ESTIMATE_WAIT - 0.01)
    assert not far.outstanding
    clock.advance(0.02)
    assert {b[0] for b in far.outstanding} == {piece}


class FarWaitTests:
    """SwarmConfig.far_wait: a far fetch waits by how doubtful our ownership is."""

    def _swarm(self, far_wait: float = 6.0, pieces: int = 32, near_peers: int = 3):
        meta, data = build_torrent(payload(pieces * PLEN), piece_length=PLEN)
        clock = Clock()
        clock.advance(100)
        swarm = Swarm(meta, MemoryStorage(meta), Bitfield(meta.num_pieces), clock,
                      SwarmConfig(far_wait=far_wait), rng=random.Random(5),
                      peer_id=b"-MU0110-far-wait-tst")  # the same ring every run
        swarm.near.set_near([RACK_A])
        for k in range(near_peers):
            swarm.connection_ready(_Link(f"10.0.1.{20 + k}"))
        return swarm, meta, data, clock

    def test_owned_pieces_ranked_by_distance_on_the_ring(self):
        """``owned()`` ranks our pieces 1, 2, … by their distance to our ring
        position (the likeliest to be ours in the whole rack first); the set
        of owned pieces is the same as unranked."""
        swarm, *_ = self._swarm()
        near = swarm.near
        owned = bytes(near.owned())
        ranks = sorted(r for r in owned if r)
        assert ranks == list(range(1, len(ranks) + 1)) and len(ranks) >= 2
        by_rank = sorted((r, i) for i, r in enumerate(owned) if r)
        gaps = [near._gap[i] for _, i in by_rank]
        assert gaps == sorted(gaps)
        near.ranked = False
        near._owned = None  # rebuild now
        assert [bool(r) for r in near.owned()] == [bool(r) for r in owned]
        assert set(near.owned()) <= {0, 1}

    def test_far_pick_takes_the_lowest_rank(self):
        """Among pieces a far peer offers, the picker starts the lowest rank."""
        p = picker(8)
        owned = bytearray([0, 5, 2, 0, 3, 0, 4, 0])
        got = p.next_requests("far", bits(8), 1, far=True, far_pieces=8, owned=owned)
        assert {b[0] for b in got} == {2}
        got = p.next_requests("far", bits(8, [1, 4, 6]), 1, far=True, far_pieces=8, owned=owned)
        assert {b[0] for b in got} == {4}

    def test_waits_follow_gap_piece_time_and_doubt(self):
        """Once a far piece has been timed (T s from first far request to its
        last block), an owned piece is ready ``min(gap², 3) × far_wait × T ×
        doubt`` after a far connection first offered it, any other piece
        after ``3 × far_wait × T × doubt``; the earliest end is reported."""
        swarm, meta, data, clock = self._swarm(far_wait=2.0)
        near = swarm.near
        n = meta.num_pieces
        far = swarm.connection_ready(_Link("10.0.2.11"))
        owned = near.owned()
        mine = next(i for i in range(n) if owned[i])
        near.far_started([(mine, 0, PLEN)])
        clock.advance(0.5)
        near.far_block(mine, 1)  # its last block: T = 0.5 s
        swarm.got_bitfield(far, bits(n))
        seen = clock.seconds()
        gap = near._gap
        ready, fallback, later = near.far_ready(2.0)
        assert near.doubt() == pytest.approx(1 / 3)  # one owned piece, asked far by us
        unit = 2.0 * 0.5 / 3
        assert not any(fallback)
        waits = {i: min(gap[i] ** 2, 3.0) * unit for i in range(n) if owned[i]}
        assert later == pytest.approx(seen + min(waits.values()))
        # Step past each wait in turn: exactly the pieces whose wait ended are ready.
        for t in sorted(set(waits.values())) + [3.0 * unit]:
            clock.advance(seen + t + 1e-9 - clock.seconds())
            ready, fallback, later = near.far_ready(2.0)
            assert {i for i in range(n) if ready[i]} == {i for i, w in waits.items() if w <= t}
            assert all(ready[i] == owned[i] for i in range(n) if ready[i])
            assert all(fallback) == (t >= 3.0 * unit)

    def test_a_newly_offered_piece_is_not_hidden_by_the_last_answer(self):
        """``far_ready`` reuses its last answer only while nothing changed: a
        far HAVE for a new piece shows at once (its wait end is reported)."""
        swarm, meta, data, clock = self._swarm()
        near = swarm.near
        far = swarm.connection_ready(_Link("10.0.2.11"))
        owned = near.owned()
        mine = next(i for i in range(meta.num_pieces) if owned[i])
        near.far_started([(mine, 0, PLEN)])
        clock.advance(0.1)
        near.far_block(mine, 1)
        assert near.far_ready(6.0)[2] is None  # nothing offered far yet
        assert near.far_ready(6.0)[2] is None
        other = next(i for i in range(meta.num_pieces) if i != mine)
        swarm.got_have(far, other)
        later = near.far_ready(6.0)[2]
        assert later is not None and later > clock.seconds()

    def test_doubt_counts_who_brought_our_pieces_in(self):
        """Doubt is (brought + 1) ÷ (brought + fetched + 2): an owned piece a
        near connection announces before we asked far for it counts as
        brought, one we ask far for first as fetched, each piece once."""
        swarm, meta, data, clock = self._swarm()
        near = swarm.near
        n = meta.num_pieces
        assert near.doubt() == 0.5
        owned = near.owned()
        mine = [i for i in range(n) if owned[i]]
        theirs = next(i for i in range(n) if not owned[i])
        mate = next(c for c in swarm.connections.values() if not c.distance)
        swarm.got_have(mate, mine[0])  # a mate brought it in: brought
        swarm.got_have(mate, theirs)  # not ours: nothing
        near.far_started([(mine[1], 0, PLEN)])  # we asked far first: fetched
        near.far_started([(mine[0], 0, PLEN)])  # already counted
        other = next(c for c in swarm.connections.values() if not c.distance and c is not mate)
        swarm.got_have(other, mine[1])  # already counted
        assert (near._brought, near._fetched) == (1, 1)
        assert near.doubt() == pytest.approx(2 / 4)
        for i in mine[2:5]:
            near.far_started([(i, 0, PLEN)])
        assert near.doubt() == pytest.approx(2 / 7)

    def test_before_any_far_piece_own_pieces_go_at_once(self):
        """Before a far piece has been timed, owned pieces are not held back;
        others are, for ``NO_ESTIMATE_WAIT`` after the near networks came."""
        swarm, meta, data, clock = self._swarm()
        near = swarm.near
        ready, fallback, later = near.far_ready(6.0)
        assert bytes(ready) == bytes(near.owned()) and not any(fallback)
        assert later == pytest.approx(clock.seconds() + near.NO_ESTIMATE_WAIT)
        clock.advance(near.NO_ESTIMATE_WAIT)
        ready, fallback, later = near.far_ready(6.0)
        assert all(fallback) and later is None

    def test_no_wait_when_off(self):
        """``far_wait=0``: owned pieces as ranked; the fallback is what far
        connections offered (after the backups' waits: ``BackupTests``), or
        any piece at once with ``far_backups`` < 0; no wake-up."""
        swarm, meta, *_ = self._swarm(far_wait=0)
        near = swarm.near
        ready, fallback, later = near.far_ready(0)
        assert bytes(ready) == bytes(near.owned())
        assert not any(fallback) and later is None  # nothing offered far yet
        near.backups = -1
        near._ring_dirty = True
        ready, fallback, later = near.far_ready(0)
        assert all(fallback) and later is None

    def test_far_connection_asked_when_the_wait_ends(self):
        """A piece only a far connection holds and a rack mate owns is not
        asked while its wait runs, and is asked when it ends, by the wake-up
        alone (no tick, no message)."""
        swarm, meta, data, clock = self._swarm(near_peers=1, pieces=16)
        n = meta.num_pieces
        owned = swarm.near.owned()
        theirs = next(i for i in range(n) if not owned[i])
        _asked_far_when_the_wait_ends(swarm, clock, theirs)

    def test_rack_b_completes_with_waits(self):
        """Two racks of 4 in memory with the far wait: every host completes
        with the exact payload, and rack B takes no more from far than
        without the wait."""
        results = {}
        for far_wait in (6.0, 0.0):
            results[far_wait] = RackFleet(per_rack=4, far_wait=far_wait).deploy()
        assert results[6.0] <= results[0.0] + 0.25


class BackupTests:
    """SwarmConfig.far_backups: a near-idle host asks far for a piece it
    backs up on the ring after giving the owner time, any other later."""

    def test_full_views_give_each_piece_one_owner_and_one_first_backup(self):
        """Every host connected to every other: per piece one owner (in
        ``owned``) and one first backup (rank 2), not the same host."""
        swarms, net = OwnerRingTests()._rack(6)
        for s in swarms:
            s.add_peers([(a, None) for a in net.listeners])
        net.flush()
        owners, backups = [0] * swarms[0].meta.num_pieces, [0] * swarms[0].meta.num_pieces
        for s in swarms:
            owned, ranks = s.near.owned(), s.near.backup_ranks()
            for i in range(len(owned)):
                owners[i] += bool(owned[i])
                backups[i] += ranks[i] == 2
                assert not (owned[i] and ranks[i])
        assert owners == [1] * len(owners)
        assert backups == [1] * len(backups)

    def test_second_backups_rank_after_first(self):
        """``far_backups=2``: pieces we are second backup for rank 3; -1 or 0: none."""
        swarm, meta, data, clock = FarWaitTests()._swarm(far_wait=0, near_peers=5)
        near = swarm.near
        for backups, want in ((2, {2, 3}), (1, {2}), (0, set()), (-1, set())):
            near.backups = backups
            near._ring_dirty = True
            clock.advance(0.2)  # the ring is rebuilt at most every 0.1 s
            assert set(near.backup_ranks()) - {0} == want

    def test_waits_follow_backup_rank(self):
        """A piece offered far goes to the fallback after (rank - 1) ×
        BACKUP_UNITS far piece times if we back it up, after
        ``fallback_units`` if not (before a far piece is timed, 1 s stands
        for ``fallback_units`` of them); owned pieces never wait."""
        swarm, meta, data, clock = FarWaitTests()._swarm(far_wait=0, near_peers=3, pieces=16)
        near = swarm.near
        n = meta.num_pieces
        owned, ranks = near.owned(), near.backup_ranks()
        backed = next(i for i in range(n) if ranks[i] == 2)
        other = next(i for i in range(n) if not owned[i] and not ranks[i])
        far = swarm.connection_ready(_Link("10.0.2.11"))
        swarm.got_bitfield(far, bits(n, [backed, other]))
        unit = near.NO_ESTIMATE_WAIT / near.fallback_units
        start = clock.seconds()
        _, fallback, later = near.far_ready(0)
        assert not any(fallback) and later == pytest.approx(start + near.BACKUP_UNITS * unit)
        clock.advance(near.BACKUP_UNITS * unit)
        _, fallback, later = near.far_ready(0)
        assert fallback[backed] == 2 and not fallback[other]
        assert later == pytest.approx(start + near.NO_ESTIMATE_WAIT)
        clock.advance(near.NO_ESTIMATE_WAIT - near.BACKUP_UNITS * unit)
        _, fallback, later = near.far_ready(0)
        assert fallback[other] == 255 and later is None

    def test_other_pieces_asked_far_when_the_wait_ends(self):
        """A piece only a far connection offers, neither ours nor backed up,
        is not asked before its wait ends and is asked then, by the wake-up
        alone (no tick, no message)."""
        swarm, meta, data, clock = FarWaitTests()._swarm(far_wait=0, near_peers=3, pieces=16)
        n = meta.num_pieces
        owned, ranks = swarm.near.owned(), swarm.near.backup_ranks()
        other = next(i for i in range(n) if not owned[i] and not ranks[i])
        _asked_far_when_the_wait_ends(swarm, clock, other)

    def test_rack_b_completes_with_backups(self):
        """Two racks of 6 in memory: every host completes with the exact
        payload with backups, and rack B takes fewer bytes from far than
        with any-piece fallbacks (``far_backups=-1``)."""
        with_backups = RackFleet(per_rack=6, far_wait=0).deploy()
        any_piece = RackFleet(per_rack=6, far_wait=0, far_backups=-1).deploy()
        assert with_backups <= 1.15 and with_backups < any_piece
