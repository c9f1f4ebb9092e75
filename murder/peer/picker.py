"""Piece and block selection: random first, rarest first, strict endgame.

Pure bookkeeping, no I/O.  The picker knows which pieces we have, how many
connected peers have each piece (availability), and which blocks of the pieces
in progress are requested from whom.  Callers identify peers by any hashable
object (the session uses its connection objects).
"""

from __future__ import annotations

import random
from typing import Hashable, Iterable

from murder.peer.wire import BLOCK_SIZE, Bitfield

Block = tuple[int, int, int]  # (piece index, begin, length)


class PieceInProgress:
    """One piece being assembled in memory until it is complete and hashed."""

    __slots__ = ("index", "size", "buffer", "unrequested", "requested", "received",
                 "remaining", "sources", "block_from")

    def __init__(self, index: int, size: int) -> None:
        self.index = index
        self.size = size
        self.buffer = bytearray(size)
        nblocks = -(-size // BLOCK_SIZE)
        # Popped from the end: keep ascending order so disk writes stay sequential.
        self.unrequested = list(range(nblocks - 1, -1, -1))
        self.requested: dict[int, set] = {}
        self.received = bytearray(nblocks)
        self.remaining = nblocks
        self.sources: set = set()
        #: Who sent each block, so a failed hash with several sources can be
        #: blamed on the right one once the piece verifies (see Swarm).
        self.block_from: list = [None] * nblocks

    def block(self, b: int) -> Block:
        begin = b * BLOCK_SIZE
        return self.index, begin, min(BLOCK_SIZE, self.size - begin)


class Picker:
    """Chooses what to request next from each peer."""

    def __init__(self, num_pieces: int, piece_length: int = 0, total_length: int = 0,
                 random_first: int = 4, rng: random.Random | None = None,
                 endgame_blocks: int = 64) -> None:
        self.num_pieces = num_pieces
        self.piece_length = piece_length
        self.total_length = total_length
        self.have = Bitfield(num_pieces)
        self.availability = [0] * num_pieces
        self.in_progress: dict[int, PieceInProgress] = {}
        self.random_first = random_first
        self.endgame_blocks = endgame_blocks
        self._rng = rng or random.Random()
        # Pieces neither had nor in progress, shuffled once: rarest-first scans
        # this list so ties break randomly without a sort per request.
        self._pending = list(range(num_pieces))
        self._rng.shuffle(self._pending)

    def piece_size(self, index: int) -> int:
        if index == self.num_pieces - 1:
            return self.total_length - index * self.piece_length
        return self.piece_length

    # -- availability
    def peer_has(self, index: int) -> None:
        self.availability[index] += 1

    def peer_bitfield(self, bits: Iterable[int]) -> None:
        for i in bits:
            self.availability[i] += 1

    def peer_gone(self, bits: Iterable[int]) -> None:
        for i in bits:
            self.availability[i] -= 1

    def mark_have(self, index: int) -> None:
        self.have.add(index)
        if self.in_progress.pop(index, None) is None:
            try:
                self._pending.remove(index)
            except ValueError:
                pass

    def _start(self, index: int) -> PieceInProgress:
        self._pending.remove(index)
        piece = self.in_progress[index] = PieceInProgress(index, self.piece_size(index))
        return piece

    def _abandon(self, index: int) -> None:
        """A piece in progress goes back to the pending pool."""
        if self.in_progress.pop(index, None) is not None:
            self._pending.insert(self._rng.randrange(len(self._pending) + 1), index)

    @property
    def complete(self) -> bool:
        return self.have.complete

    def interesting(self, peer_bits: Bitfield) -> bool:
        """Does the peer have any piece we lack?"""
        if peer_bits.count == peer_bits.length:
            return not self.have.complete
        return any(i not in self.have for i in peer_bits)

    # -- choosing
    def _new_piece(self, peer_bits: Bitfield, exclude: set[int]) -> int | None:
        everything = peer_bits.complete
        if self.have.count < self.random_first:
            for i in self._pending:
                if (everything or i in peer_bits) and i not in exclude:
                    return i
            return None
        avail = self.availability
        best = None
        best_avail = 1 << 30
        for i in self._pending:
            a = avail[i]
            if a < best_avail and (everything or i in peer_bits) and i not in exclude:
                best, best_avail = i, a
                if a <= 1:
                    break
        return best

    def next_requests(self, peer: Hashable, peer_bits: Bitfield, count: int,
                      exclude: set[int] | None = None) -> list[Block]:
        """Up to ``count`` blocks to request from ``peer``.

        First unrequested blocks of pieces already in progress (finish what is
        started: a complete piece can be shared on), then a new piece chosen
        random-first/rarest-first, and when nothing is left unrequested, the
        endgame: blocks already requested from others, at most twice each.
        """
        out: list[Block] = []
        exclude = exclude or set()
        for piece in list(self.in_progress.values()):
            if len(out) >= count:
                return out
            if piece.unrequested and piece.index in peer_bits and piece.index not in exclude:
                while piece.unrequested and len(out) < count:
                    b = piece.unrequested.pop()
                    piece.requested.setdefault(b, set()).add(peer)
                    out.append(piece.block(b))
        while len(out) < count:
            index = self._new_piece(peer_bits, exclude)
            if index is None:
                break
            piece = self._start(index)
            while piece.unrequested and len(out) < count:
                b = piece.unrequested.pop()
                piece.requested.setdefault(b, set()).add(peer)
                out.append(piece.block(b))
        if len(out) < count and self._endgame():
            for piece in self.in_progress.values():
                if piece.index not in peer_bits or piece.index in exclude:
                    continue
                for b, holders in piece.requested.items():
                    if len(out) >= count:
                        return out
                    if not piece.received[b] and peer not in holders and len(holders) < 2:
                        holders.add(peer)
                        out.append(piece.block(b))
        return out

    def _endgame(self) -> bool:
        """True when every missing block is requested and few are still missing.

        Deep pipelines mean that "everything requested" happens long before
        the end; duplicating all of that would cost whole pieces of upload.
        So duplicates start only when at most ``endgame_blocks`` blocks are
        still to arrive (1 MiB by default: a fraction of a second here).
        """
        if self._pending:
            return False
        missing = 0
        for p in self.in_progress.values():
            if p.unrequested:
                return False
            missing += p.remaining
        return missing <= self.endgame_blocks

    # -- outcomes
    def block_received(self, peer: Hashable, index: int, begin: int, block: bytes,
                       withdrawn: bool = False) -> tuple[PieceInProgress | None, list]:
        """Store a block.  Returns ``(piece if now complete, other peers to cancel)``.

        Unrequested, duplicate or malformed blocks are ignored (``None, []``).
        With ``withdrawn`` (we had asked this peer, then gave up on it as too
        slow) a block still missing is taken all the same: the piece hash
        still decides, and the bytes are not fetched twice.
        """
        piece = self.in_progress.get(index)
        if piece is None or begin % BLOCK_SIZE:
            return None, []
        b = begin // BLOCK_SIZE
        if b >= len(piece.received) or piece.received[b]:
            return None, []
        if len(block) != min(BLOCK_SIZE, piece.size - begin):
            return None, []
        holders = piece.requested.get(b)
        if holders is None or peer not in holders:
            if not withdrawn:
                return None, []
            if holders is None:
                try:
                    piece.unrequested.remove(b)
                except ValueError:
                    pass
                holders = set()
        piece.requested.pop(b, None)
        piece.buffer[begin:begin + len(block)] = block
        piece.received[b] = 1
        piece.remaining -= 1
        piece.sources.add(peer)
        piece.block_from[b] = peer
        others = [p for p in holders if p is not peer]
        if piece.remaining == 0:
            return piece, others
        return None, others

    def piece_failed(self, piece: PieceInProgress) -> None:
        """The assembled piece did not hash: start it over."""
        self._abandon(piece.index)

    def request_dropped(self, peer: Hashable, block: Block) -> None:
        """A request will not be answered (choke, reject, disconnect, timeout)."""
        index, begin, _ = block
        piece = self.in_progress.get(index)
        if piece is None:
            return
        b = begin // BLOCK_SIZE
        holders = piece.requested.get(b)
        if holders is None:
            return
        holders.discard(peer)
        if not holders:
            del piece.requested[b]
            if not piece.received[b]:
                piece.unrequested.append(b)
                # Re-sort descending so pop() keeps giving the lowest block.
                piece.unrequested.sort(reverse=True)
        # The piece stays in progress: it is continued first by any peer that
        # has it, and a late block of a withdrawn request can still land in it.
