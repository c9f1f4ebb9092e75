"""Poorest-first upload turns (``SwarmConfig.poor_turns``) in memory, with a Clock.

With one upload slot the next turn normally goes to the peer that waited
longest.  With ``poor_turns`` = K it goes to the waiter that holds the fewest
pieces (first of equals: the longest waiting), so a host that fell behind its
neighbours is served first everywhere and the deploy's last host finishes
sooner; a waiter passed over K times goes next whatever it holds, so no wait
is unbounded.  With ``far_turns_first`` the far turn goes to the poorest far
waiter.  With ``poor_spread`` each holder adds its own fixed offset to the
count, so holders disagree about waiters that are close (no herd on the
same poorest host) and agree about one far behind.
"""

from __future__ import annotations

from collections import deque

from murder.peer.config import SwarmConfig
from murder.peer.interfaces import Peer
from murder.peer.uploads import pass_over, pieces_held, spread_rank
from murder.testing import Uploader


def _race(config: SwarmConfig, held: dict[str, int], far: str = "",
          own_id: bytes = b"") -> list[tuple[str, int]]:
    """A holds the slot (its socket full); B, C and D, holding ``held``
    pieces each (those in ``far`` across the rack uplink), ask for a piece
    each in that order; the socket drains and the turns are served by the
    host whose peer id is ``own_id``."""
    up = Uploader(config, own_id=own_id)
    a = up.peer("a")
    b, c, d = (up.peer(name, holds=held[name]) for name in "bcd")
    for peer, name in ((b, "b"), (c, "c"), (d, "d")):
        peer.distance = 1 if name in far else 0
    return up.race(a, 0, [(b, 1), (c, 2), (d, 3)])


class PoorTurnsTests:
    """``poor_turns``: whose upload turn comes next."""

    def test_on_by_default_with_a_spread(self):
        """Poorest-first is the default (since session 11), with each
        holder's own offset of up to a quarter of the pieces."""
        assert (SwarmConfig().poor_turns, SwarmConfig().poor_spread) == (8, 0.25)

    def test_zero_is_first_come_first_served(self):
        """poor_turns = 0: B, C, D in the order they asked, whatever they hold."""
        config = SwarmConfig(upload_slots=1, poor_turns=0)
        assert _race(config, {"b": 3, "c": 2, "d": 0}) == [("a", 0), ("b", 1), ("c", 2), ("d", 3)]

    def test_the_waiter_holding_fewest_pieces_goes_first(self):
        """poor_turns = 4: D (holds none) before C (two) before B (three)."""
        config = SwarmConfig(upload_slots=1, poor_turns=4, poor_spread=0)
        assert _race(config, {"b": 3, "c": 2, "d": 0}) == [("a", 0), ("d", 3), ("c", 2), ("b", 1)]

    def test_equals_go_in_the_order_they_asked(self):
        """Among waiters holding as many pieces, the longest waiting goes first."""
        config = SwarmConfig(upload_slots=1, poor_turns=4, poor_spread=0)
        assert _race(config, {"b": 1, "c": 1, "d": 1}) == [("a", 0), ("b", 1), ("c", 2), ("d", 3)]

    def test_a_waiter_passed_over_often_enough_goes_next(self):
        """poor_turns = 1: B, passed over once for D, goes next although C
        holds fewer pieces: the wait is bounded."""
        config = SwarmConfig(upload_slots=1, poor_turns=1, poor_spread=0)
        assert _race(config, {"b": 3, "c": 2, "d": 0}) == [("a", 0), ("d", 3), ("b", 1), ("c", 2)]

    def test_the_far_turn_goes_to_the_poorest_far_waiter(self):
        """far_turns_first with poor_turns: the first turn after A goes to a
        far waiter, the poorer of C and D (D, though B holds fewer), then the
        poorest of the rest (B before C)."""
        config = SwarmConfig(upload_slots=1, poor_turns=4, far_turns_first=True, poor_spread=0)
        assert _race(config, {"b": 0, "c": 2, "d": 1}, far="cd") == \
            [("a", 0), ("d", 3), ("b", 1), ("c", 2)]


HOLDERS = [b"holder-%02d" % i for i in range(16)]


class PoorSpreadTests:
    """``poor_spread``: each holder's own view of who is poorest."""

    def test_a_span_of_one_piece_or_none_is_the_plain_count(self):
        """poor_spread = 0, or a span of one piece: the plain count."""
        assert spread_rank(b"x", 0) is pieces_held
        assert spread_rank(b"x", 1) is pieces_held

    def test_holders_disagree_about_waiters_close_together(self):
        """B, C and D hold 1, 2 and 0 of 8 pieces: without a spread every
        holder serves D first (the herd); with a spread of half the pieces
        (offsets 0-3) the sixteen holders do not all pick the same one."""
        plain = SwarmConfig(upload_slots=1, poor_turns=4, poor_spread=0)
        spread = SwarmConfig(upload_slots=1, poor_turns=4, poor_spread=0.5)
        held = {"b": 1, "c": 2, "d": 0}
        firsts = {_race(plain, held, own_id=h)[1][0] for h in HOLDERS}
        assert firsts == {"d"}
        firsts = {_race(spread, held, own_id=h)[1][0] for h in HOLDERS}
        assert len(firsts) > 1

    def test_a_waiter_far_behind_goes_first_everywhere(self):
        """D holds none, B and C four of 8; a spread of a quarter (offsets 0-1)
        cannot close that gap: every holder serves D first."""
        spread = SwarmConfig(upload_slots=1, poor_turns=4, poor_spread=0.25)
        held = {"b": 4, "c": 4, "d": 0}
        assert {_race(spread, held, own_id=h)[1][0] for h in HOLDERS} == {"d"}

    def test_a_holder_ranks_a_waiter_the_same_each_time(self):
        """The offset is drawn from the two peer ids, not at random per turn."""
        up = Uploader(SwarmConfig())
        waiter = up.peer("b")
        rank = spread_rank(b"holder", 4)
        assert len({rank(waiter) for _ in range(5)}) == 1
        assert 0 <= rank(waiter) < 4


def _peers(n: int) -> list[Peer]:
    up = Uploader(SwarmConfig())
    return [up.peer(str(i)) for i in range(n)]


class PassOverTests:
    """``pass_over``, the ranked pick that every ranked turn order shares."""

    def test_without_a_rank_the_first_candidate_goes_and_nothing_is_counted(self):
        """No ranking: the first candidate, and no waiter counts a pass."""
        a, b = _peers(2)
        turns: deque[Peer] = deque([a, b])
        skipped: dict[Peer, int] = {}
        assert pass_over(turns, turns, skipped, 0, None) is a
        assert list(turns) == [b] and skipped == {}

    def test_each_waiter_ahead_of_the_pick_counts_one_pass(self):
        """The pick leaves the queue; those ahead of it count a pass; its own
        count is cleared."""
        a, b, c = _peers(3)
        rank = {a: 2, b: 1, c: 0}
        turns = deque([a, b, c])
        skipped = {c: 3}
        assert pass_over(turns, turns, skipped, 5, rank.__getitem__) is c
        assert list(turns) == [a, b] and skipped == {a: 1, b: 1}
