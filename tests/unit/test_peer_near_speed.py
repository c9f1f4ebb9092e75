"""The far side's shortcuts give the answers of the scans they replace
(murder/peer/nearness.py ``_BackupsDue``, murder/peer/picker.py's near mask).

The simulator runs this code for every host, the real peer for itself: a
shortcut that answered differently would change what a deploy does.  So each
is compared with the plain scan it replaced, on random inputs.
"""

from __future__ import annotations

import random

from murder.peer.nearness import _BackupsDue
from murder.peer.picker import Picker, _far_choice, _flags_int
from murder.peer.wire import BLOCK_SIZE, Bitfield

_INF = float("inf")


def scan_backups_due(owned: bytearray, ranks: bytearray, seen: list[float], now: float,
                     step: float, limit: float) -> tuple[bytearray, float]:
    """The scan ``_BackupsDue`` replaced (session 9's ``_backups_due``), verbatim."""
    fallback = bytearray(len(ranks))
    later = _INF
    for i in range(len(ranks)):
        t = seen[i]
        if t == _INF or owned[i]:
            continue
        rank = ranks[i]
        at = t + ((rank - 1) * step if rank else limit)
        if at <= now:
            fallback[i] = rank or 255
        elif at < later:
            later = at
    return fallback, later


def random_ring(rng: random.Random, n: int) -> tuple[bytearray, bytearray]:
    """Owned flags (ranked) and backup ranks as ``_ring`` makes them: owned
    pieces have no backup rank; ranks 2, 3 or 0."""
    owned = bytearray(n)
    ranks = bytearray(n)
    for i in range(n):
        r = rng.random()
        if r < 0.15:
            owned[i] = rng.randint(1, 255)
        elif r < 0.6:
            ranks[i] = rng.choice((2, 3))
    return owned, ranks


class BackupsDueTests:
    """``_BackupsDue.answer`` equals the scan, step by step."""

    def test_same_answers_as_the_scan_on_random_inputs(self):
        """Pieces offered far over time, time advancing (sometimes exactly onto
        a wait's end), the far piece time moving both ways and new rings: every
        answer, flags and next wait end, is the scan's."""
        rng = random.Random(16)
        compared = flagged = 0
        for _ in range(40):
            n = rng.randint(1, 300)
            owned, ranks = random_ring(rng, n)
            seen = [_INF] * n
            order: list[int] = []
            due = _BackupsDue(n)
            now, unit = 0.0, rng.uniform(0.01, 0.5)
            for _ in range(150):
                action = rng.random()
                if action < 0.3:
                    for i in rng.sample(range(n), rng.randint(0, min(n, 12))):
                        if seen[i] == _INF:
                            seen[i] = now
                            order.append(i)
                elif action < 0.6:
                    now += rng.choice((0.0, rng.uniform(0, 0.3), rng.uniform(0, 3)))
                elif action < 0.7 and order:
                    # Exactly onto some piece's wait end: the ``<=`` boundary.
                    i = rng.choice(order)
                    rank = ranks[i]
                    now = max(now, seen[i] + ((rank - 1) * 1.5 * unit if rank else 3.0 * unit))
                elif action < 0.85:
                    unit *= rng.choice((0.5, 0.9, 1.1, 2.0))
                elif action < 0.9:
                    owned, ranks = random_ring(rng, n)  # a new ring: new objects
                got = due.answer(owned, ranks, seen, order, now, 1.5 * unit, 3.0 * unit)
                want = scan_backups_due(owned, ranks, seen, now, 1.5 * unit, 3.0 * unit)
                assert got == want
                compared += 1
                flagged += any(want[0])
        assert compared == 40 * 150 and flagged > 1000  # the answers were not all empty

    def test_answer_is_a_copy(self):
        """A caller holding an answer does not see it change with the next one."""
        due = _BackupsDue(2)
        owned, ranks = bytearray(2), bytearray(b"\x02\x00")
        seen, order = [0.0, _INF], [0]
        first, _ = due.answer(owned, ranks, seen, order, 1.0, 0.5, 2.0)
        seen[1] = 1.0
        order.append(1)
        second, _ = due.answer(owned, ranks, seen, order, 5.0, 0.5, 2.0)
        assert (first, second) == (bytearray(b"\x02\x00"), bytearray(b"\x02\xff"))


def far_picker(rng: random.Random, n: int) -> Picker:
    p = Picker(n, piece_length=BLOCK_SIZE, total_length=BLOCK_SIZE * n, random_first=0,
               rng=random.Random(rng.random()))
    for i in rng.sample(range(n), rng.randint(0, n)):
        p.mark_have(i)
    return p


class NearMaskTests:
    """The picker's integer of near-held pieces and the far pick it speeds up."""

    def test_near_held_follows_the_counts(self):
        """After any mix of near HAVEs, bitfields, departures and resets, the
        mask holds exactly the pieces whose near count is not 0."""
        rng = random.Random(7)
        for _ in range(30):
            n = rng.randint(1, 100)
            p = Picker(n)
            for _ in range(200):
                action = rng.random()
                some = rng.sample(range(n), rng.randint(0, n))
                if action < 0.4:
                    p.near_has(rng.randrange(n))
                elif action < 0.6:
                    p.near_bitfield(some)
                elif action < 0.95:
                    p.near_gone(some)  # counts may go below 0: still "not 0"
                else:
                    p.near_reset()
                expect = Bitfield(n)
                for i, count in enumerate(p.near_availability):
                    if count:
                        expect.add(i)
                assert p._near_held == expect.as_int()

    def test_flags_int_is_the_bitfield_layout(self):
        """Nonzero flags become the same integer as a Bitfield of those pieces."""
        rng = random.Random(3)
        for n in (1, 7, 8, 9, 255, 256, 257):
            flags = bytearray(rng.choice((0, 0, 1, 2, 255)) for _ in range(n))
            bf = Bitfield(n)
            for i, f in enumerate(flags):
                if f:
                    bf.add(i)
            assert _flags_int(flags, 8 * ((n + 7) // 8) - 1) == bf.as_int()
        assert _flags_int(None, 7) == -1

    def test_owned_mask_sees_flags_changed_in_place(self):
        """A picker's kept last answer is keyed by the flags' content: the
        same bytearray changed in place gives the new answer."""
        flags = bytearray(8)
        flags[0] = 1
        picker = Picker(8)
        assert picker._owned_int(flags) == 0x80
        flags[7] = 3
        assert picker._owned_int(flags) == 0x81
        assert Picker(16)._owned_int(flags) == 0x8100  # same flags, another layout
        assert picker._owned_int(None) == -1

    def test_far_pick_same_as_the_scan(self):
        """``_new_piece`` for a far connection picks what the scan over every
        pending piece picks (including nothing), whatever the peer holds, near
        counts, ownership ranks and exclusions."""
        rng = random.Random(11)
        found = nothing = 0
        for _ in range(400):
            n = rng.randint(1, 300)
            p = far_picker(rng, n)
            p.near_bitfield(i for i in range(n) if rng.random() < rng.random())
            full = rng.random() < 0.1
            peer = Bitfield(n, full=full)
            for i in range(n):
                if rng.random() < 0.3:
                    peer.add(i)
            owned = rng.choice((None, bytearray(rng.choice((0, 0, 0, 1, 2, 255)) for _ in range(n))))
            exclude = set(rng.sample(range(n), rng.randint(0, min(n, 5))))
            got = p._new_piece(peer, exclude, p.near_availability, owned)
            want = None
            if p._pending.any_of(None if full else peer, exclude):
                want = _far_choice(p._pending, p.near_availability, owned,
                                   b"" if full else peer.tobytes(), full, exclude)
            assert got == want
            found += want is not None
            nothing += want is None
        assert found > 50 and nothing > 50  # both outcomes exercised
