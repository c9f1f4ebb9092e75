"""Piece and block selection: random first, rarest first, strict endgame.

Pure bookkeeping, no I/O.  The picker knows which pieces we have, how many
connected peers have each piece (availability), and which blocks of the pieces
in progress are requested from whom.  Callers identify peers by any hashable
object (the session uses its connection objects).

Near sources (rack-aware deploys): the caller may also count, per piece, how
many *near* connections (same rack, as the tracker said) hold it
(:attr:`Picker.near_availability`); a request for a *far* connection then
skips pieces a near one can supply (``next_requests(..., far=True)``), so a
piece crosses the rack uplink about once and spreads inside the rack.
"""

from __future__ import annotations

import random
from typing import Any, Hashable, Iterable, Iterator

from murder.metainfo import piece_size
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
        self.requested: dict[int, set[Hashable]] = {}
        self.received = bytearray(nblocks)
        self.remaining = nblocks
        #: The peers (the session's records) that sent its blocks.
        self.sources: set[Any] = set()
        #: Who sent each block, so a failed hash with several sources can be
        #: blamed on the right one once the piece verifies (see Swarm).
        self.block_from: list[Any] = [None] * nblocks

    def block(self, b: int) -> Block:
        begin = b * BLOCK_SIZE
        return self.index, begin, min(BLOCK_SIZE, self.size - begin)


class PendingPieces:
    """Pieces neither had nor in progress, in two forms kept in step.

    ``order`` is shuffled once: rarest-first scans it, so ties break randomly
    without a sort per request.  ``bits`` is the same set as one integer
    (:meth:`Bitfield.as_int` layout), so that a scan which cannot find
    anything — the peer holds no pending piece, as for most scans in a large
    swarm — is skipped after one ``&`` (bench/README.md, "Session 5").
    """

    __slots__ = ("order", "bits", "_top", "_rng")

    def __init__(self, num_pieces: int, rng: random.Random) -> None:
        self.order = list(range(num_pieces))
        rng.shuffle(self.order)
        self._rng = rng
        self._top = 8 * ((num_pieces + 7) // 8) - 1
        self.bits = Bitfield(num_pieces, full=True).as_int()

    def __bool__(self) -> bool:
        return bool(self.order)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)

    def discard(self, index: int) -> None:
        try:
            self.order.remove(index)
        except ValueError:
            return
        self.bits &= ~(1 << (self._top - index))

    def put_back(self, index: int) -> None:
        """Return ``index`` at a random place (a piece given up on)."""
        self.order.insert(self._rng.randrange(len(self.order) + 1), index)
        self.bits |= 1 << (self._top - index)

    def any_of(self, peer_bits: Bitfield | None, exclude: Iterable[int], mask: int = -1) -> bool:
        """Is any pending piece in ``peer_bits`` (None: all), in ``mask`` (the
        same layout) and not in ``exclude``?"""
        candidates = self.bits if peer_bits is None else self.bits & peer_bits.as_int()
        candidates &= mask
        for i in exclude:
            if not candidates:
                break
            candidates &= ~(1 << (self._top - i))
        return bool(candidates)


#: ``bytes.translate`` table: a zero byte to "0", any other to "1" (``_flags_int``).
_DIGITS = b"0" + b"1" * 255


def _flags_int(flags: bytearray | None, top: int) -> int:
    """Per-piece flags (nonzero: set) as one integer in the
    :meth:`Bitfield.as_int` layout (piece ``i`` is bit ``top - i``); None:
    every piece.  One translate and one parse in C, not a loop per piece."""
    if flags is None:
        return -1
    return int(flags.translate(_DIGITS), 2) << (top + 1 - len(flags))


class _FlagsMask:
    """``_flags_int`` of the flags last given, kept while their content is
    the same: a host's far fills ask with the same ``owned`` flags, which are
    rebuilt rarely (compared by content: the caller may change them in place)."""

    def __init__(self, top: int) -> None:
        self._top = top
        self._flags = b""
        self._value = -1

    def __call__(self, flags: bytearray | None) -> int:
        if flags is None:
            return -1
        if self._flags != flags:
            self._flags, self._value = bytes(flags), _flags_int(flags, self._top)
        return self._value


def _count(counts: list[int], held: int, top: int, bits: Iterable[int], delta: int) -> int:
    """Add ``delta`` to each piece's count in ``bits``; return ``held`` (the
    pieces whose count is not 0, :meth:`Bitfield.as_int` layout) updated."""
    for i in bits:
        count = counts[i] = counts[i] + delta
        if not count:
            held &= ~(1 << (top - i))
        elif count == delta:  # was 0
            held |= 1 << (top - i)
    return held


def _far_choice(pending: Iterable[int], near: list[int], owned: bytearray | None, pb: bytes,
                full: bool, exclude: set[int]) -> int | None:
    """A new piece for a far connection: one no near connection holds, the
    peer holds and we own; ``owned`` may rank pieces (1 first, 0: not
    ours; ``Nearness.far_ready``): the lowest rank wins, ties in pending order."""
    best, best_rank = None, 256
    for i in pending:
        rank = 1 if owned is None else owned[i]
        if rank and rank < best_rank and not near[i] and \
                (full or pb[i >> 3] & 128 >> (i & 7)) and i not in exclude:
            best, best_rank = i, rank
            if rank == 1:
                break
    return best


def _take(piece: PieceInProgress, peer: Hashable, count: int, span: int,
          out: list[Block]) -> int:
    """Request up to ``count`` unrequested blocks of ``piece``, lowest first,
    consecutive ones merged ``span`` at a time; return how many were taken."""
    unrequested = piece.unrequested
    requested = piece.requested
    taken = 0
    while unrequested and taken < count:
        first = b = unrequested.pop()
        requested.setdefault(b, set()).add(peer)
        run = 1
        limit = min(span, count - taken)
        while run < limit and unrequested and unrequested[-1] == b + 1:
            b = unrequested.pop()
            requested.setdefault(b, set()).add(peer)
            run += 1
        begin = first * BLOCK_SIZE
        out.append((piece.index, begin, min(run * BLOCK_SIZE, piece.size - begin)))
        taken += run
    return taken


def _touched(piece: PieceInProgress) -> bool:
    """Has any block of ``piece`` been received, or is one asked for?

    For a far connection an untouched piece in progress (every request was
    refused, say by a super-seeding seeder) is a new piece: started only if
    it is ours, and not counted against ``far_pieces``.  Continued as
    "started", every rack mate the seeder refused fetched it across the
    uplink: 19.9 payloads into the seeder's rack in a simulated 320-host
    deploy (bench/README.md, session 8)."""
    return bool(piece.requested) or piece.remaining < len(piece.received)


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
        #: Per piece: near connections (answering, not snubbed) that hold it.
        #: Kept only while the caller knows near from far (``near_*``).
        self.near_availability = [0] * num_pieces
        #: Pieces whose ``near_availability`` is not 0 (``Bitfield.as_int`` layout; ``_new_piece``).
        self._near_held = 0
        self._top = 8 * ((num_pieces + 7) // 8) - 1
        self._owned_int = _FlagsMask(self._top)  # ``owned`` flags of far picks
        self.in_progress: dict[int, PieceInProgress] = {}
        self.random_first = random_first
        self.endgame_blocks = endgame_blocks
        self._rng = rng or random.Random()
        self._pending = PendingPieces(num_pieces, self._rng)

    def piece_size(self, index: int) -> int:
        return piece_size(index, self.num_pieces, self.piece_length, self.total_length)

    # -- availability
    def peer_has(self, index: int) -> None:
        self.availability[index] += 1

    def peer_bitfield(self, bits: Iterable[int]) -> None:
        for i in bits:
            self.availability[i] += 1

    def peer_gone(self, bits: Iterable[int]) -> None:
        for i in bits:
            self.availability[i] -= 1

    def near_has(self, index: int) -> None:
        near = self.near_availability  # ``_count`` inlined: one per near HAVE
        count = near[index] = near[index] + 1
        if count == 1:
            self._near_held |= 1 << (self._top - index)
        elif not count:
            self._near_held &= ~(1 << (self._top - index))

    def near_bitfield(self, bits: Iterable[int]) -> None:
        self._near_held = _count(self.near_availability, self._near_held, self._top, bits, 1)

    def near_gone(self, bits: Iterable[int]) -> None:
        self._near_held = _count(self.near_availability, self._near_held, self._top, bits, -1)

    def near_reset(self) -> None:
        """Forget every near count (the caller recounts its connections)."""
        self.near_availability = [0] * self.num_pieces
        self._near_held = 0

    def mark_have(self, index: int) -> None:
        self.have.add(index)
        if self.in_progress.pop(index, None) is None:
            self._pending.discard(index)

    def _start(self, index: int) -> PieceInProgress:
        self._pending.discard(index)
        piece = self.in_progress[index] = PieceInProgress(index, self.piece_size(index))
        return piece

    def _abandon(self, index: int) -> None:
        """A piece in progress goes back to the pending pool."""
        if self.in_progress.pop(index, None) is not None:
            self._pending.put_back(index)

    @property
    def complete(self) -> bool:
        return self.have.complete

    def interesting(self, peer_bits: Bitfield) -> bool:
        """Does the peer have any piece we lack?"""
        if peer_bits.count == peer_bits.length:
            return not self.have.complete
        return bool(peer_bits.as_int() & ~self.have.as_int())

    def can_request(self, index: int) -> bool:
        """Is any block of piece ``index`` still to be requested from someone?

        A HAVE for a piece we have, or whose blocks are all asked for
        already, cannot give a peer anything new to ask for; the session then
        skips a picker pass (a HAVE arrives for every piece from every peer).
        """
        if index in self.have:
            return False
        piece = self.in_progress.get(index)
        return piece is None or bool(piece.unrequested)

    # -- choosing
    def _new_piece(self, peer_bits: Bitfield, exclude: set[int],
                   near: list[int] | None = None, owned: bytearray | None = None) -> int | None:
        full = peer_bits.complete
        # Far: only pieces no near connection holds and ``owned`` flags count.
        # Most far scans found nothing (98 % in a simulated deploy at 256
        # pieces, bench/README.md, session 10): one ``&`` says so first.
        mask = -1 if near is None else ~self._near_held & self._owned_int(owned)
        if not self._pending.any_of(None if full else peer_bits, exclude, mask):
            return None  # nothing pending that this peer holds: skip the scan
        # Bits tested inline: a method call per test cost a tenth of the simulator's CPU.
        pb = b"" if full else peer_bits.tobytes()
        if near is not None:
            return _far_choice(self._pending, near, owned, pb, full, exclude)
        if self.have.count < self.random_first:
            for i in self._pending:
                if (full or pb[i >> 3] & 128 >> (i & 7)) and i not in exclude:
                    return i
            return None
        avail = self.availability
        best = None
        best_avail = 1 << 30
        for i in self._pending:
            a = avail[i]
            if a < best_avail and (full or pb[i >> 3] & 128 >> (i & 7)) and i not in exclude:
                best, best_avail = i, a
                if a <= 1:
                    break
        return best

    def next_requests(self, peer: Hashable, peer_bits: Bitfield, count: int,
                      exclude: set[int] | None = None, span: int = 1,
                      far: bool = False, far_pieces: int = 0,
                      owned: bytearray | None = None) -> list[Block]:
        """Requests for up to ``count`` 16 KiB blocks from ``peer``.

        First unrequested blocks of pieces already in progress (finish what is
        started: a complete piece can be shared on), then a new piece chosen
        random-first/rarest-first, and when nothing is left unrequested, the
        endgame: blocks already requested from others, at most twice each.

        With ``span`` > 1, up to that many consecutive blocks of a piece go
        out as one request (only to peers known to accept large requests; see
        ``SwarmConfig.request_size``).  Bookkeeping stays per 16 KiB block, so
        sources with different request sizes can fill the same piece.

        With ``far``, ``peer`` is a far connection: pieces that a near one
        holds (:attr:`near_availability`) are left to the near ones, and new
        pieces are started (at random, not rarest first: a rack's hosts see
        the same rarities and would all fetch the same piece across the
        uplink) only while fewer than ``far_pieces`` pieces no near
        connection holds are in progress, and (``owned``, one flag per piece)
        only pieces this host is to bring into its rack.
        """
        out: list[Block] = []
        taken = 0
        exclude = exclude or set()
        near = self.near_availability if far else None
        fresh: list[PieceInProgress] = []
        for piece in self.in_progress.values():  # _take changes no entry: no copy
            if taken >= count:
                return out
            if piece.unrequested and piece.index in peer_bits and piece.index not in exclude \
                    and (near is None or not near[piece.index]):
                if near is not None and not _touched(piece):
                    fresh.append(piece)
                    continue
                taken += _take(piece, peer, count - taken, span, out)
        starts = count
        first = None  # a new far piece found by the check below, started first
        if near is not None:
            # Counted only if a piece could start (most far passes start none).
            if not fresh:
                first = self._new_piece(peer_bits, exclude, near, owned)
            starts = far_pieces - sum(1 for p in self.in_progress.values()
                                      if not near[p.index] and _touched(p)) \
                if fresh or first is not None else 0
            for piece in fresh:  # untouched: new to a far connection (``_touched``)
                if taken >= count or starts <= 0:
                    break
                if owned is None or owned[piece.index]:
                    starts -= 1
                    taken += _take(piece, peer, count - taken, span, out)
        while taken < count and starts > 0:
            index = first if first is not None else self._new_piece(peer_bits, exclude, near, owned)
            first = None
            if index is None:
                break
            starts -= 1
            taken += _take(self._start(index), peer, count - taken, span, out)
        if taken < count and self._endgame():
            for piece in self.in_progress.values():
                if piece.index not in peer_bits or piece.index in exclude or \
                        (near is not None and near[piece.index]):
                    continue
                for b, holders in piece.requested.items():
                    if taken >= count:
                        return out
                    if not piece.received[b] and peer not in holders and len(holders) < 2:
                        holders.add(peer)
                        out.append(piece.block(b))
                        taken += 1
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
                       withdrawn: bool = False) -> tuple[PieceInProgress | None,
                                                         list[tuple[Any, Block]]]:
        """Store a block: one or, from a large request, several consecutive
        16 KiB blocks of a piece.

        Returns ``(piece if now complete, [(other peer, block), …])``: the
        endgame duplicates of what just arrived, to cancel.  Parts not
        requested from ``peer`` or already received are ignored, as is a
        malformed block (``None, []``).  With ``withdrawn`` (we had asked this
        peer, then gave up on it as too slow) missing parts are taken all the
        same: the piece hash still decides, and the bytes are not fetched twice.
        """
        piece = self.in_progress.get(index)
        length = len(block)
        if piece is None or begin % BLOCK_SIZE or not length:
            return None, []
        end = begin + length
        if end > piece.size or (end % BLOCK_SIZE and end != piece.size):
            return None, []
        received = piece.received
        requested = piece.requested
        first = begin // BLOCK_SIZE
        data = memoryview(block)  # slices without copies; one copy into the piece
        others: list[tuple[Any, Block]] = []
        took = False
        for b in range(first, -(-end // BLOCK_SIZE)):
            if received[b]:
                continue
            holders = requested.pop(b, None)
            if holders is None or peer not in holders:
                if not withdrawn:
                    if holders is not None:
                        requested[b] = holders
                    continue
                if holders is None:
                    try:
                        piece.unrequested.remove(b)
                    except ValueError:
                        pass
                    holders = set()
            at = b * BLOCK_SIZE
            size = min(BLOCK_SIZE, piece.size - at)
            piece.buffer[at:at + size] = data[at - begin:at - begin + size]
            received[b] = 1
            piece.remaining -= 1
            piece.block_from[b] = peer
            took = True
            if len(holders) > 1:
                others.extend((p, piece.block(b)) for p in holders if p is not peer)
        if took:
            piece.sources.add(peer)
        if piece.remaining == 0:
            return piece, others
        return None, others

    def piece_failed(self, piece: PieceInProgress) -> None:
        """The assembled piece did not hash: start it over."""
        self._abandon(piece.index)

    def request_dropped(self, peer: Hashable, block: Block) -> None:
        """A request will not be answered (choke, reject, disconnect, timeout)."""
        index, begin, length = block
        piece = self.in_progress.get(index)
        if piece is None:
            return
        returned = False
        for b in range(begin // BLOCK_SIZE, -(-(begin + length) // BLOCK_SIZE)):
            holders = piece.requested.get(b)
            if holders is None:
                continue
            holders.discard(peer)
            if not holders:
                del piece.requested[b]
                if not piece.received[b]:
                    piece.unrequested.append(b)
                    returned = True
        if returned:
            # Re-sort descending so pop() keeps giving the lowest block.
            piece.unrequested.sort(reverse=True)
        # The piece stays in progress: it is continued first by any peer that
        # has it, and a late block of a withdrawn request can still land in it.
