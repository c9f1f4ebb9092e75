"""Unit tests for murder.peer.picker: random first, rarest first, endgame, outcomes."""

from __future__ import annotations

import random

from murder.peer.picker import Picker
from murder.peer.wire import BLOCK_SIZE, Bitfield

PLEN = 4 * BLOCK_SIZE  # four blocks per piece


def picker(n: int = 8, seed: int = 1, random_first: int = 4, last: int = PLEN) -> Picker:
    return Picker(n, piece_length=PLEN, total_length=PLEN * (n - 1) + last,
                  random_first=random_first, rng=random.Random(seed))


def bits(n: int, members=None) -> Bitfield:
    bf = Bitfield(n, full=members is None)
    for i in members or ():
        bf.add(i)
    return bf


class SelectionTests:
    """Which piece is started next."""

    def test_random_first_ignores_availability(self):
        """Before ``random_first`` pieces are had, the first piece is random, not rarest."""
        firsts = set()
        for seed in range(30):
            p = picker(seed=seed)
            p.peer_bitfield(range(8))
            p.peer_bitfield(range(1, 8))  # piece 0 is the rarest
            firsts.add(p.next_requests("A", bits(8), 1)[0][0])
        assert len(firsts) > 3

    def test_rarest_first_after_random_phase(self):
        """Once ``random_first`` pieces are had, the rarest missing piece is started."""
        for seed in range(10):
            p = picker(seed=seed)
            for i in range(4):
                p.mark_have(i)
            p.peer_bitfield(range(8))
            p.peer_bitfield(range(8))
            p.peer_bitfield([4, 5, 7])  # 6 has availability 2, the others 3
            assert p.next_requests("A", bits(8), 1) == [(6, 0, BLOCK_SIZE)]

    def test_rarest_first_only_among_pieces_the_peer_has(self):
        """The rarest piece the *peer* has is chosen, never one it lacks."""
        p = picker(random_first=0)
        p.peer_bitfield(range(8))
        p.peer_bitfield([0, 1, 2, 3, 4, 5, 7])  # 6 rarest
        got = p.next_requests("A", bits(8, [1, 2, 3]), 4)
        assert {b[0] for b in got} <= {1, 2, 3}

    def test_owned_pieces_never_requested(self):
        """Pieces already had are never requested, whatever the phase."""
        p = picker(n=4, random_first=2)
        p.mark_have(0)
        p.mark_have(2)
        got = p.next_requests("A", bits(4), 100)
        assert {b[0] for b in got} == {1, 3}

    def test_blocks_ascending_and_last_piece_short(self):
        """Blocks of one piece come in ascending order; the last block is clipped."""
        p = picker(n=1, last=BLOCK_SIZE + 100)
        assert p.next_requests("A", bits(1), 10) == [
            (0, 0, BLOCK_SIZE), (0, BLOCK_SIZE, 100)]

    def test_pieces_in_progress_are_finished_first(self):
        """Another peer first gets the unrequested blocks of a started piece."""
        p = picker(random_first=0)
        p.peer_bitfield(range(8))
        first = p.next_requests("A", bits(8), 1)
        index = first[0][0]
        got = p.next_requests("B", bits(8), 3)
        assert got == [(index, BLOCK_SIZE, BLOCK_SIZE), (index, 2 * BLOCK_SIZE, BLOCK_SIZE),
                       (index, 3 * BLOCK_SIZE, BLOCK_SIZE)]

    def test_exclude(self):
        """Excluded pieces (recently rejected) are not started for that peer."""
        p = picker(n=2, random_first=0)
        got = p.next_requests("A", bits(2), 8, exclude={0})
        assert {b[0] for b in got} == {1}

    def test_interesting(self):
        """A peer is interesting only if it has a piece we lack."""
        p = picker(n=4)
        p.mark_have(0)
        assert p.interesting(bits(4, [0, 1]))
        assert not p.interesting(bits(4, [0]))
        for i in range(4):
            p.mark_have(i)
        assert not p.interesting(bits(4))
        assert p.complete

    def test_interesting_and_new_pieces_match_the_plain_definitions(self):
        """The bytewise tests (one AND-NOT for interest, inline bit tests for
        new pieces) agree with set membership, piece counts not a multiple of
        8 included: interesting iff the peer holds a piece we lack, and a new
        piece is always one the peer holds."""
        rng = random.Random(7)
        for n in (1, 7, 8, 9, 63, 130):
            for _ in range(40):
                p = picker(n=n, random_first=rng.choice((0, 4)))
                mine = {i for i in range(n) if rng.random() < 0.5}
                theirs = [i for i in range(n) if rng.random() < 0.3]
                for i in mine:
                    p.mark_have(i)
                peer = bits(n, theirs)
                assert p.interesting(peer) == any(i not in mine for i in theirs)
                got = p.next_requests("A", peer, 1)
                assert all(b[0] in theirs and b[0] not in mine for b in got)
                assert bool(got) == any(i not in mine for i in theirs)


class EndgameTests:
    """When nothing is left unrequested, blocks are duplicated, at most twice."""

    def test_endgame_duplicates_at_most_twice(self):
        """A second peer gets duplicates of in-flight blocks; a third gets none."""
        p = picker(n=1)
        a = p.next_requests("A", bits(1), 10)
        assert len(a) == 4
        b = p.next_requests("B", bits(1), 10)
        assert sorted(b) == sorted(a)
        assert p.next_requests("C", bits(1), 10) == []
        assert p.next_requests("A", bits(1), 10) == []

    def test_no_endgame_while_pieces_remain(self):
        """With unstarted pieces left, a peer lacking them gets no duplicates."""
        p = picker(n=2, random_first=0)
        p.next_requests("A", bits(2), 4)
        started = next(iter(p.in_progress))
        # B only has the started piece; the other piece is not in progress yet.
        assert p.next_requests("B", bits(2, [started]), 4) == []

    def test_received_block_not_duplicated(self):
        """Blocks already received are never requested again in the endgame."""
        p = picker(n=1)
        a = p.next_requests("A", bits(1), 4)
        p.block_received("A", 0, 0, bytes(BLOCK_SIZE))
        b = p.next_requests("B", bits(1), 10)
        assert sorted(b) == sorted(a[1:])


class OutcomeTests:
    """block_received, request_dropped and piece_failed bookkeeping."""

    def test_block_received_completes_piece(self):
        """The last block returns the piece with its assembled buffer."""
        p = picker(n=1, last=BLOCK_SIZE + 10)
        p.next_requests("A", bits(1), 2)
        piece, others = p.block_received("A", 0, 0, b"x" * BLOCK_SIZE)
        assert (piece, others) == (None, [])
        piece, others = p.block_received("A", 0, BLOCK_SIZE, b"y" * 10)
        assert piece is not None and others == []
        assert bytes(piece.buffer) == b"x" * BLOCK_SIZE + b"y" * 10
        assert piece.sources == {"A"}

    def test_block_received_names_peers_to_cancel(self):
        """In the endgame, the other holder of a block is returned to be cancelled."""
        p = picker(n=1)
        p.next_requests("A", bits(1), 4)
        p.next_requests("B", bits(1), 4)
        piece, others = p.block_received("B", 0, 0, bytes(BLOCK_SIZE))
        assert piece is None and others == [("A", (0, 0, BLOCK_SIZE))]
        # A's late copy of the same block is ignored.
        assert p.block_received("A", 0, 0, bytes(BLOCK_SIZE)) == (None, [])

    def test_unrequested_and_malformed_blocks_ignored(self):
        """Blocks nobody requested from this peer, misaligned or wrong-sized: ignored."""
        p = picker(n=2)
        p.next_requests("A", bits(2, [0]), 1)
        index = next(iter(p.in_progress))
        assert p.block_received("B", index, 0, bytes(BLOCK_SIZE)) == (None, [])
        assert p.block_received("A", index, 1, bytes(BLOCK_SIZE)) == (None, [])
        assert p.block_received("A", index, 0, bytes(BLOCK_SIZE - 1)) == (None, [])
        assert p.block_received("A", 1 - index, 0, bytes(BLOCK_SIZE)) == (None, [])
        assert p.block_received("A", index, BLOCK_SIZE, bytes(BLOCK_SIZE)) == (None, [])
        piece = p.in_progress[index]
        assert piece.remaining == 4

    def test_request_dropped_requeues(self):
        """A dropped request is handed to the next peer that asks."""
        p = picker(n=1)
        p.next_requests("A", bits(1), 2)
        p.request_dropped("A", (0, BLOCK_SIZE, BLOCK_SIZE))
        got = p.next_requests("B", bits(1), 1)
        assert got == [(0, BLOCK_SIZE, BLOCK_SIZE)]

    def test_dropping_everything_keeps_the_piece_for_others(self):
        """A piece with nothing received or in flight stays in progress, every block
        back to unrequested, and the next peer continues it first."""
        p = picker(n=1)
        blocks = p.next_requests("A", bits(1), 4)
        for block in blocks:
            p.request_dropped("A", block)
        (piece,) = p.in_progress.values()
        assert piece.requested == {} and len(piece.unrequested) == 4
        assert p.next_requests("B", bits(1, [0]), 4) == blocks

    def test_drop_keeps_received_blocks(self):
        """Dropping after some blocks arrived keeps the piece and its data."""
        p = picker(n=1)
        blocks = p.next_requests("A", bits(1), 4)
        p.block_received("A", 0, 0, b"z" * BLOCK_SIZE)
        for block in blocks[1:]:
            p.request_dropped("A", block)
        piece = p.in_progress[0]
        assert piece.remaining == 3
        assert p.next_requests("B", bits(1), 4) == blocks[1:]

    def test_drop_of_one_endgame_holder_does_not_requeue(self):
        """If another peer still holds the block, dropping one holder re-queues nothing."""
        p = picker(n=1)
        p.next_requests("A", bits(1), 4)
        p.next_requests("B", bits(1), 4)
        p.request_dropped("A", (0, 0, BLOCK_SIZE))
        assert p.in_progress[0].unrequested == []
        # ...but A may be given it again as an endgame duplicate.
        assert (0, 0, BLOCK_SIZE) in p.next_requests("A", bits(1), 4)

    def test_piece_failed_restarts(self):
        """A piece that failed its hash is requested again from scratch."""
        p = picker(n=1)
        for block in p.next_requests("A", bits(1), 4):
            piece, _ = p.block_received("A", block[0], block[1], bytes(block[2]))
        assert piece is not None
        p.piece_failed(piece)
        assert p.in_progress == {} and 0 not in p.have
        assert len(p.next_requests("B", bits(1), 4)) == 4

    def test_mark_have_drops_progress(self):
        """mark_have ends any in-progress state for that piece."""
        p = picker(n=2)
        p.next_requests("A", bits(2, [1]), 1)
        p.mark_have(1)
        assert 1 not in p.in_progress and 1 in p.have

    def test_availability_counts(self):
        """peer_has / peer_bitfield / peer_gone keep availability exact."""
        p = picker(n=3)
        p.peer_bitfield(bits(3, [0, 2]))
        p.peer_has(2)
        assert p.availability == [1, 0, 2]
        p.peer_gone(bits(3, [0, 2]))
        assert p.availability == [0, 0, 1]


class WithdrawnRequestTests:
    """A block whose request we withdrew from a slow peer is still used if it arrives."""

    def test_withdrawn_block_is_taken_not_refetched(self):
        """After request_dropped, the late block (withdrawn=True) fills the piece."""
        p = picker(n=1)
        (block,) = p.next_requests("A", bits(1, [0]), 1)
        p.request_dropped("A", block)
        index, begin, length = block
        assert p.block_received("A", index, begin, bytes(length)) == (None, [])
        piece = p.in_progress[index]
        before = piece.remaining
        p.block_received("A", index, begin, bytes(length), withdrawn=True)
        assert piece.remaining == before - 1
        assert (begin // BLOCK_SIZE) not in piece.unrequested


class LargeRequestTests:
    """``span``: several consecutive 16 KiB blocks in one request (murder peers)."""

    def test_span_merges_consecutive_blocks_within_a_piece(self):
        """Counts stay in 16 KiB blocks; requests never cross a piece."""
        p = picker(n=3, last=PLEN - BLOCK_SIZE // 2)
        reqs = p.next_requests("A", bits(3), 12, span=3)
        assert sum(-(-length // BLOCK_SIZE) for _, _, length in reqs) == 12  # last block short
        for index, begin, length in reqs:
            size = PLEN if index < 2 else PLEN - BLOCK_SIZE // 2
            assert begin % BLOCK_SIZE == 0 and begin + length <= size
            assert length <= 3 * BLOCK_SIZE
        by_piece = {}
        for index, begin, length in reqs:
            by_piece.setdefault(index, []).append((begin, length))
        assert {i: [b for b, _ in v] for i, v in by_piece.items()} == {
            i: [0, 3 * BLOCK_SIZE] for i in range(3)}

    def test_count_limits_the_span(self):
        p = picker(n=2)
        (req,) = p.next_requests("A", bits(2), 2, span=8)
        assert req[1:] == (0, 2 * BLOCK_SIZE)

    def test_large_block_fills_every_block_it_covers(self):
        p = picker(n=1)
        (req,) = p.next_requests("A", bits(1), 4, span=4)
        assert req == (0, 0, PLEN)
        data = bytes(range(256)) * (PLEN // 256)
        piece, others = p.block_received("A", 0, 0, data)
        assert piece is not None and bytes(piece.buffer) == data and others == []
        assert piece.block_from == ["A"] * 4

    def test_large_block_after_an_endgame_duplicate(self):
        """A block that came first from another peer is kept; the rest of the
        large block is taken; the duplicate's requester is named for cancel."""
        p = picker(n=1)
        p.next_requests("A", bits(1), 4, span=4)
        dup = p.next_requests("B", bits(1), 4)  # endgame: each block once more
        assert (0, BLOCK_SIZE, BLOCK_SIZE) in dup
        first = bytes([1]) * BLOCK_SIZE
        piece, others = p.block_received("B", 0, BLOCK_SIZE, first)
        assert piece is None and others == [("A", (0, BLOCK_SIZE, BLOCK_SIZE))]
        piece, others = p.block_received("A", 0, 0, bytes([2]) * PLEN)
        assert piece is not None
        assert bytes(piece.buffer[BLOCK_SIZE:2 * BLOCK_SIZE]) == first
        assert piece.block_from == ["A", "B", "A", "A"]
        assert ("B", (0, 0, BLOCK_SIZE)) in others

    def test_dropping_a_large_request_requeues_each_block(self):
        p = picker(n=1)
        (req,) = p.next_requests("A", bits(1), 4, span=4)
        p.request_dropped("A", req)
        assert p.next_requests("B", bits(1), 4) == [
            (0, b * BLOCK_SIZE, BLOCK_SIZE) for b in range(4)]

    def test_misaligned_large_block_ignored(self):
        p = picker(n=1)
        p.next_requests("A", bits(1), 4, span=4)
        assert p.block_received("A", 0, 0, bytes(PLEN - 1)) == (None, [])
        assert p.block_received("A", 0, 1, bytes(BLOCK_SIZE)) == (None, [])
        assert p.in_progress[0].remaining == 4


def test_can_request():
    """Only a piece with blocks nobody was asked for yet can yield requests."""
    p = picker(n=3)
    p.mark_have(0)
    assert not p.can_request(0)
    assert p.can_request(1)
    (req,) = p.next_requests("A", bits(3, [1]), 4, span=4)
    assert req[0] == 1 and not p.can_request(1)
    p.request_dropped("A", req)
    assert p.can_request(1)


class SetArithmeticTests:
    """The integer views (Bitfield.as_int, the pending set) agree with the scans they skip."""

    def test_as_int_follows_every_change(self):
        """as_int() is recomputed after add and discard: bit 8·nbytes-1-i is piece i."""
        bf = Bitfield(12)
        assert bf.as_int() == 0
        bf.add(0)
        bf.add(11)
        assert bf.as_int() == (1 << 15) | (1 << 4)
        bf.discard(0)
        assert bf.as_int() == 1 << 4
        assert Bitfield.from_bytes(12, bf.tobytes()).as_int() == bf.as_int()

    def test_random_operations_keep_pending_set_and_answers_exact(self):
        """Under random requests, drops, failures and completions, the pending
        set equals the pending list, ``interesting`` equals a member-by-member
        test, and a scan finds nothing only when no candidate exists."""
        for seed in range(40):
            rng = random.Random(seed)
            n = rng.randrange(1, 40)
            p = picker(n=n, seed=seed, random_first=rng.randrange(0, 3))
            for _ in range(200):
                members = [i for i in range(n) if rng.random() < 0.3]
                peer_bits = bits(n, members) if rng.random() < 0.9 else bits(n)
                exclude = {rng.randrange(n) for _ in range(rng.randrange(3))}
                op = rng.random()
                if op < 0.4:
                    got = p.next_requests(rng.choice("ABC"), peer_bits, rng.randrange(1, 6),
                                          exclude)
                    for index, begin, length in got:
                        if rng.random() < 0.3:
                            p.request_dropped("A", (index, begin, length))
                elif op < 0.5 and p.in_progress:
                    p.piece_failed(rng.choice(list(p.in_progress.values())))
                elif op < 0.6:
                    p.mark_have(rng.randrange(n))
                assert p._pending.bits == sum(1 << (p._pending._top - i) for i in p._pending)
                assert p.interesting(peer_bits) == any(i not in p.have for i in peer_bits)
                if p._new_piece(peer_bits, exclude) is None:
                    assert not [i for i in p._pending if (i in peer_bits) and i not in exclude]
