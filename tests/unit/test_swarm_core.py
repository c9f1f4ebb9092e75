"""The swarm core driven entirely in memory: no protocol, no bytes, no reactor.

Cores talk through :class:`murder.testing.MemoryLink` (the PeerLink contract
of murder/peer/interfaces.py); a ``Clock`` is the only time source.  Also the
core's parts on their own: upload turns, rate limits, request pipelines and
snubbing, blame.
"""

from __future__ import annotations

import hashlib
import random

from twisted.internet.task import Clock

from murder.peer.blame import Blame
from murder.peer.interfaces import Peer, PeerLink, SwarmEvents
from murder.peer.picker import PieceInProgress
from murder.peer.ratelimit import RateLimiter, TokenBucket
from murder.peer.session import Swarm, SwarmConfig
from murder.peer.wire import BLOCK_SIZE, Bitfield
from murder.testing import MemoryLink, MemoryNetwork, MemoryStorage, build_torrent
from murder.testing import pattern as payload

PLEN = 2**15


class Fleet:
    """One seeder and ``n`` peers, all cores in one MemoryNetwork on one Clock."""

    def __init__(self, n: int, size: int = 9 * PLEN + 1234, super_seed: bool = True,
                 **config) -> None:
        self.meta, self.data = build_torrent(payload(size), piece_length=PLEN)
        self.clock = Clock()
        self.net = MemoryNetwork()
        self.done: list[int] = []
        pieces = self.meta.num_pieces
        self.seeder = Swarm(self.meta, MemoryStorage(self.meta, self.data),
                            Bitfield(pieces, full=True), self.clock,
                            SwarmConfig(super_seed=super_seed, **config), rng=random.Random(0),
                            dialer=self.net)
        self.net.listen(self.seeder, ("10.0.0.1", 6881))
        self.peers: list[Swarm] = []
        for i in range(n):
            storage = MemoryStorage(self.meta)
            swarm = Swarm(self.meta, storage, Bitfield(pieces), self.clock,
                          SwarmConfig(**config), rng=random.Random(i + 1), dialer=self.net,
                          on_complete=lambda i=i: self.done.append(i))
            self.net.listen(swarm, (f"10.0.1.{i}", 6881))
            self.peers.append(swarm)
        self.addresses = [(a, c.peer_id) for a, c in self.net.listeners.items()]
        for swarm in [self.seeder, *self.peers]:
            swarm.start()

    def announce_all(self) -> None:
        """What the tracker would do: every peer learns every address."""
        for swarm in self.peers:
            swarm.add_peers([(a, None) for a, _ in self.addresses])
        self.net.flush()

    def run(self, seconds: float, step: float = 0.25) -> None:
        for _ in range(int(seconds / step)):
            self.clock.advance(step)
            self.net.flush()

    def assert_all_complete(self) -> None:
        """Every peer completed, each holding exactly the payload."""
        assert sorted(self.done) == list(range(len(self.peers)))
        for swarm in self.peers:
            assert bytes(swarm.storage.buffer) == self.data


class ContractTests:
    """The production classes declare the contract the simulator relies on."""

    def test_memory_link_and_protocol_are_peer_links(self):
        """MemoryLink and PeerProtocol both satisfy PeerLink; Swarm satisfies SwarmEvents."""
        from murder.peer.protocol import PeerProtocol

        fleet = Fleet(1)
        link = MemoryLink(fleet.net, fleet.seeder, ("10.0.0.2", 1), outgoing=True)
        assert isinstance(link, PeerLink)
        assert isinstance(PeerProtocol(fleet.seeder, outgoing=True, address=("h", 1)), PeerLink)
        assert isinstance(fleet.seeder, SwarmEvents)

    def test_session_does_not_import_the_protocol(self):
        """The core never imports the TCP protocol (dialing is injected)."""
        import ast
        import inspect

        from murder.peer import admission, requests, session, uploads

        for module in (session, admission, requests, uploads):
            tree = ast.parse(inspect.getsource(module))
            names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
            assert "murder.peer.protocol" not in names, module.__name__


class InMemorySwarmTests:
    """Whole deploys with cores only."""

    def test_eight_peers_complete_with_verified_payloads(self):
        """A seeder and 8 peers: every peer completes with the exact payload."""
        fleet = Fleet(8)
        fleet.announce_all()
        fleet.run(30)
        fleet.assert_all_complete()
        for swarm in fleet.peers:
            assert swarm.hash_failures == 0
        # The seeder super-seeds: the peers carry most of the fan-out.
        assert fleet.seeder.uploaded < 3 * fleet.meta.total_length

    def test_peers_forward_pieces_to_each_other(self):
        """Peers upload to each other, not only download from the seeder."""
        fleet = Fleet(4)
        fleet.announce_all()
        fleet.run(30)
        assert sum(s.uploaded for s in fleet.peers) > 0
        assert sorted(fleet.done) == [0, 1, 2, 3]

    def test_sticky_turns_complete_with_verified_payloads(self):
        """turn_pieces=4 (sticky upload turns): 8 peers still all complete with the
        exact payload, and the seeder still sends about one copy."""
        fleet = Fleet(8, turn_pieces=4)
        fleet.announce_all()
        fleet.run(30)
        fleet.assert_all_complete()
        assert fleet.seeder.uploaded < 3 * fleet.meta.total_length

    def test_dial_to_nobody_fails_cleanly(self):
        """A dial to an address nobody listens on is reported and forgotten."""
        fleet = Fleet(1)
        fleet.peers[0].add_peers([(("10.9.9.9", 1), None)])
        assert ("10.9.9.9", 1) in fleet.peers[0].admission.dialing
        fleet.net.flush()
        assert fleet.peers[0].admission.dialing == set()

    def test_liar_is_banned_and_download_completes(self):
        """A peer whose storage serves corrupt data is banned; the rest completes."""
        fleet = Fleet(2)
        liar = fleet.peers[1]
        liar.storage.buffer[:] = bytes(len(liar.storage.buffer))
        liar.picker.have.__init__(fleet.meta.num_pieces, full=True)  # claims everything
        fleet.announce_all()
        fleet.run(30)
        assert 0 in fleet.done
        assert bytes(fleet.peers[0].storage.buffer) == fleet.data
        assert liar.peer_id in fleet.peers[0].admission.banned_ids


class RecordingLink:
    """A PeerLink that only records what the core sends."""

    def __init__(self, name: str) -> None:
        self.address = (name, 1)
        self.outgoing = False
        self.peer_id = name.encode().ljust(20, b"-")
        self.fast = True
        self.log: list[tuple[str, int]] = []

    def send_piece(self, index: int, begin: int, data: bytes) -> None:
        self.log.append((self.address[0], index))

    def __getattr__(self, name: str):
        return lambda *args: None


class UploadTurnTests:
    """Upload turns (murder/peer/uploads.py) on their own, with a Clock."""

    def _uploads(self, slots: int):
        from murder.peer.picker import Picker
        from murder.peer.uploads import Uploads

        meta, data = build_torrent(payload(3 * PLEN), piece_length=PLEN)
        clock = Clock()
        picker = Picker(meta.num_pieces, piece_length=PLEN, total_length=meta.total_length)
        for i in range(meta.num_pieces):
            picker.mark_have(i)
        limiter = RateLimiter(clock, 0, 0, resume_upload=lambda p: None)
        config = SwarmConfig(upload_slots=slots)
        return Uploads(clock, config, meta, picker, MemoryStorage(meta, data), limiter)

    def _serve(self, slots: int) -> list[tuple[str, int]]:
        """A's send buffer is full while B's requests arrive; then A drains."""
        uploads = self._uploads(slots)
        sent: list[tuple[str, int]] = []
        a, b = (Peer(RecordingLink(n), Bitfield(3)) for n in "ab")
        for peer in (a, b):
            peer.link.log = sent
            uploads.set_choking(peer, False)
        a.send_paused = True
        for block in ((0, 0, BLOCK_SIZE), (0, BLOCK_SIZE, BLOCK_SIZE), (1, 0, BLOCK_SIZE)):
            uploads.got_request(a, *block)
        uploads.ready(a)  # A's turn starts, but its socket is full
        for block in ((2, 0, BLOCK_SIZE), (2, BLOCK_SIZE, BLOCK_SIZE)):
            uploads.got_request(b, *block)
        a.send_paused = False
        uploads.ready(a)
        return sent

    def test_one_slot_passes_the_turn_at_a_piece_boundary(self):
        """One slot: A finishes piece 0, B (waiting) gets piece 2, then A piece 1."""
        assert self._serve(1) == [("a", 0), ("a", 0), ("b", 2), ("b", 2), ("a", 1)]

    def test_no_slot_limit_serves_everyone_at_once(self):
        """upload_slots=0: B is served as its requests arrive, A when it drains."""
        assert self._serve(0) == [("b", 2), ("b", 2), ("a", 0), ("a", 0), ("a", 1)]


class SupersededConnectionTests:
    """A connection superseded by a duplicate (both sides dialed) gives its
    upload slot back when it closes (found by ``murder simulate``: one host's
    only slot held by a closed connection stalled the swarm for 30 s)."""

    def test_slot_freed_when_superseded_connection_closes(self):
        """The old connection held the one slot with queued requests; once it
        is lost, the new connection's requests are served."""
        meta, data = build_torrent(payload(3 * PLEN), piece_length=PLEN)
        clock = Clock()
        a = Swarm(meta, MemoryStorage(meta, data), Bitfield(meta.num_pieces, full=True), clock,
                  SwarmConfig(upload_slots=1), peer_id=b"-MU0110-aaaaaaaaaaaa")
        remote = b"-MU0110-zzzzzzzzzzzz"  # larger id: our outgoing connection wins
        old_link, new_link = RecordingLink("old"), RecordingLink("new")
        for link, outgoing in ((old_link, False), (new_link, True)):
            link.peer_id, link.outgoing, link.log = remote, outgoing, []
        assert a.accept_handshake(old_link) is None
        old = a.connection_ready(old_link)
        a.got_interested(old)
        a.send_paused(old)  # its socket is full: requests queue, the slot is held
        a.got_request(old, 0, 0, BLOCK_SIZE)
        a.uploads.ready(old)
        assert old in a.uploads._active
        assert a.accept_handshake(new_link) is None  # supersedes the old one
        new = a.connection_ready(new_link)
        a.connection_lost(old)  # its FIN arrives
        assert old not in a.uploads._active
        a.got_interested(new)
        a.got_request(new, 1, 0, BLOCK_SIZE)
        assert new_link.log == [("new", 1)]


class RateLimitTests:
    """Token buckets and the limiter's pauses."""

    def test_bucket_wait(self):
        """A bucket drained below zero says how long until it is in credit."""
        bucket = TokenBucket(1000, 0.0)
        bucket.spend(int(bucket.burst) + 1000, 0.0)
        assert 0.99 < bucket.wait(0.0) < 1.01
        assert bucket.wait(1.1) == 0.0

    def test_download_cap_pauses_and_resumes_reading(self):
        """Over the download cap the peer's link stops reading; in credit it resumes."""
        clock = Clock()
        fleet = Fleet(1)
        limiter = RateLimiter(clock, 0, 100_000, resume_upload=lambda p: None)
        link = MemoryLink(fleet.net, fleet.seeder, ("h", 1), outgoing=True)
        peer = Peer(link, Bitfield(1))
        limiter.downloaded(peer, 100_000, clock.seconds())
        assert not link.reading and limiter.reading_paused(peer)
        clock.advance(1.0)
        assert link.reading and not limiter.reading_paused(peer)

    def test_upload_cap_defers_then_resumes(self):
        """Over the upload cap a pump is refused and resumed when in credit."""
        clock = Clock()
        resumed: list[Peer] = []
        fleet = Fleet(1)
        limiter = RateLimiter(clock, 100_000, 0, resume_upload=resumed.append)
        peer = Peer(MemoryLink(fleet.net, fleet.seeder, ("h", 1), outgoing=True), Bitfield(1))
        limiter.uploaded(200_000)
        assert not limiter.upload_allowed(peer)
        clock.advance(2.0)
        assert resumed == [peer]


class SnubTests:
    """Request pipelines give up on a silent peer and probe it one block at a time."""

    def test_silent_peer_is_snubbed_then_probed(self):
        """Requests left unanswered go back after the timeout; the silent peer
        then gets one probe request at a time, and answering clears it."""
        fleet = Fleet(1, snub_timeout=5.0)
        peer = fleet.peers[0]
        out = fleet.net.connect(peer, ("10.0.0.1", 6881))
        assert out is not None and out.remote is not None
        served = out.remote.send_piece
        out.remote.send_piece = lambda *args: None  # the seeder takes requests, sends nothing
        fleet.net.flush()
        record = out.peer
        assert record.outstanding and not record.snubbed
        for _ in range(24):
            fleet.clock.advance(0.25)
            fleet.net.flush()
        assert record.snubbed
        assert len(record.outstanding) <= 1
        out.remote.send_piece = served  # it answers again
        fleet.run(30)
        assert not record.snubbed and fleet.done == [0]


class BlameTests:
    """Hashing an assembled piece and naming who sent a bad block."""

    def _piece(self, data: bytes, sources: list) -> PieceInProgress:
        piece = PieceInProgress(0, len(data))
        piece.buffer[:] = data
        piece.block_from = list(sources)
        piece.sources = set(s for s in sources if s is not None)
        return piece

    def test_sole_source_of_bad_piece_is_banned(self):
        """A failing piece from one peer names that peer at once."""
        good = payload(2 * BLOCK_SIZE)
        blame = Blame([hashlib.sha1(good).digest()])
        ok, bans = blame.check(self._piece(b"x" * len(good), ["a", "a"]))
        assert not ok and [p for p, _ in bans] == ["a"]

    def test_liar_found_once_the_piece_verifies(self):
        """Two sources, one lies: nobody is banned at the failure; the liar when it verifies."""
        good = payload(2 * BLOCK_SIZE)
        blame = Blame([hashlib.sha1(good).digest()])
        bad = good[:BLOCK_SIZE] + b"x" * BLOCK_SIZE
        ok, bans = blame.check(self._piece(bad, ["honest", "liar"]))
        assert not ok and bans == []
        ok, bans = blame.check(self._piece(good, ["honest", "honest"]))
        assert ok and [p for p, _ in bans] == ["liar"]
