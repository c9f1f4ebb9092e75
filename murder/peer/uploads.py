"""Upload scheduling: who is served when (turns, slots), super-seeding, seed budget.

Uploading side of the core.  Among trusted hosts every interested peer is
unchoked (no tit-for-tat) and its requests queue here.  Peers take *turns*
a piece at a time, ``upload_slots`` (4) at once: a piece reaches a peer at a
large share of the link and can be forwarded at once, instead of reaching
all of them slowly and together (bench/README.md; one slot left a fast link
idle behind one slower receiver, session 7).
``turn_pieces`` > 1 makes a turn last several pieces while the requester
keeps asking (toward the 2010 original's chain).

A seeder super-seeds: a request for a piece some connected peer already has
(or that is on its way to one) is refused once with a BEP 6 REJECT, so the
seeder's upload goes to pieces the swarm lacks; once every piece has left
once, duplicates are served only up to ``seed_budget`` payload copies.

By default the next turn goes to the waiter holding the fewest pieces, as
each holder counts them (``poor_turns`` with ``poor_spread``): the last
host decides a deploy's time, and serving the poorest first lets a host that
fell behind catch up (bench/README.md, sessions 10 and 11).

``seed_heads``/``peer_heads`` (a chain first pass, :mod:`murder.peer.chain`)
and ``rare_turns`` (rarest-first turn order) are off by default: measured,
neither won (bench/README.md, "Session 4").  ``rare_turns``, when set,
takes the place of the poorest-first order.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Iterable
from zlib import crc32

from twisted.logger import Logger

from murder.errors import ProtocolError, StorageError
from murder.metainfo import Metainfo
from murder.peer.chain import Chain
from murder.peer.config import SwarmConfig
from murder.peer.interfaces import Clock, Peer, PieceStore
from murder.peer.picker import Picker
from murder.peer.ratelimit import RateLimiter


class Uploads:
    """The upload queues of one swarm's connections and whose turn it is."""

    log = Logger()

    def __init__(self, clock: Clock, config: SwarmConfig, meta: Metainfo, picker: Picker,
                 storage: PieceStore, limiter: RateLimiter, own_id: bytes = b"") -> None:
        self.clock = clock
        self.config = config
        self.meta = meta
        self.picker = picker
        self.storage = storage
        self.limiter = limiter
        self.uploaded = 0
        self.refused_requests = 0
        #: When every piece had left once (the seeder's milestone), and the
        #: bytes uploaded by then.
        self.first_copy_at: float | None = None
        self.uploaded_at_first_copy = 0
        self._served_to: dict[int, Peer] = {}
        #: Upload bytes per piece until every piece has left once.
        self._sent: dict[int, int] = {}
        self._pieces_sent = 0
        self._active: list[Peer] = []
        self._turns: deque[Peer] = deque()
        #: The last turn went to a far peer (``far_turns_first``).
        self._far_last = False
        #: ``seed_heads``/``peer_heads``: who is unchoked in a chain first pass.
        self.chain = Chain(self)
        #: ``poor_turns``/``rare_turns``: how often each waiter was passed over.
        self._skipped: dict[Peer, int] = {}
        #: ``poor_turns``' rank: the piece count, spread per holder (``poor_spread``).
        self._poor_rank = spread_rank(own_id, int(config.poor_spread * meta.num_pieces))

    # ------------------------------------------------------------ choking
    def update_choke(self, peer: Peer) -> None:
        """Interest changed: every interested peer is unchoked (trusted hosts),
        except, in a chain first pass, those beyond ``seed_heads``: they wait."""
        if not self.chain.on():
            self.set_choking(peer, not peer.peer_interested)
        else:
            self.chain.update_choke(peer)

    def set_choking(self, peer: Peer, choking: bool) -> None:
        if choking == peer.am_choking:
            return
        peer.am_choking = choking
        if choking:
            if peer.fast:
                for block in peer.upload_queue:
                    peer.link.send_reject(block)
            peer.upload_queue.clear()
            self.turn_over(peer)
            peer.link.send_choke()
        else:
            peer.link.send_unchoke()

    # ----------------------------------------------------------- requests
    def got_request(self, peer: Peer, index: int, begin: int, length: int) -> None:
        if peer.am_choking or index not in self.picker.have:
            if peer.fast:
                peer.link.send_reject((index, begin, length))
            return
        if len(peer.upload_queue) >= self.config.max_queued_requests:
            raise ProtocolError("too many queued requests")
        if not self.allow_request(peer, index):
            if peer.fast:
                peer.link.send_reject((index, begin, length))
            return
        peer.upload_queue.append((index, begin, length))
        if not peer.send_paused:
            self.ready(peer)

    def got_cancel(self, peer: Peer, index: int, begin: int, length: int) -> None:
        try:
            peer.upload_queue.remove((index, begin, length))
        except ValueError:
            pass
        if not peer.upload_queue:
            self.turn_over(peer)

    def allow_request(self, peer: Peer, index: int) -> bool:
        """Super-seeding: the seeder sends each piece to one peer.

        A request for a piece that a connected peer already has, or that is
        being sent to another peer, is rejected once (BEP 6), so the seeder's
        upload goes to pieces the swarm lacks and peers fetch the rest from
        each other.  A peer that asks again is served: it may be unable to
        reach the others.  Peers without the fast extension cannot be told
        "no" without stalling them, so they are always served.
        """
        if not self.config.super_seed or not peer.fast:
            return True
        if self.first_copy_at is not None and \
                self.uploaded < self.config.seed_budget * self.meta.total_length:
            # Every piece has left once: spare upload shortens the tail, up to
            # a budget, so that the swarm, not the seeder, carries the fan-out.
            # Not before: a piece being *assigned* is not a piece sent, and
            # duplicates queued ahead of the last first copies delay them
            # (measured: 0.5 copies of duplicates before the last first copy
            # left, at N=16; see bench/README.md).
            return True
        owner = self._served_to.get(index)
        if owner is peer:
            return True
        now = self.clock.seconds()
        if owner is not None and owner.active and not self.stuck(owner, now) and \
                self.picker.availability[index] == 0:
            # On its way to another peer, which will offer it as soon as it
            # verifies: asking again does not help.  Unless that peer stopped
            # reading (frozen, swapping): then the piece is not on its way, and
            # refusing it to everyone else stalled the whole swarm.
            peer.seed_refused[index] = now
            self.refused_requests += 1
            return False
        refused_at = peer.seed_refused.get(index)
        if refused_at is not None:
            # The rest of the same burst is refused too; a request well after
            # the refusal, while peers hold the piece, means this peer cannot
            # reach them.
            if now - refused_at >= 1.0:
                return True
            self.refused_requests += 1
            return False
        if self.picker.availability[index] > 0 or (
                owner is not None and not owner.active and
                owner.uploaded >= self.meta.total_length):
            # Others have it.  Also when its owner was sent the whole payload
            # and then hung up (a chain head that completed: a seed leaves a
            # seed): the others most likely got it there.  Refused once only.
            peer.seed_refused[index] = now
            self.refused_requests += 1
            return False
        self._served_to[index] = peer
        return True

    # -------------------------------------------------------------- turns
    def ready(self, peer: Peer) -> None:
        """``peer`` has queued requests: send now, or wait for a turn."""
        slots = self.config.upload_slots
        if not slots or peer in self._active:
            self.pump(peer)
            return
        if len(self._active) < slots:
            self._start_turn(peer)
        elif peer not in self._turns:
            self._turns.append(peer)

    def turn_over(self, peer: Peer) -> None:
        """``peer`` finished its piece (or its queue): the next peer's turn."""
        if not self.config.upload_slots:
            return
        if peer in self._active:
            self._active.remove(peer)
        if peer.upload_queue and peer.active and peer not in self._turns:
            self._turns.append(peer)
        while self._turns and len(self._active) < self.config.upload_slots:
            nxt = self._next_turn()
            if nxt.active and nxt.upload_queue:
                self._start_turn(nxt)
        if len(self._active) < self.config.upload_slots:
            self.chain.slot_free()

    def _start_turn(self, peer: Peer) -> None:
        self._active.append(peer)
        peer.turn_piece = None
        peer.turn_count = 0
        self.pump(peer)

    def _next_turn(self) -> Peer:
        """Pop whose turn is next: the longest waiting, or (``seed_poorest_first``,
        the seeder's first pass) the waiting peer with the fewest pieces, or
        (``far_turns_first``) a far waiter every other turn; ``poor_turns`` or
        ``rare_turns`` rank the waiters (:func:`pass_over`)."""
        turns = self._turns
        if self.config.seed_poorest_first and self.config.super_seed and \
                self.first_copy_at is None and len(turns) > 1:
            poorest = min(turns, key=pieces_held)  # first of equals
            turns.remove(poorest)
            return poorest
        rank, bound = self._ranking()
        if self.config.far_turns_first and len(turns) > 1:
            if not self._far_last:
                far = [p for p in turns if p.distance]
                if far:
                    self._far_last = True
                    return pass_over(turns, far, self._skipped, bound, rank)
            self._far_last = False
        if rank is not None and len(turns) > 1:
            return pass_over(turns, turns, self._skipped, bound, rank)
        return turns.popleft()

    def _ranking(self) -> tuple[Callable[[Peer], int] | None, int]:
        """``poor_turns``: the waiter holding the fewest pieces first (a
        deploy ends when its last host does: a host behind its neighbours,
        for instance one with few rack mates to ask, is served first
        everywhere and catches up; bench/README.md, session 10).
        ``rare_turns``: the waiter asking for the rarest piece first; set,
        it wins over ``poor_turns`` (which is on by default)."""
        if self.config.rare_turns:
            avail = self.picker.availability
            return (lambda p: avail[p.upload_queue[0][0]] if p.upload_queue else 1 << 30), \
                self.config.rare_turns
        if self.config.poor_turns:
            return self._poor_rank, self.config.poor_turns
        return None, 0

    def forget(self, peer: Peer) -> None:
        self._skipped.pop(peer, None)
        self.chain.forget(peer)
        if peer in self._active:
            self._active.remove(peer)
            self.turn_over(peer)
        if peer in self._turns:
            self._turns.remove(peer)

    def pump(self, peer: Peer) -> None:
        """Send queued blocks until the link pauses us or the turn ends.

        With limited upload slots a turn is ``turn_pieces`` pieces (one by
        default): when the next queued block starts a piece beyond that and
        other peers wait, the turn passes.  A turn that nobody waits for
        goes on, and counts on, so a peer arriving later waits at most for
        the piece being sent.
        """
        queue = peer.upload_queue
        limited = bool(self.config.upload_slots)
        link = peer.link
        while queue and not peer.send_paused and peer.active:
            if not self.limiter.upload_allowed(peer):
                return
            index, begin, length = queue[0]
            if limited and index != peer.turn_piece:
                if peer.turn_piece is not None and self._turns and \
                        peer.turn_count >= self.config.turn_pieces:
                    self.turn_over(peer)
                    return
                peer.turn_piece = index
                peer.turn_count += 1
            queue.popleft()
            try:
                block = self.storage.read_block(index, begin, length)
            except StorageError as e:
                self.log.error("{error}", error=str(e))
                link.drop("cannot read our own payload")
                return
            link.send_piece(index, begin, block)
            peer.uploaded += length
            self._sent_block(index, length)
        if limited and not queue and peer.active and not peer.send_paused:
            self.turn_over(peer)

    def drained(self, peer: Peer) -> None:
        """``peer``'s link resumed, nothing queued: a turn held while its last
        piece filled the send buffer passes (bench/README.md, session 7)."""
        if peer in self._active and not peer.upload_queue:
            self.turn_over(peer)

    def _sent_block(self, index: int, length: int) -> None:
        self.uploaded += length
        if self.first_copy_at is None and self.config.super_seed:
            sent = self._sent.get(index, 0) + length
            self._sent[index] = sent
            size = self.meta.piece_size(index)
            if sent >= size and sent - length < size:
                self._pieces_sent += 1
                if self._pieces_sent == self.meta.num_pieces:
                    # The milestone that bounds a deploy: until here the
                    # seeder's upload is the swarm's scarcest resource.
                    self.first_copy_at = self.clock.seconds()
                    self.uploaded_at_first_copy = self.uploaded
                    self.log.info("every piece has left once: {copies:.2f} copies uploaded "
                                  "so far", copies=self.uploaded / self.meta.total_length)
                    self.chain.release()
        self.limiter.uploaded(length)

    def stuck(self, peer: Peer, now: float) -> bool:
        """Has ``peer`` not drained its socket for ``stuck_turn_timeout``?"""
        return peer.paused_since is not None and \
            now - peer.paused_since > self.config.stuck_turn_timeout

    def liveness(self, peer: Peer, now: float) -> None:
        """Requests from ``peer`` are queued here.  While they wait for a
        turn, tell it we are alive; while its turn makes no progress (its
        socket does not drain: a wedged downloader), pass the turn on."""
        if peer in self._active:
            if self._turns and self.stuck(peer, now):
                self.log.info("{address} is not reading; its upload turn passes",
                              address=peer.address)
                self._active.remove(peer)  # its next turn starts afresh (_start_turn)
                self._turns.append(peer)
                self.turn_over(peer)
        elif now - peer.last_keepalive >= self.config.keepalive_interval:
            peer.last_keepalive = now
            peer.link.send_keepalive()


def pieces_held(peer: Peer) -> int:
    """How many pieces ``peer`` has (the poorest-first rank)."""
    return peer.bits.count


def spread_rank(own_id: bytes, span: int) -> Callable[[Peer], int]:
    """The poorest-first rank as one holder sees it: the waiter's piece count
    plus a fixed offset in ``[0, span)`` from crc32 of both peer ids (the
    same each time this holder ranks that waiter; another holder's differs).
    ``span`` ≤ 1: the plain piece count."""
    if span <= 1:
        return pieces_held

    def rank(peer: Peer) -> int:
        return peer.bits.count + crc32(own_id + (peer.link.peer_id or b"")) % span
    return rank


def pass_over(turns: deque[Peer], candidates: Iterable[Peer], skipped: dict[Peer, int],
              bound: int, rank: Callable[[Peer], int] | None) -> Peer:
    """Take the next turn from ``turns``: the candidate ``rank`` puts lowest
    (first of equals: the longest waiting; without ``rank`` the first),
    unless the first candidate was already passed over ``bound`` times: then
    it goes, so every wait stays bounded.  Each waiter ahead of the pick
    counts one more pass."""
    candidates = list(candidates)
    first = candidates[0]
    if rank is None:
        turns.remove(first)
        return first
    pick = first if skipped.get(first, 0) >= bound else min(candidates, key=rank)
    for p in turns:
        if p is pick:
            break
        skipped[p] = skipped.get(p, 0) + 1
    turns.remove(pick)
    skipped.pop(pick, None)
    return pick


__all__ = ["Uploads", "pass_over", "spread_rank"]
