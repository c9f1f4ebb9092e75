"""Unit tests for murder.peer.completion: a received piece becomes verified, re-asked, or fatal."""

from __future__ import annotations

import hashlib

from murder.errors import StorageError
from murder.peer.completion import Completion
from murder.peer.picker import PieceInProgress, Picker
from murder.peer.wire import BLOCK_SIZE
from murder.testing import pattern as payload


class Recorder:
    """What the completion reported to its owner."""

    def __init__(self) -> None:
        self.verified: list[int] = []
        self.bans: list[tuple[object, str]] = []
        self.failures: list[Exception] = []
        self.resumed = 0


class Disk:
    def __init__(self, error: Exception | None = None) -> None:
        self.writes: list[tuple[int, bytes]] = []
        self.error = error

    def write_piece(self, index, data):
        if self.error is not None:
            raise self.error
        self.writes.append((index, bytes(data)))


def _completion(good: bytes, disk: Disk, rec: Recorder) -> tuple[Completion, Picker]:
    picker = Picker(1, piece_length=len(good), total_length=len(good))
    completion = Completion(
        [hashlib.sha1(good).digest()], picker, disk, None,
        verified=rec.verified.append, ban=lambda link, why: rec.bans.append((link, why)),
        fail=rec.failures.append, resume=lambda: setattr(rec, "resumed", rec.resumed + 1),
        active=lambda: True)
    return completion, picker


def _piece(data: bytes, sources: list) -> PieceInProgress:
    piece = PieceInProgress(0, len(data))
    piece.buffer[:] = data
    piece.block_from = list(sources)
    piece.sources = set(s for s in sources if s is not None)
    return piece


class _Peer:
    """The two fields of a core Peer record that completion reads."""

    def __init__(self, name: str) -> None:
        self.link = name
        self.address = (name, 1)


def _peer(name: str) -> _Peer:
    return _Peer(name)


class CompletionTests:
    """Inline hashing: the outcomes the swarm acts on."""

    def test_good_piece_is_written_then_reported(self):
        """A piece that hashes is written once, then reported verified (in that order)."""
        good = payload(2 * BLOCK_SIZE)
        disk, rec = Disk(), Recorder()
        completion, _ = _completion(good, disk, rec)
        completion.submit(_piece(good, [_peer("a"), _peer("a")]))
        assert disk.writes == [(0, good)] and rec.verified == [0]
        assert completion.hash_failures == 0 and completion.wasted == 0

    def test_bad_piece_from_one_source_bans_it_and_is_asked_again(self):
        """A failing piece with one source: its link is banned, nothing is written, the bytes
        count as wasted and the piece is requestable again."""
        good = payload(2 * BLOCK_SIZE)
        disk, rec = Disk(), Recorder()
        completion, picker = _completion(good, disk, rec)
        liar = _peer("liar")
        piece = _piece(b"x" * len(good), [liar, liar])
        picker.in_progress[0] = piece
        completion.submit(piece)
        assert [link for link, _ in rec.bans] == ["liar"] and disk.writes == []
        assert rec.verified == [] and completion.hash_failures == 1
        assert completion.wasted == len(good) and 0 not in picker.in_progress

    def test_storage_error_is_fatal_and_not_reported_verified(self):
        """A write that fails (disk full) goes to ``fail``; the piece is not announced."""
        good = payload(BLOCK_SIZE)
        rec = Recorder()
        completion, _ = _completion(good, Disk(StorageError("/d/f.part", "disk full")), rec)
        completion.submit(_piece(good, [_peer("a")]))
        assert [e.reason for e in rec.failures] == ["disk full"] and rec.verified == []
