"""Sticky upload turns (``SwarmConfig.turn_pieces``) in memory, with a Clock.

With one upload slot a turn serves ``turn_pieces`` pieces while others wait
and the requester keeps asking; it passes early when the requester's queue
empties, and nobody waits longer than the peers ahead of it × that many
pieces.  ``turn_pieces`` = 1 keeps strict piece-at-a-time round-robin.
"""

from __future__ import annotations


import pytest
from twisted.python import usage

from murder.peer.config import SwarmConfig
from murder.testing import Uploader

PIECES = Uploader.PIECES


class _Seat(Uploader):
    """An :class:`Uploads` holding every piece, and peers that queue requests."""

    def __init__(self, turn_pieces: int, slots: int = 1, **config) -> None:
        super().__init__(SwarmConfig(upload_slots=slots, turn_pieces=turn_pieces, **config))

    def order(self) -> list[tuple[str, int]]:
        """Who got which piece, one entry per piece sent (both blocks in a row)."""
        assert len(self.pieces()) * 2 == len(self.sent())
        return self.pieces()


def _contend(turn_pieces: int) -> list[tuple[str, int]]:
    """A's socket is full while A asks for pieces 0–3 and B for 4–7; then it drains."""
    seat = _Seat(turn_pieces)
    a, b = seat.peer("a"), seat.peer("b")
    a.send_paused = True
    seat.ask(a, 0)
    seat.uploads.ready(a)          # A's turn starts, its socket is full
    seat.ask(a, 1, 2, 3)
    seat.ask(b, 4, 5, 6, 7)        # B waits for a turn
    a.send_paused = False
    seat.uploads.ready(a)
    return seat.order()


class StickyTurnTests:
    """``turn_pieces``: how many pieces one upload turn serves while others wait."""

    def test_one_piece_turns_alternate(self):
        """turn_pieces=1 (the default): A and B alternate a piece at a time."""
        assert SwarmConfig().turn_pieces == 1
        assert _contend(1) == [("a", 0), ("b", 4), ("a", 1), ("b", 5),
                               ("a", 2), ("b", 6), ("a", 3), ("b", 7)]

    def test_two_piece_turns(self):
        """turn_pieces=2: A gets two pieces in a row, then B two, and so on."""
        assert _contend(2) == [("a", 0), ("a", 1), ("b", 4), ("b", 5),
                               ("a", 2), ("a", 3), ("b", 6), ("b", 7)]

    def test_long_turn_runs_until_the_queue_empties(self):
        """A turn longer than the queue: A is served to the end, then B."""
        assert _contend(16) == [("a", 0), ("a", 1), ("a", 2), ("a", 3),
                                ("b", 4), ("b", 5), ("b", 6), ("b", 7)]

    def test_turn_held_until_its_last_piece_drains(self):
        """A turn whose last block filled the send buffer (the link paused
        us) passes when the link drains (``Uploads.drained``, called on
        resume), not at that last write: B's piece does not start beside A's.
        A piece that fits the buffer whole (large blocks, a simulated piece
        of one block) otherwise left in parallel with every later turn's."""
        seat = _Seat(turn_pieces=1)
        a, b = seat.peer("a"), seat.peer("b")
        send_piece = a.link.send_piece

        def fill_on_last_block(index: int, begin: int, block: bytes) -> None:
            send_piece(index, begin, block)
            if begin == seat.block:
                a.send_paused = True  # the socket buffer took the last block and is full
        a.link.send_piece = fill_on_last_block
        seat.ask(a, 0)
        seat.ask(b, 4)
        assert seat.order() == [("a", 0)]  # B waits while A's piece drains
        a.send_paused = False
        seat.uploads.drained(a)
        assert seat.order() == [("a", 0), ("b", 4)]

    def test_turn_passes_when_the_requester_stops_asking(self):
        """A turn ends as soon as the requester's queue empties, even short of
        turn_pieces; when A asks again it waits behind B's turn."""
        seat = _Seat(turn_pieces=8)
        a, b = seat.peer("a"), seat.peer("b")
        a.send_paused = True
        seat.ask(a, 0)
        seat.uploads.ready(a)
        seat.ask(b, 4, 5)
        a.send_paused = False
        seat.uploads.ready(a)
        seat.ask(a, 1)
        assert seat.order() == [("a", 0), ("b", 4), ("b", 5), ("a", 1)]

    def test_nobody_waits_longer_than_the_turns_ahead_of_it(self):
        """Three peers with long queues, turn_pieces=2: turns rotate A, B, C, A…
        so C's first piece leaves after at most 2 × 2 pieces of the others."""
        seat = _Seat(turn_pieces=2)
        a, b, c = seat.peer("a"), seat.peer("b"), seat.peer("c")
        a.send_paused = True
        seat.ask(a, 0)
        seat.uploads.ready(a)
        seat.ask(a, 1, 2)
        seat.ask(b, 3, 4, 5)
        seat.ask(c, 6, 7)
        a.send_paused = False
        seat.uploads.ready(a)
        names = [name for name, _ in seat.order()]
        assert names == ["a", "a", "b", "b", "c", "c", "a", "b"]

    def test_a_lone_requester_counts_on_and_yields_at_the_next_piece(self):
        """While nobody waits the turn goes on; a peer that starts waiting is
        served at the next piece boundary once turn_pieces is used up — not
        after a fresh turn of turn_pieces."""
        seat = _Seat(turn_pieces=2)
        a, b = seat.peer("a"), seat.peer("b")
        seat.ask(a, 0, 1, 2)       # sent at once: nobody waits
        a.send_paused = True
        seat.ask(a, 3, 4)
        seat.ask(b, 5)
        a.send_paused = False
        seat.uploads.ready(a)
        assert seat.order() == [("a", 0), ("a", 1), ("a", 2), ("b", 5), ("a", 3), ("a", 4)]

    def test_wedged_receiver_loses_a_sticky_turn(self):
        """A receiver that stops reading loses even a long turn after
        stuck_turn_timeout: B is served; A's pieces follow once it reads."""
        seat = _Seat(turn_pieces=8)
        a, b = seat.peer("a"), seat.peer("b")
        a.send_paused, a.paused_since = True, seat.clock.seconds()
        seat.ask(a, 0, 1, 2)
        seat.uploads.ready(a)      # A's turn, but it does not read
        seat.ask(b, 4, 5)
        seat.clock.advance(SwarmConfig.stuck_turn_timeout - 0.5)
        seat.uploads.liveness(a, seat.clock.seconds())
        assert seat.order() == []
        seat.clock.advance(1.0)
        seat.uploads.liveness(a, seat.clock.seconds())
        assert seat.order() == [("b", 4), ("b", 5)]
        a.send_paused, a.paused_since = False, None
        seat.uploads.ready(a)
        assert seat.order() == [("b", 4), ("b", 5), ("a", 0), ("a", 1), ("a", 2)]


class PoorestFirstTests:
    """``seed_poorest_first``: the seeder's first pass serves the poorest waiter next."""

    def _race(self, **config) -> list[str]:
        """A holds the turn; B (3 pieces) starts waiting before C (none).
        Poorest-first turns for every host (``poor_turns``, on by default)
        are off here: these tests are about the seeder's own option."""
        seat = _Seat(turn_pieces=1, super_seed=True, poor_turns=0, **config)
        a, b, c = seat.peer("a"), seat.peer("b"), seat.peer("c")
        for index in (5, 6, 7):
            b.bits.add(index)
        a.send_paused = True
        seat.ask(a, 0)
        seat.uploads.ready(a)
        seat.ask(b, 1)
        seat.ask(c, 2)
        a.send_paused = False
        seat.uploads.ready(a)
        return [name for name, _ in seat.order()]

    def test_poorest_waiter_goes_first(self):
        """With the option, C (no pieces) is served before B, which waited longer."""
        assert self._race(seed_poorest_first=True) == ["a", "c", "b"]

    def test_default_is_first_come(self):
        """Without it, turns go in waiting order: B, then C."""
        assert self._race() == ["a", "b", "c"]

    def test_only_until_every_piece_has_left_once(self):
        """After the seeder's first pass, waiting order again."""
        seat = _Seat(turn_pieces=1, super_seed=True, seed_poorest_first=True, poor_turns=0)
        seat.uploads.first_copy_at = 0.0
        a, b, c = seat.peer("a"), seat.peer("b"), seat.peer("c")
        for index in (5, 6, 7):
            b.bits.add(index)
        a.send_paused = True
        seat.ask(a, 0)
        seat.uploads.ready(a)
        seat.ask(b, 1)
        seat.ask(c, 2)
        a.send_paused = False
        seat.uploads.ready(a)
        assert [name for name, _ in seat.order()] == ["a", "b", "c"]


class TurnPiecesOptionTests:
    """``--turn-pieces`` on the command line becomes ``SwarmConfig.turn_pieces``."""

    def test_flag_reaches_the_swarm_config(self, tmp_path, small_torrent):
        """`murder peer --turn-pieces 8` runs the swarm with turn_pieces=8; the default is 1."""
        from murder.peer.options import PeerOptions, config_from

        torrent = small_torrent
        opts = PeerOptions()
        opts.parseOptions(["--torrent", torrent, "--saveas", str(tmp_path / "x"),
                           "--turn-pieces", "8"])
        assert config_from(opts).swarm.turn_pieces == 8
        opts = PeerOptions()
        opts.parseOptions(["--torrent", torrent, "--saveas", str(tmp_path / "x")])
        assert config_from(opts).swarm.turn_pieces == 1

    def test_zero_is_refused(self, tmp_path, small_torrent):
        """--turn-pieces 0 is a usage error with a clear message."""
        from murder.peer.options import SeederOptions

        with pytest.raises(usage.UsageError, match="--turn-pieces must be at least 1"):
            SeederOptions().parseOptions(["--torrent", small_torrent, "--file",
                                          str(tmp_path), "--turn-pieces", "0"])
