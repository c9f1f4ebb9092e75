"""Never trust data: hash every assembled piece, and find who sent a bad block.

A piece that fails its hash came from one peer (that peer is banned at once)
or from several.  Banning them all (or on strike counts) would ban the
honest seeder too and could stall the download, so each source's block is
remembered with its hash; once the piece verifies, the peers whose block
differs from the verified data are the liars.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

from murder.peer.interfaces import Peer
from murder.peer.picker import PieceInProgress
from murder.peer.wire import BLOCK_SIZE


class Blame:
    """The suspects of the pieces that failed, until they verify."""

    def __init__(self, piece_hashes: Sequence[bytes]) -> None:
        self._hashes = piece_hashes
        #: piece index -> [(begin, length, source, sha1 of its block)] of failed tries.
        self._suspects: dict[int, list[tuple[int, int, Peer, bytes]]] = {}

    def check(self, piece: PieceInProgress) -> tuple[bool, list[tuple[Peer, str]]]:
        """``(verified, [(peer to ban, why), …])`` for an assembled piece."""
        return self.verdict(piece, hashlib.sha1(piece.buffer).digest() == self._hashes[piece.index])

    def verdict(self, piece: PieceInProgress,
                verified: bool) -> tuple[bool, list[tuple[Peer, str]]]:
        """As :meth:`check`, for a piece whose hash was already compared
        (by a :class:`~murder.peer.storage.PieceWriter` in a worker thread)."""
        index = piece.index
        if not verified:
            if len(piece.sources) == 1:
                return False, [(next(iter(piece.sources)),
                                f"sent data failing the hash of piece {index}")]
            record = self._suspects.setdefault(index, [])
            for b, source in enumerate(piece.block_from):
                if source is not None:
                    begin = b * BLOCK_SIZE
                    block = piece.buffer[begin:begin + BLOCK_SIZE]
                    record.append((begin, len(block), source, hashlib.sha1(block).digest()))
            return False, []
        liars = {source for begin, length, source, digest in self._suspects.pop(index, ())
                 if hashlib.sha1(piece.buffer[begin:begin + length]).digest() != digest}
        return True, [(source, f"sent a bad block of piece {index}") for source in liars]


__all__ = ["Blame"]
