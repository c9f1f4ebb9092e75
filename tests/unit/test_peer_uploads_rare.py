"""Rarest-first upload turns (``SwarmConfig.rare_turns``) in memory, with a Clock.

With one upload slot the next turn normally goes to the peer that waited
longest.  With ``rare_turns`` = K it goes to the waiter whose next requested
piece the fewest of our connections have, so the rarest pieces (the tail of a
deploy) are forwarded first; a waiter passed over K times goes next whatever
it asks for, so no wait is unbounded.
"""

from __future__ import annotations

from twisted.internet.task import Clock

from murder.peer.config import SwarmConfig
from murder.peer.interfaces import Peer
from murder.peer.picker import Picker
from murder.peer.ratelimit import RateLimiter
from murder.peer.uploads import Uploads
from murder.peer.wire import BLOCK_SIZE, Bitfield
from murder.testing import MemoryStorage, build_torrent
from murder.testing import pattern as _payload

PLEN = 2 * BLOCK_SIZE
PIECES = 8


class _Link:
    """A PeerLink that records who was sent which piece (first block only)."""

    def __init__(self, name: str, sent: list[tuple[str, int]]) -> None:
        self.address = (name, 1)
        self.outgoing = False
        self.peer_id = name.encode().ljust(20, b"-")
        self.fast = True
        self.sent = sent
        #: Set to a Peer: its socket fills after the first block (it keeps the slot).
        self.fill_socket_of: Peer | None = None

    def send_piece(self, index: int, begin: int, data: bytes) -> None:
        if begin == 0:
            self.sent.append((self.address[0], index))
        if self.fill_socket_of is not None:
            self.fill_socket_of.send_paused = True
            self.fill_socket_of = None

    def __getattr__(self, name: str):
        return lambda *args: None


class _Uploader:
    """A peer holding every piece; ``availability`` says how many others have each."""

    def __init__(self, rare_turns: int, availability: list[int]) -> None:
        meta, data = build_torrent(_payload(PIECES * PLEN), piece_length=PLEN)
        clock = Clock()
        self.picker = Picker(meta.num_pieces, piece_length=PLEN, total_length=meta.total_length)
        for i in range(meta.num_pieces):
            self.picker.mark_have(i)
        self.picker.availability[:] = availability
        limiter = RateLimiter(clock, 0, 0, resume_upload=lambda p: None)
        self.uploads = Uploads(clock, SwarmConfig(rare_turns=rare_turns), meta, self.picker,
                               MemoryStorage(meta, data), limiter)
        self.sent: list[tuple[str, int]] = []

    def peer(self, name: str) -> Peer:
        peer = Peer(_Link(name, self.sent), Bitfield(PIECES))
        peer.peer_interested = True
        self.uploads.update_choke(peer)
        return peer

    def ask(self, peer: Peer, *pieces: int) -> None:
        for index in pieces:
            for begin in (0, BLOCK_SIZE):
                self.uploads.got_request(peer, index, begin, BLOCK_SIZE)


def _race(rare_turns: int) -> list[tuple[str, int]]:
    """A holds the slot (its socket full); B asks for a common piece, then C and
    D for rarer ones; the socket drains and the turns are served."""
    #            pieces: 0  1  2  3  4  5  6  7
    up = _Uploader(rare_turns, [5, 5, 1, 3, 5, 5, 5, 5])
    a, b, c, d = (up.peer(name) for name in "abcd")
    a.send_paused = True
    up.ask(a, 0)  # both blocks queued; then its socket fills after the first
    a.send_paused = False
    a.link.fill_socket_of = a
    up.uploads.ready(a)
    up.ask(b, 1)
    up.ask(c, 3)
    up.ask(d, 2)
    a.send_paused = False
    up.uploads.ready(a)
    return up.sent


class RareTurnsTests:
    """``rare_turns``: whose upload turn comes next."""

    def test_off_by_default_turns_are_first_come_first_served(self):
        """rare_turns = 0 (the default): B, C, D in the order they asked."""
        assert SwarmConfig().rare_turns == 0
        assert _race(0) == [("a", 0), ("b", 1), ("c", 3), ("d", 2)]

    def test_the_rarest_piece_goes_first(self):
        """rare_turns = 4: D's piece (held by 1 other) before C's (3) before B's (5)."""
        assert _race(4) == [("a", 0), ("d", 2), ("c", 3), ("b", 1)]

    def test_a_waiter_passed_over_often_enough_goes_next(self):
        """rare_turns = 1: B, passed over once for D, goes next although C's
        piece is rarer than B's: the wait is bounded."""
        assert _race(1) == [("a", 0), ("d", 2), ("b", 1), ("c", 3)]
