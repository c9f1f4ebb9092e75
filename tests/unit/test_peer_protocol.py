"""Swarm + PeerProtocol in memory: iosim between two real swarms, or a hand-driven remote.

No sockets, no global reactor: :class:`murder.testing.FakeReactor` is the
clock, :func:`murder.testing.connect_swarms` joins two swarms with
``twisted.test.iosim``, :class:`murder.testing.RemotePeer` plays a remote
peer over a ``StringTransport``.
"""

from __future__ import annotations

import random
import struct

import pytest
from twisted.logger import globalLogPublisher

from murder.errors import StorageError
from murder.peer import wire
from murder.peer.session import Swarm, SwarmConfig
from murder.peer.storage import DownloadStorage, SeedStorage
from murder.peer.wire import BLOCK_SIZE, Bitfield
from murder.testing import (FakeReactor, MemoryStorage, RemotePeer, build_torrent,
                            connect_swarms)
from murder.testing import pattern as data

PLEN = 2**15


SEED_ID = b"-MU0100-seederseeder"
PEER_ID = b"-MU0100-peerpeerpeer"


@pytest.fixture
def errors():
    """Collect logged failures/errors; the test asserts none were logged."""
    events: list[dict] = []

    def observer(event: dict) -> None:
        if event.get("log_failure") is not None:
            events.append(event)

    globalLogPublisher.addObserver(observer)
    yield events
    globalLogPublisher.removeObserver(observer)


class Pair:
    """A seeder swarm and a downloading swarm on one FakeReactor."""

    def __init__(self, payload: bytes | None = None, *, seed_storage=None, peer_storage=None,
                 meta=None, seeder_config=SwarmConfig(), peer_config=SwarmConfig(),
                 seed_id=SEED_ID, peer_id=PEER_ID) -> None:
        if meta is None:
            meta, payload = build_torrent(payload if payload is not None else
                                          data(5 * PLEN + 777), piece_length=PLEN)
        self.meta, self.payload = meta, payload
        self.clock = FakeReactor()
        self.completed: list[float] = []
        n = meta.num_pieces
        self.seed_storage = seed_storage or MemoryStorage(meta, payload)
        self.peer_storage = peer_storage or MemoryStorage(meta)
        self.seeder = Swarm(meta, self.seed_storage, Bitfield(n, full=True), self.clock,
                            seeder_config, peer_id=seed_id, rng=random.Random(1))
        self.peer = Swarm(meta, self.peer_storage, Bitfield(n), self.clock, peer_config,
                          peer_id=peer_id, rng=random.Random(2),
                          on_complete=lambda: self.completed.append(self.clock.seconds()))

    def connect(self):
        self.s_proto, self.p_proto, self.pump = connect_swarms(self.seeder, self.peer,
                                                               clock=self.clock)
        self.pump.flush()
        return self.pump


class EndToEndTests:
    """A seeder and a peer exchange a whole torrent over iosim."""

    def test_download_in_memory(self, errors):
        """The peer ends with the exact payload, on_complete fires once, both drop."""
        pair = Pair()
        pair.connect()
        assert bytes(pair.peer_storage.buffer) == pair.payload
        assert sorted(pair.peer_storage.writes) == list(range(pair.meta.num_pieces))
        assert pair.completed == [0]
        assert pair.peer.is_seed and pair.peer.left() == 0
        assert pair.peer.downloaded == pair.meta.total_length
        assert pair.seeder.uploaded == pair.meta.total_length
        assert pair.peer.hash_failures == 0 and pair.peer.wasted == 0
        # Two seeds have nothing to say to each other.
        assert pair.peer.connections == {} and pair.seeder.connections == {}
        assert errors == []

    def test_download_without_fast_extension(self, errors):
        """A peer without BEP 6 (no fast bit) still downloads everything."""
        pair = Pair(peer_config=SwarmConfig(fast=False))
        pair.connect()
        assert bytes(pair.peer_storage.buffer) == pair.payload
        assert pair.completed == [0]
        assert errors == []

    def test_download_multi_file_on_disk(self, tmp_path, errors):
        """Real SeedStorage → DownloadStorage: the tree lands intact after finalize."""
        tree = {"a": data(20_000, 1), "b/c": data(50_001, 2), "d": data(3, 3)}
        meta, payload = build_torrent(tree, name="tree", piece_length=PLEN)
        src = tmp_path / "src" / "tree"
        for rel, content in tree.items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(content)
        seed_storage = SeedStorage(meta, str(src))
        seed_storage.verify_all()
        (tmp_path / "dst").mkdir()
        dst = DownloadStorage(meta, str(tmp_path / "dst" / "tree"))
        assert dst.prepare().count == 0
        pair = Pair(meta=meta, seed_storage=seed_storage, peer_storage=dst)
        pair.payload = payload
        pair.connect()
        assert pair.completed == [0]
        dst.finalize()
        for rel, content in tree.items():
            assert (tmp_path / "dst" / "tree" / rel).read_bytes() == content
        assert errors == []

    def test_peer_complete_at_start_serves_from_target(self, tmp_path, errors):
        """A peer that found the payload already at its target uploads it from there."""
        meta, payload = build_torrent(data(3 * PLEN + 5), name="p.bin", piece_length=PLEN)
        (tmp_path / "p.bin").write_bytes(payload)
        st = DownloadStorage(meta, str(tmp_path / "p.bin"))
        have = st.prepare()
        assert have.complete
        st.finalize()
        pair = Pair(meta=meta, seed_storage=st)
        pair.payload = payload
        pair.connect()
        assert bytes(pair.peer_storage.buffer) == payload
        assert pair.completed == [0]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["p.bin"]
        assert errors == []

    def test_peer_to_peer_relay(self, errors):
        """A second peer downloads from the first once the first is complete."""
        pair = Pair()
        pair.connect()
        later = Swarm(pair.meta, MemoryStorage(pair.meta), Bitfield(pair.meta.num_pieces),
                      pair.clock, peer_id=b"-MU0100-latecomer000")
        connect_swarms(pair.peer, later, clock=pair.clock)[2].flush()
        assert bytes(later.storage.buffer) == pair.payload
        assert pair.peer.uploaded == pair.meta.total_length

    def test_storage_failure_fails_the_swarm(self):
        """A disk error while writing a piece fails swarm.failure with that StorageError."""
        pair = Pair()
        pair.peer_storage.fail_writes = StorageError("/x", "no space left on device")
        failures = []
        pair.peer.failure.addErrback(failures.append)
        pair.connect()
        assert failures and failures[0].value is pair.peer_storage.fail_writes
        assert pair.peer.failed is pair.peer_storage.fail_writes
        assert pair.completed == []
        assert pair.peer.connections == {}


class HandshakeTests:
    """Wrong torrent, ourselves, duplicates: dropped."""

    def test_wrong_info_hash(self, errors):
        """A peer of another torrent is dropped by the accepting side; nothing exchanged."""
        pair = Pair()
        other_meta, _ = build_torrent(b"other" * 1000, piece_length=PLEN)
        stranger = Swarm(other_meta, MemoryStorage(other_meta), Bitfield(other_meta.num_pieces),
                         pair.clock, peer_id=PEER_ID)
        s_proto, c_proto, pump = connect_swarms(pair.seeder, stranger, clock=pair.clock)
        pump.flush()
        assert pair.seeder.connections == {} and stranger.connections == {}
        assert s_proto.state.value == "closed" and c_proto.state.value == "closed"
        assert pair.seeder.uploaded == 0
        assert errors == []

    def test_connection_to_self(self, errors):
        """A swarm that dials itself drops the connection on both ends."""
        pair = Pair()
        s_proto, c_proto, pump = connect_swarms(pair.peer, pair.peer, clock=pair.clock)
        pump.flush()
        assert pair.peer.connections == {}
        assert s_proto.state.value == "closed" and c_proto.state.value == "closed"
        assert errors == []

    @pytest.mark.parametrize("a_id, b_id", [
        (b"-MU0100-aaaaaaaaaaaa", b"-MU0100-bbbbbbbbbbbb"),
        (b"-MU0100-bbbbbbbbbbbb", b"-MU0100-aaaaaaaaaaaa"),
    ])
    def test_duplicate_peer_id(self, a_id, b_id, errors):
        """Both dial each other: both ends keep the same one connection (smaller id's dial)."""
        clock = FakeReactor()
        meta, payload = build_torrent(data(3 * PLEN), piece_length=PLEN)
        n = meta.num_pieces
        a = Swarm(meta, MemoryStorage(meta), Bitfield(n), clock, peer_id=a_id)
        b = Swarm(meta, MemoryStorage(meta), Bitfield(n), clock, peer_id=b_id)
        b_acc, a_dial, pump1 = connect_swarms(b, a, clock=clock)  # a dials b
        a_acc, b_dial, pump2 = connect_swarms(a, b, clock=clock)  # b dials a
        for _ in range(3):
            pump1.flush()
            pump2.flush()
        assert len(a.connections) == 1 and len(b.connections) == 1
        if a_id < b_id:
            assert a.connections[b_id].link is a_dial and b.connections[a_id].link is b_acc
        else:
            assert a.connections[b_id].link is a_acc and b.connections[a_id].link is b_dial
        assert errors == []

    def test_incoming_handshake_split_byte_by_byte(self):
        """A handshake arriving one byte at a time is still accepted."""
        pair = Pair()
        from twisted.internet.testing import StringTransport
        from murder.peer.protocol import PeerProtocol

        proto = PeerProtocol(pair.seeder, outgoing=False, address=("10.0.0.5", 1))
        proto.makeConnection(StringTransport())
        for byte in wire.handshake(pair.meta.info_hash, PEER_ID):
            proto.dataReceived(bytes([byte]))
        assert pair.seeder.connections == {PEER_ID: proto.peer}

    def test_not_bittorrent(self, errors):
        """An HTTP request instead of a handshake is dropped at the first byte."""
        pair = Pair()
        from twisted.internet.testing import StringTransport
        from murder.peer.protocol import PeerProtocol

        tr = StringTransport()
        proto = PeerProtocol(pair.seeder, outgoing=False, address=("10.0.0.5", 1))
        proto.makeConnection(tr)
        proto.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
        assert tr.disconnecting and tr.value() == b""
        assert errors == []


class HostileInputTests:
    """Bad bytes close the connection: no exception, no write, a ban for bad data."""

    @pytest.mark.parametrize("garbage", [
        b"\xff" * 64,                                   # absurd length prefix
        wire.request(99, 0, BLOCK_SIZE),                # piece index out of range
        wire.piece_header(0, PLEN, 10) + bytes(10),     # block beyond the piece
        struct.pack(">IB", 3, wire.HAVE) + b"xx",       # wrong fixed length
        wire.bitfield(b"\xff\xff"),                     # wrong size for 6 pieces
        wire.bitfield(b"\xff"),                         # spare bits set (6 pieces)
    ])
    def test_garbage_after_handshake(self, garbage, errors):
        """The connection is closed, the sender banned, nothing written, nothing raised."""
        pair = Pair()
        remote = RemotePeer(pair.peer, SEED_ID)
        assert pair.peer.connections == {SEED_ID: remote.protocol.peer}
        remote.send(garbage)
        assert remote.closed
        assert pair.peer_storage.writes == []
        assert SEED_ID in pair.peer.admission.banned_ids
        remote.lose()
        assert pair.peer.connections == {}
        assert errors == []

    def test_bad_piece_bans_the_sender(self, errors):
        """A seeder serving a piece that fails its hash is banned; the piece is never written."""
        meta, payload = build_torrent(data(5 * PLEN + 777), piece_length=PLEN)
        bad = bytearray(payload)
        bad[2 * PLEN + 100] ^= 0xFF
        pair = Pair(meta=meta, seed_storage=MemoryStorage(meta, bytes(bad)))
        pair.payload = payload
        pair.connect()
        assert pair.peer.hash_failures == 1
        assert SEED_ID in pair.peer.admission.banned_ids
        assert 2 not in pair.peer_storage.writes
        assert 2 not in pair.peer.have
        assert pair.completed == []
        assert pair.peer.connections == {}
        # A banned peer cannot come back.
        pump = connect_swarms(pair.seeder, pair.peer, clock=pair.clock)[2]
        pump.flush()
        assert pair.peer.connections == {}
        assert errors == []

    def test_unrequested_piece_is_wasted_not_written(self, errors):
        """A PIECE nobody asked for is counted as waste and never written."""
        pair = Pair()
        remote = RemotePeer(pair.peer, SEED_ID)
        block = pair.payload[:BLOCK_SIZE]
        remote.send(wire.piece_header(0, 0, BLOCK_SIZE) + block)
        assert not remote.closed
        assert pair.peer.wasted == BLOCK_SIZE and pair.peer_storage.writes == []
        assert errors == []


class FlowControlTests:
    """Choke, reject and super-seeding, with a hand-driven remote."""

    def unchoked_remote(self, pair: Pair, fast: bool, peer_id: bytes = SEED_ID) -> RemotePeer:
        remote = RemotePeer(pair.peer, peer_id, fast=fast)
        remote.send(wire.simple(wire.HAVE_ALL) if fast
                    else wire.bitfield(Bitfield(pair.meta.num_pieces, full=True).tobytes()))
        msgs = remote.sent()
        assert (wire.INTERESTED, None, None, None) in msgs
        remote.send(wire.simple(wire.UNCHOKE))
        return remote

    def test_requests_after_unchoke(self):
        """After unchoke a standard client gets a pipeline of 16 KiB requests."""
        pair = Pair()
        remote = self.unchoked_remote(pair, fast=True, peer_id=b"-TR3000-standardclnt")
        reqs = [m for m in remote.sent() if m[0] == wire.REQUEST]
        assert len(reqs) == SwarmConfig().min_pipeline
        assert all(m[3] == BLOCK_SIZE for m in reqs)
        assert set(remote.protocol.peer.outstanding) == {m[1:] for m in reqs}

    def test_large_requests_to_murder_peers(self):
        """Another murder peer is asked for consecutive blocks in one request,
        never across a piece boundary; the pipeline holds as many bytes."""
        pair = Pair()
        remote = self.unchoked_remote(pair, fast=True)
        reqs = [m for m in remote.sent() if m[0] == wire.REQUEST]
        piece_length = pair.meta.piece_length
        assert BLOCK_SIZE < piece_length <= SwarmConfig().request_size
        assert all(begin == 0 and length == piece_length for _, _, begin, length in reqs)
        assert sum(m[3] for m in reqs) == SwarmConfig().min_pipeline * BLOCK_SIZE
        assert set(remote.protocol.peer.outstanding) == {m[1:] for m in reqs}

    def test_choke_drops_outstanding_requests(self):
        """Without the fast extension, a choke cancels every outstanding request."""
        pair = Pair(peer_config=SwarmConfig(fast=False))
        remote = self.unchoked_remote(pair, fast=False)
        reqs = [m[1:] for m in remote.sent() if m[0] == wire.REQUEST]
        assert reqs
        remote.send(wire.simple(wire.CHOKE))
        assert remote.protocol.peer.outstanding == {}
        assert all(not piece.requested for piece in pair.peer.picker.in_progress.values())
        # Unchoked again: a full pipeline is asked for again.
        remote.send(wire.simple(wire.UNCHOKE))
        again = [m[1:] for m in remote.sent() if m[0] == wire.REQUEST]
        assert len(again) == len(reqs)
        assert set(remote.protocol.peer.outstanding) == set(again)

    def test_reject_requeues_block(self):
        """A REJECT removes the request; the block goes back to the picker for others."""
        pair = Pair()
        remote = self.unchoked_remote(pair, fast=True)
        reqs = [m[1:] for m in remote.sent() if m[0] == wire.REQUEST]
        victim = reqs[-1]
        remote.send(wire.reject(*victim))
        assert victim not in remote.protocol.peer.outstanding
        assert victim[0] in remote.protocol.peer.rejected
        piece = pair.peer.picker.in_progress[victim[0]]
        assert victim[1] // BLOCK_SIZE in piece.unrequested
        # Another peer asking now gets the rejected block.
        other = RemotePeer(pair.peer, b"-MU0100-otherotherot", address=("10.0.0.8", 1))
        other.send(wire.simple(wire.HAVE_ALL))
        other.send(wire.simple(wire.UNCHOKE))
        assert victim in {m[1:] for m in other.sent() if m[0] == wire.REQUEST}

    def test_reject_of_unrequested_block_ignored(self):
        """A REJECT for something we never asked for changes nothing."""
        pair = Pair()
        remote = self.unchoked_remote(pair, fast=True)
        remote.sent()
        before = dict(remote.protocol.peer.outstanding)
        remote.send(wire.reject(5, 0, 777))
        assert remote.protocol.peer.outstanding == before and not remote.closed

    def test_choked_request_gets_reject(self):
        """A request while we choke is rejected (fast) and never served."""
        pair = Pair()
        remote = RemotePeer(pair.seeder, PEER_ID)
        assert remote.sent() == [(wire.HAVE_ALL, None, None, None)]
        remote.send(wire.request(0, 0, BLOCK_SIZE))
        assert remote.sent() == [(wire.REJECT, 0, 0, BLOCK_SIZE)]

    def test_super_seed_rejects_piece_someone_has_once(self):
        """Super-seeding: a piece another peer has is refused for one burst, then served."""
        pair = Pair(seeder_config=SwarmConfig(super_seed=True))
        n = pair.meta.num_pieces
        holder = RemotePeer(pair.seeder, b"-MU0100-holderholder", address=("10.0.0.3", 1))
        has0 = Bitfield(n)
        has0.add(0)
        holder.send(wire.bitfield(has0.tobytes()))
        asker = RemotePeer(pair.seeder, PEER_ID, address=("10.0.0.4", 1))
        asker.send(wire.simple(wire.HAVE_NONE) + wire.simple(wire.INTERESTED))
        assert (wire.UNCHOKE, None, None, None) in asker.sent()
        asker.send(wire.request(1, 0, BLOCK_SIZE))  # nobody has piece 1: served
        assert asker.sent() == [(wire.PIECE, 1, 0, pair.payload[PLEN:PLEN + BLOCK_SIZE])]
        asker.send(wire.request(0, 0, BLOCK_SIZE) + wire.request(0, BLOCK_SIZE, BLOCK_SIZE))
        # The whole burst of requests for that piece is refused …
        assert asker.sent() == [(wire.REJECT, 0, 0, BLOCK_SIZE),
                                (wire.REJECT, 0, BLOCK_SIZE, BLOCK_SIZE)]
        # … and asking again a second later means it has no other source: served.
        pair.seeder.clock.advance(1.0)
        asker.send(wire.request(0, 0, BLOCK_SIZE))
        assert asker.sent() == [(wire.PIECE, 0, 0, pair.payload[:BLOCK_SIZE])]

    def test_super_seed_duplicates_only_after_every_piece_has_left(self):
        """Every piece being *assigned* is not every piece *sent*: until the last
        first copy has left, a piece on its way to one peer is refused to others;
        after that, spare upload serves duplicates (the tail budget)."""
        pair = Pair(seeder_config=SwarmConfig(super_seed=True, seed_budget=1.5))
        n = pair.meta.num_pieces
        first = RemotePeer(pair.seeder, PEER_ID, address=("10.0.0.4", 1))
        first.send(wire.simple(wire.HAVE_NONE) + wire.simple(wire.INTERESTED))
        first.sent()
        size = pair.meta.piece_size
        first.send(b"".join(wire.request(i, 0, min(BLOCK_SIZE, size(i))) for i in range(n)))
        assert [m[0] for m in first.sent()] == [wire.PIECE] * n  # all assigned to `first`
        other = RemotePeer(pair.seeder, b"-MU0100-otherotherot", address=("10.0.0.5", 1))
        other.send(wire.simple(wire.HAVE_NONE) + wire.simple(wire.INTERESTED))
        other.sent()
        other.send(wire.request(0, 0, BLOCK_SIZE))
        assert other.sent() == [(wire.REJECT, 0, 0, BLOCK_SIZE)]
        assert pair.seeder.uploads.first_copy_at is None
        rest = [(i, b, min(BLOCK_SIZE, size(i) - b)) for i in range(n)
                for b in range(BLOCK_SIZE, size(i), BLOCK_SIZE)]
        first.send(b"".join(wire.request(*r) for r in rest))
        assert len(first.sent()) == len(rest)
        assert pair.seeder.uploads.first_copy_at is not None
        assert pair.seeder.uploads.uploaded_at_first_copy == pair.meta.total_length
        other.send(wire.request(1, 0, BLOCK_SIZE))
        assert other.sent() == [(wire.PIECE, 1, 0, pair.payload[PLEN:PLEN + BLOCK_SIZE])]

    def test_default_seed_budget_serves_no_free_duplicates(self):
        """With the default budget (one copy) a piece a peer holds is refused even
        after every piece has left; asking again a second later is still served."""
        pair = Pair(seeder_config=SwarmConfig(super_seed=True))
        n, size = pair.meta.num_pieces, pair.meta.piece_size
        first = RemotePeer(pair.seeder, PEER_ID, address=("10.0.0.4", 1))
        first.send(wire.simple(wire.HAVE_NONE) + wire.simple(wire.INTERESTED))
        first.send(b"".join(wire.request(i, b, min(BLOCK_SIZE, size(i) - b))
                            for i in range(n) for b in range(0, size(i), BLOCK_SIZE)))
        first.send(b"".join(wire.have(i) for i in range(n)))
        assert pair.seeder.uploads.first_copy_at is not None
        other = RemotePeer(pair.seeder, b"-MU0100-otherotherot", address=("10.0.0.5", 1))
        other.send(wire.simple(wire.HAVE_NONE) + wire.simple(wire.INTERESTED))
        other.sent()
        other.send(wire.request(1, 0, BLOCK_SIZE))
        assert other.sent() == [(wire.REJECT, 1, 0, BLOCK_SIZE)]
        pair.seeder.clock.advance(1.0)
        other.send(wire.request(1, 0, BLOCK_SIZE))
        assert [m[0] for m in other.sent()] == [wire.PIECE]

    def test_cancel_removes_queued_block(self):
        """A CANCEL for a block still queued (transport paused) means it is never sent."""
        pair = Pair()
        remote = RemotePeer(pair.seeder, PEER_ID)
        remote.send(wire.simple(wire.HAVE_NONE) + wire.simple(wire.INTERESTED))
        remote.sent()
        remote.protocol.pauseProducing()
        remote.send(wire.request(0, 0, BLOCK_SIZE) + wire.request(0, BLOCK_SIZE, BLOCK_SIZE))
        remote.send(wire.cancel(0, 0, BLOCK_SIZE))
        remote.protocol.resumeProducing()
        assert remote.sent() == [(wire.PIECE, 0, BLOCK_SIZE,
                                  pair.payload[BLOCK_SIZE:2 * BLOCK_SIZE])]

    def test_snubbing_peer_loses_its_requests(self):
        """A peer that never answers loses its requests after snub_timeout."""
        pair = Pair()
        pair.peer.start()
        remote = self.unchoked_remote(pair, fast=True)
        assert remote.protocol.peer.outstanding
        pair.clock.advance(SwarmConfig().snub_timeout + 1)
        assert remote.protocol.peer.outstanding == {} or all(
            t > SwarmConfig().snub_timeout for t in remote.protocol.peer.outstanding.values())
        pair.peer.stop()


class RateCapTests:
    """The upload cap holds however requests arrive."""

    SIZE = 8 * PLEN

    def _run(self, **configs) -> float:
        pair = Pair(data(self.SIZE), **configs)
        pump = pair.connect()
        for _ in range(4000):  # bounded: 200 simulated seconds
            if pair.completed:
                break
            pair.clock.advance(0.05)
            pump.flush()
        assert pair.completed, "download did not finish"
        assert bytes(pair.peer_storage.buffer) == pair.payload
        return pair.completed[0]

    def test_uncapped_is_fast(self):
        """Without caps the in-memory transfer finishes in the first simulated tick."""
        assert self._run() <= 0.1

    def test_upload_cap(self):
        """A seeder capped at RATE bytes/s cannot deliver faster than that.

        (The download cap pauses reading from the socket, which iosim does not
        model; tests/test_swarm_integration.py checks it over real TCP.)"""
        rate = self.SIZE // 4
        took = self._run(seeder_config=SwarmConfig(max_upload_rate=rate))
        # The quarter-second burst and the block in flight when credit ran out
        # (one request: up to request_size between murder peers).
        in_flight = min(SwarmConfig().request_size, PLEN)
        assert took >= (self.SIZE - rate / 4 - in_flight) / rate - 0.1
        assert took <= self.SIZE / rate + 2.0


class StallTests:
    """A download that cannot progress fails instead of hanging."""

    def test_no_source_fails_after_stall_timeout(self):
        """With no peer able to send anything, done fails with StalledError after the timeout."""
        from murder.errors import StalledError

        pair = Pair(peer_config=SwarmConfig(stall_timeout=30.0))
        failures = []
        pair.peer.failure.addErrback(failures.append)
        pair.peer.start()
        pair.clock.advance(29.0)
        assert not failures
        for _ in range(8):
            pair.clock.advance(0.25)
        assert len(failures) == 1 and failures[0].check(StalledError)
        assert "no piece verified for 30s with 0 peers connected; 6 pieces missing" == \
            str(failures[0].value)

    def test_progress_resets_the_stall_clock(self):
        """A transfer that completes is never failed by the stall timer."""
        pair = Pair(peer_config=SwarmConfig(stall_timeout=30.0))
        pair.peer.start()
        pair.connect()
        pair.clock.advance(60.0)
        assert pair.completed and pair.peer.failed is None
