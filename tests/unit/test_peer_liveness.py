"""Liveness of the swarm core: a silent or wedged neighbour never hangs a peer.

Everything runs in memory on one :class:`~murder.testing.FakeReactor`: real
swarms joined by ``iosim`` pumps, hostile neighbours played by
:class:`~murder.testing.RemotePeer`, time moved with ``advance``.
"""

from __future__ import annotations

import random

from murder.peer import wire
from murder.peer.session import Swarm, SwarmConfig, make_peer_id, promises_keepalives
from murder.peer.wire import BLOCK_SIZE, Bitfield
from murder.testing import FakeReactor, MemoryStorage, RemotePeer, build_torrent, connect_swarms
from murder.testing import pattern as payload

PLEN = 2**15


def run_until(clock: FakeReactor, pumps, done, limit: float, step: float = 0.05) -> float:
    """Advance time in small steps, moving bytes each step, until ``done()``
    or ``limit`` seconds; return the time taken."""
    start = clock.seconds()
    for _ in range(int(limit / step)):
        for pump in pumps:
            pump.flush()
        if done():
            break
        clock.advance(step)
    return clock.seconds() - start


class SilentNeighbourTests:
    """The CI stall of test_silent_peer_requests_go_elsewhere, reproduced in memory."""

    def test_pieces_the_seeder_refused_are_asked_again_when_the_other_holder_is_silent(self):
        """A super-seeding seeder refuses pieces another peer holds.  When that
        holder leaves, the only other peer claiming those pieces is silent
        (HAVE_ALL, unchokes, never sends a block).  Once the silent peer is
        snubbed it is no source: the refused pieces are asked of the seeder
        again, which serves them, and the download completes.  (Before the
        fix the silent holder counted as a source for ever and the peer
        stalled at the refused pieces.)"""
        meta, data = build_torrent(payload(8 * PLEN), piece_length=PLEN)
        clock = FakeReactor()
        n = meta.num_pieces
        seeder = Swarm(meta, MemoryStorage(meta, data), Bitfield(n, full=True), clock,
                       SwarmConfig(super_seed=True), peer_id=b"-MU0110-seederseeder",
                       rng=random.Random(1))
        done: list[float] = []
        peer = Swarm(meta, MemoryStorage(meta), Bitfield(n), clock,
                     SwarmConfig(snub_timeout=3.0), peer_id=b"-MU0110-peerpeerpeer",
                     rng=random.Random(2), on_complete=lambda: done.append(clock.seconds()))
        peer.start()
        # Another peer holds the first half: the seeder will refuse those pieces.
        holder = RemotePeer(seeder, b"-MU0110-holderholder", address=("10.0.0.3", 1))
        half = Bitfield(n)
        for i in range(n // 2):
            half.add(i)
        holder.send(wire.bitfield(half.tobytes()))
        # A silent peer that claims everything, unchokes, and never answers.
        silent = RemotePeer(peer, b"-HS0001-silentsilent", address=("10.0.0.9", 2))
        silent.send(wire.simple(wire.HAVE_ALL) + wire.simple(wire.UNCHOKE))
        _, _, pump = connect_swarms(seeder, peer, clock=clock)
        run_until(clock, [pump], lambda: bool(peer.connections) and any(
            c.rejected for c in peer.connections.values()), 5)
        assert any(c.rejected for c in peer.connections.values()), "the seeder refused nothing"
        holder.lose()
        took = run_until(clock, [pump], lambda: bool(done), 60)
        assert done, (f"stalled at {peer.have.count}/{n} pieces after {took:.1f}s "
                      f"(silent peer asked {len(silent.sent())} times)")
        assert peer.storage.buffer == data
        # Three snub periods at most: silent peer snubbed, seeder asked again.
        assert took < 3 * 3.0 + 2, took
        peer.stop()


def hold_turn_with_full_socket(remote: RemotePeer, requests: list[tuple[int, int, int]]) -> None:
    """``remote`` queues ``requests`` while its socket is full, then gets its
    upload turn, is sent one block and its socket is full again: it holds
    the turn with requests queued, as a receiver that stopped reading does."""
    proto = remote.protocol
    proto.pauseProducing()
    remote.send(b"".join(wire.request(*r) for r in requests))
    transport = proto.transport
    plain = transport.writeSequence

    def write_then_pause(data) -> None:
        plain(data)
        proto.pauseProducing()

    transport.writeSequence = write_then_pause
    proto.resumeProducing()
    assert len(proto.peer.upload_queue) == len(requests) - 1


def held_turn_and_one_waiting(uploader: Swarm) -> tuple[RemotePeer, RemotePeer]:
    """Two interested downloaders of ``uploader``: the first holds the upload
    turn with its socket full and piece 0 half sent; the second waits."""
    holder = RemotePeer(uploader, b"-MU0110-holderholder", address=("10.0.0.4", 1))
    waiting = RemotePeer(uploader, b"-MU0110-waitingwaiti", address=("10.0.0.5", 1))
    for r in (holder, waiting):
        r.send(wire.simple(wire.HAVE_NONE) + wire.simple(wire.INTERESTED))
        r.sent()
    hold_turn_with_full_socket(holder, [(0, 0, BLOCK_SIZE), (0, BLOCK_SIZE, BLOCK_SIZE)])
    return holder, waiting


class WedgedUploaderTests:
    """A murder peer that stops sending anything is noticed in seconds."""

    def _pair(self, snub_timeout: float = 30.0):
        # 128 blocks, and a pipeline of 96 for the first source: more than
        # the endgame's 64, so duplicates cannot hide a wedged source.
        meta, data = build_torrent(payload(64 * PLEN), piece_length=PLEN)
        clock = FakeReactor()
        n = meta.num_pieces
        done: list[float] = []
        seeder = Swarm(meta, MemoryStorage(meta, data), Bitfield(n, full=True), clock,
                       SwarmConfig(upload_slots=1), peer_id=b"-MU0110-seederseeder", rng=random.Random(1))
        peer = Swarm(meta, MemoryStorage(meta), Bitfield(n), clock,
                     SwarmConfig(snub_timeout=snub_timeout, min_pipeline=96),
                     peer_id=b"-MU0110-peerpeerpeer",
                     rng=random.Random(2), on_complete=lambda: done.append(clock.seconds()))
        peer.start()
        return meta, data, clock, seeder, peer, done

    def test_wedged_murder_peer_loses_its_requests_after_quiet_timeout(self):
        """A murder peer (keep-alive promise in its id) that goes totally
        silent with our requests pending is snubbed after ``quiet_timeout``
        (3 s), not the 30 s snub timer: its requests go to the seeder and
        the download completes in a few seconds."""
        meta, data, clock, seeder, peer, done = self._pair()
        wedged = RemotePeer(peer, b"-MU0110-wedgedwedged", address=("10.0.0.7", 3))
        wedged.send(wire.simple(wire.HAVE_ALL) + wire.simple(wire.UNCHOKE))
        assert wedged.protocol.peer.outstanding, "nothing was asked of the wedged peer"
        _, _, pump = connect_swarms(seeder, peer, clock=clock)
        took = run_until(clock, [pump], lambda: bool(done), 60)
        assert done and peer.storage.buffer == data
        assert SwarmConfig().quiet_timeout < took < SwarmConfig().quiet_timeout + 2, took
        assert wedged.protocol.peer.snubbed
        peer.stop()

    def test_a_starved_process_does_not_blame_its_peers(self):
        """When this process itself did not run for seconds (one late tick),
        the silence it sees is its own: nobody is snubbed on that tick; a
        peer still silent on the next regular tick is."""
        meta, data, clock, seeder, peer, done = self._pair()
        wedged = RemotePeer(peer, b"-MU0110-wedgedwedged", address=("10.0.0.7", 3))
        wedged.send(wire.simple(wire.HAVE_ALL) + wire.simple(wire.UNCHOKE))
        assert wedged.protocol.peer.outstanding
        clock.advance(SwarmConfig().quiet_timeout + 2)  # one late tick
        assert not wedged.protocol.peer.snubbed
        clock.advance(SwarmConfig().tick)
        assert wedged.protocol.peer.snubbed
        peer.stop()

    def test_standard_client_is_judged_by_the_snub_timer_only(self):
        """A standard client promises no keep-alives: silence alone is not
        enough; its requests are taken back at ``snub_timeout``."""
        meta, data, clock, seeder, peer, done = self._pair(snub_timeout=8.0)
        other = RemotePeer(peer, b"-TR3000-standardclnt", address=("10.0.0.7", 3))
        other.send(wire.simple(wire.HAVE_ALL) + wire.simple(wire.UNCHOKE))
        asked = set(other.protocol.peer.outstanding)
        assert asked
        clock.advance(SwarmConfig().quiet_timeout + 1)
        assert set(other.protocol.peer.outstanding) == asked and not other.protocol.peer.snubbed
        clock.advance(8.0)
        assert other.protocol.peer.snubbed
        assert not (set(other.protocol.peer.outstanding) - {(i, b, ln) for i, b, ln in asked})
        assert len(other.protocol.peer.outstanding) <= 1  # one probe at a time
        peer.stop()

    def test_keepalives_keep_a_busy_uploader_from_being_snubbed(self):
        """A murder peer whose requests wait behind another peer's upload turn
        hears a keep-alive every ``keepalive_interval``; so it does not take
        the uploader for wedged."""
        meta, data, clock, seeder, peer, done = self._pair()
        seeder.start()
        first, waiting = held_turn_and_one_waiting(seeder)
        waiting.send(wire.request(1, 0, BLOCK_SIZE))
        assert waiting.sent() == []
        clock.advance(1.25)
        assert waiting.sent() == [(None, None, None, None)]  # a keep-alive
        seeder.stop()
        peer.stop()

    def test_turn_of_a_downloader_that_does_not_read_passes_on(self):
        """An upload turn whose receiver stopped reading (its socket stays
        full) passes to the next peer in line after ``stuck_turn_timeout``;
        one wedged downloader does not hold every other one up."""
        meta, data, clock, seeder, peer, done = self._pair()
        seeder.start()
        stuck, other = held_turn_and_one_waiting(seeder)
        other.send(wire.request(1, 0, BLOCK_SIZE))
        assert not [m for m in other.sent() if m[0] == wire.PIECE]
        clock.advance(SwarmConfig().stuck_turn_timeout + 0.5)
        assert [m for m in other.sent() if m[0] == wire.PIECE] == [
            (wire.PIECE, 1, 0, data[PLEN:PLEN + BLOCK_SIZE])]
        seeder.stop()
        peer.stop()


class FrozenOwnerTests:
    """A super-seeding seeder does not keep pieces for a peer that stopped reading."""

    def test_piece_on_its_way_to_a_frozen_peer_is_served_to_others(self):
        """The seeder refuses others a piece on its way to one peer, so its
        upload goes to pieces nobody has.  When that peer stops reading (its
        socket stays full for ``stuck_turn_timeout``) the piece is not on its
        way any more: another peer asking again gets it.  (Before, every peer
        of a swarm sat waiting while one SIGSTOPped host held its pieces.)"""
        meta, data = build_torrent(payload(8 * PLEN), piece_length=PLEN)
        clock = FakeReactor()
        n = meta.num_pieces
        seeder = Swarm(meta, MemoryStorage(meta, data), Bitfield(n, full=True), clock,
                       SwarmConfig(super_seed=True), peer_id=b"-MU0110-seederseeder",
                       rng=random.Random(1))
        seeder.start()
        frozen, other = held_turn_and_one_waiting(seeder)
        other.send(wire.request(0, BLOCK_SIZE, BLOCK_SIZE))
        assert other.sent() == [(wire.REJECT, 0, BLOCK_SIZE, BLOCK_SIZE)]  # on its way
        clock.advance(SwarmConfig().stuck_turn_timeout + 0.5)
        other.sent()
        other.send(wire.request(0, BLOCK_SIZE, BLOCK_SIZE))
        clock.advance(SwarmConfig().tick)  # the frozen peer's upload turn passes on
        assert other.sent() == [(wire.PIECE, 0, BLOCK_SIZE, data[BLOCK_SIZE:2 * BLOCK_SIZE])]
        seeder.stop()


class DroppedConnectionTests:
    """Requests never stay with a connection the core has let go of."""

    def test_superseded_connection_that_still_talks_holds_no_blocks(self):
        """A connection superseded by a duplicate (both hosts dialled at once)
        is closed, but its bytes may still arrive before the close completes.
        They must not lead to requests: the core has forgotten that peer, so
        blocks asked of it would stay 'requested' for ever and, beyond the
        endgame's reach, the download would stall (seen at 114/128 pieces in
        an N=16 bench run).  Whatever it was asked, its loss gives back."""
        meta, data = build_torrent(payload(64 * PLEN), piece_length=PLEN)
        clock = FakeReactor()
        n = meta.num_pieces
        peer = Swarm(meta, MemoryStorage(meta), Bitfield(n), clock, SwarmConfig(),
                     peer_id=b"-MU0110-peerpeerpeer", rng=random.Random(2))
        old = RemotePeer(peer, b"-MU0100-duplicatedup", address=("10.0.0.4", 1))
        new = RemotePeer(peer, b"-MU0100-duplicatedup", address=("10.0.0.4", 2))
        assert old.closed and not new.closed  # the older one was superseded
        old.send(wire.simple(wire.HAVE_ALL) + wire.simple(wire.UNCHOKE))
        assert not [m for m in old.sent() if m[0] == wire.REQUEST]
        old.lose()
        new.send(wire.simple(wire.HAVE_ALL) + wire.simple(wire.UNCHOKE))
        asked = [m for m in new.sent() if m[0] == wire.REQUEST]
        assert asked, "the live connection was asked for nothing"
        held = {b for piece in peer.picker.in_progress.values()
                for b, who in piece.requested.items() if who and old.protocol.peer in who}
        assert held == set()


class PeerIdTests:
    """Which peers promise keep-alives."""

    def test_version_gate(self):
        """Ours (0110 and later) do; older murder peers and other clients do not."""
        assert promises_keepalives(make_peer_id())
        assert not promises_keepalives(b"-MU0100-abcdefghijkl")
        assert not promises_keepalives(b"-TR3000-abcdefghijkl")
        assert not promises_keepalives(b"-MUxxxx-abcdefghijkl")
