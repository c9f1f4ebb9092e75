"""Piece completion through a PieceWriter (``--hash-threads``), in memory.

The core hands an assembled piece to the writer and only marks it had (HAVE
to everyone, completion) when the writer says it was verified and written;
a mismatch blames and re-fetches as on the reactor thread; a disk error
fails the swarm; while the writer is full no new requests leave.  The
writer's thread pool is a fake that runs a job only when the test says so.
"""

from __future__ import annotations

import random

import pytest
from twisted.internet.task import Clock
from twisted.python import usage

from murder.errors import StorageError
from murder.peer.blame import Blame
from murder.peer.interfaces import PieceSink
from murder.peer.picker import PieceInProgress
from murder.peer.session import Swarm, SwarmConfig
from murder.peer.storage import PieceWriter
from murder.peer.wire import BLOCK_SIZE, Bitfield
from murder.testing import MemoryNetwork, MemoryStorage, build_torrent
from murder.testing import pattern as _payload, ManualPool, InlineReactor

PLEN = 2**15


class Pair:
    """A seeder and one downloading peer whose pieces go through a PieceWriter."""

    def __init__(self, pieces: int = 6, max_pending_bytes: int = 64 * 2**20,
                 corrupt_seeder: bool = False, **peer_config) -> None:
        self.meta, self.data = build_torrent(_payload(pieces * PLEN - 100), piece_length=PLEN)
        self.clock = Clock()
        self.net = MemoryNetwork()
        seed_storage = MemoryStorage(self.meta, self.data)
        if corrupt_seeder:
            seed_storage.buffer[:] = bytes(len(seed_storage.buffer))
        n = self.meta.num_pieces
        self.seeder = Swarm(self.meta, seed_storage, Bitfield(n, full=True), self.clock,
                            SwarmConfig(), rng=random.Random(0), dialer=self.net)
        self.storage = MemoryStorage(self.meta)
        self.pool = ManualPool()
        self.writer = PieceWriter(self.storage, self.meta.pieces, reactor=InlineReactor(),
                                  threadpool=self.pool, max_pending_bytes=max_pending_bytes)
        self.done: list[bool] = []
        self.peer = Swarm(self.meta, self.storage, Bitfield(n), self.clock,
                          SwarmConfig(**peer_config),
                          rng=random.Random(1), dialer=self.net, writer=self.writer,
                          on_complete=lambda: self.done.append(True))
        self.net.listen(self.seeder, ("10.0.0.1", 6881))
        self.net.listen(self.peer, ("10.0.0.2", 6881))
        for swarm in (self.seeder, self.peer):
            swarm.start()
        self.peer.add_peers([(("10.0.0.1", 6881), None)])
        self.net.flush()

    def step(self, run_pool: bool = True) -> None:
        self.clock.advance(0.25)
        self.net.flush()
        if run_pool:
            self.pool.run_all()
            self.net.flush()

    def run_to_completion(self, steps: int = 40) -> None:
        """Step (at most ``steps`` times) until the peer completes; its payload is exact."""
        for _ in range(steps):
            self.step()
            if self.done:
                break
        assert self.done == [True]
        assert bytes(self.storage.buffer) == self.data


class CoreWithWriterTests:
    """The swarm core completes pieces through an injected PieceSink."""

    def test_piece_writer_is_a_piece_sink(self):
        """storage.PieceWriter satisfies the core's PieceSink contract."""
        pair = Pair()
        assert isinstance(pair.writer, PieceSink)

    def test_download_completes_through_the_writer(self):
        """Every piece is hashed and written by the pool; the payload is exact."""
        pair = Pair()
        pair.run_to_completion()
        assert sorted(pair.storage.writes) == list(range(pair.meta.num_pieces))
        assert pair.peer.hash_failures == 0

    def test_no_piece_is_had_before_the_writer_answers(self):
        """Assembled pieces wait in the pool: none is marked had, announced or
        written until the pool runs; then all of them are, in one go."""
        pair = Pair()
        for _ in range(4):
            pair.step(run_pool=False)
        waiting = len(pair.pool.calls)
        assert waiting == pair.meta.num_pieces  # every piece assembled, none settled
        assert pair.peer.have.count == 0 and pair.storage.writes == []
        assert not any(event == "got_have" for link in pair.net.links
                       if link.core is pair.peer for event, _ in link.sent)
        pair.pool.run_all()
        pair.net.flush()
        assert pair.peer.have.complete and pair.done == [True]

    def test_hash_mismatch_from_the_writer_bans_the_only_source(self):
        """A piece the writer finds corrupt is not written; its only source is
        banned, as when the reactor thread hashes."""
        pair = Pair(corrupt_seeder=True)
        for _ in range(8):
            pair.step()
        assert pair.peer.hash_failures >= 1
        assert pair.storage.writes == []
        assert pair.seeder.peer_id in pair.peer.admission.banned_ids
        assert pair.done == []

    def test_disk_error_in_the_writer_fails_the_swarm(self):
        """A StorageError raised in the worker thread fails the download."""
        pair = Pair()
        pair.storage.fail_writes = StorageError("/x", "disk full")
        errors: list = []
        pair.peer.failure.addErrback(errors.append)
        for _ in range(4):
            pair.step()
        assert len(errors) == 1 and errors[0].check(StorageError)
        assert pair.peer.failed is not None

    def test_requests_wait_while_the_writer_is_full(self):
        """With the writer full (2 pieces pending, bound 2 pieces), no request
        leaves the peer; once the pool catches up, downloading resumes.  (A
        short pipeline, so that requests go out a few at a time.)"""
        pair = Pair(pieces=24, max_pending_bytes=2 * PLEN, max_pipeline=4, min_pipeline=2,
                    request_size=BLOCK_SIZE)
        for _ in range(6):
            pair.step(run_pool=False)
        assert pair.writer.full
        assert pair.peer.have.count == 0
        pending = len(pair.pool.calls)
        assert pending < pair.meta.num_pieces  # requests were held back
        sent_before = sum(1 for link in pair.net.links if link.core is pair.peer
                          for event, _ in link.sent if event == "got_request")
        for _ in range(4):
            pair.step(run_pool=False)  # ticks too: they must not refill
        sent_after = sum(1 for link in pair.net.links if link.core is pair.peer
                         for event, _ in link.sent if event == "got_request")
        assert sent_after == sent_before
        # What arrives from requests already out may complete a few more pieces.
        assert not pair.done and len(pair.pool.calls) >= pending
        pair.run_to_completion()


class BlameVerdictTests:
    """Blame.verdict (hash compared elsewhere) decides as Blame.check does."""

    def test_verdict_matches_check(self):
        """Good piece: verified, nobody banned; bad piece from one source: that source."""
        meta, data = build_torrent(_payload(PLEN), piece_length=PLEN)
        for buffer, expected in ((data, True), (bytes(PLEN), False)):
            piece = PieceInProgress(0, PLEN)
            piece.buffer[:] = buffer
            piece.sources.add("p")
            piece.block_from = ["p"] * (PLEN // BLOCK_SIZE)
            checked = Blame(meta.pieces).check(piece)
            given = Blame(meta.pieces).verdict(piece, expected)
            assert checked == given
            assert checked[0] is expected


class HashThreadsOptionTests:
    """``murder peer --hash-threads N`` becomes RunConfig.hash_threads."""

    def test_flag_and_default(self, tmp_path, small_torrent):
        """--hash-threads 2 → 2; without it, 0 (pieces complete on the reactor thread)."""
        from murder.peer.options import PeerOptions, config_from

        torrent = small_torrent
        for extra, expected in ((["--hash-threads", "2"], 2), ([], 0)):
            opts = PeerOptions()
            opts.parseOptions(["--torrent", torrent, "--saveas", str(tmp_path / "x"), *extra])
            assert config_from(opts).hash_threads == expected

    def test_out_of_range_is_refused(self, tmp_path, small_torrent):
        """A negative --hash-threads is a one-line usage error."""
        from murder.peer.options import PeerOptions

        with pytest.raises(usage.UsageError, match="--hash-threads must be from 0 to 64"):
            PeerOptions().parseOptions(["--torrent", small_torrent, "--saveas",
                                        str(tmp_path / "x"), "--hash-threads", "-1"])
