"""Rarest-first upload turns (``SwarmConfig.rare_turns``) in memory, with a Clock.

With one upload slot the next turn normally goes to the peer that waited
longest.  With ``rare_turns`` = K it goes to the waiter whose next requested
piece the fewest of our connections have, so the rarest pieces (the tail of a
deploy) are forwarded first; a waiter passed over K times goes next whatever
it asks for, so no wait is unbounded.
"""

from __future__ import annotations


from murder.peer.config import SwarmConfig
from murder.testing import Uploader



class _Uploader(Uploader):
    """A peer holding every piece; ``availability`` says how many others have each."""

    def __init__(self, rare_turns: int, availability: list[int], **config) -> None:
        super().__init__(SwarmConfig(rare_turns=rare_turns, upload_slots=1, **config))
        self.picker.availability[:] = availability


def _race(rare_turns: int, held: tuple[int, int, int] = (0, 0, 0),
          **config) -> list[tuple[str, int]]:
    """A holds the slot (its socket full); B asks for a common piece, then C and
    D for rarer ones, holding ``held`` pieces each (none asked for here); the
    socket drains and the turns are served.  Poorest-first turns
    (``poor_turns``, on by default) are off unless ``config`` says otherwise."""
    config.setdefault("poor_turns", 0)
    #            pieces: 0  1  2  3  4  5  6  7
    up = _Uploader(rare_turns, [5, 5, 1, 3, 5, 5, 5, 5], **config)
    a = up.peer("a")
    b, c, d = (up.peer(name, holds=count) for name, count in zip("bcd", held))
    return up.race(a, 0, [(b, 1), (c, 3), (d, 2)])


class RareTurnsTests:
    """``rare_turns``: whose upload turn comes next."""

    def test_off_by_default_turns_are_first_come_first_served(self):
        """rare_turns = 0 (the default), without poorest-first: B, C, D in
        the order they asked."""
        assert SwarmConfig().rare_turns == 0
        assert _race(0) == [("a", 0), ("b", 1), ("c", 3), ("d", 2)]

    def test_set_it_wins_over_the_default_poorest_first(self):
        """rare_turns = 4 with the default poor_turns: B holds none, C two and
        D three pieces, so poorest-first alone would serve B first
        (checked); rarest-first decides: D, C, B."""
        poor_turns = SwarmConfig().poor_turns
        assert _race(0, held=(0, 2, 3), poor_turns=poor_turns)[1] == ("b", 1)
        assert _race(4, held=(0, 2, 3), poor_turns=poor_turns) == \
            [("a", 0), ("d", 2), ("c", 3), ("b", 1)]

    def test_the_rarest_piece_goes_first(self):
        """rare_turns = 4: D's piece (held by 1 other) before C's (3) before B's (5)."""
        assert _race(4) == [("a", 0), ("d", 2), ("c", 3), ("b", 1)]

    def test_a_waiter_passed_over_often_enough_goes_next(self):
        """rare_turns = 1: B, passed over once for D, goes next although C's
        piece is rarer than B's: the wait is bounded."""
        assert _race(1) == [("a", 0), ("d", 2), ("b", 1), ("c", 3)]
