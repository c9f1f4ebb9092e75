"""A chain first pass: only a few peers (the heads) are unchoked at first.

With ``seed_heads`` > 0 the seeder's first pass is a *chain*: only that many
interested peers (the heads) are unchoked; the rest stay choked, so they
ask the heads and each other, never the seeder, and each piece flows on a
hop at a time behind the heads.  Waiters are unchoked when the heads leave
the seeder's link idle, when a head stops reading, after ``seed_head_wait``
at the latest, and all at once when every piece has left once.
``peer_heads`` does the same for a peer while it downloads, except that a
waiter is unchoked as soon as an upload slot would idle (``slot_free``).
Both are off by default, as is ``rare_turns`` (rarest-first turn order):
measured on real processes, neither won (bench/README.md, sessions 4 and 9).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger

from murder.peer.interfaces import Peer

if TYPE_CHECKING:  # the owner; imported for types only (it imports this module)
    from murder.peer.uploads import Uploads


class Chain:
    """Heads and waiters of one swarm's uploads (``seed_heads``/``peer_heads``)."""

    log = Logger()

    def __init__(self, uploads: Uploads) -> None:
        self.uploads = uploads
        #: The peers unchoked in the first pass, and the choked interested
        #: ones → since when they wait (oldest first).
        self.heads: list[Peer] = []
        self.waiting: dict[Peer, float] = {}
        self._idle_since: float | None = None
        self._uploaded_mark = 0
        #: Heads found not reading; each one got a replacement head once.
        self._stuck_heads: set[Peer] = set()
        self.promotions = 0

    def update_choke(self, peer: Peer) -> None:
        """Interest changed during a chain first pass: a new interested peer is
        a head while there are fewer than the count, else it waits."""
        if not peer.peer_interested:
            self.waiting.pop(peer, None)
            was_head = peer in self.heads
            if was_head:
                self.heads.remove(peer)
            self.uploads.set_choking(peer, True)
            if was_head:
                self._promote()
            return
        if not peer.am_choking or peer in self.waiting:
            return
        if len(self.heads) < self._head_count():
            self.heads.append(peer)
            self.uploads.set_choking(peer, False)
        else:
            self.waiting[peer] = self.uploads.clock.seconds()

    def on(self) -> bool:
        """Is this a seeder in a chain first pass (``seed_heads``), or a peer
        still downloading with ``peer_heads``?"""
        config = self.uploads.config
        if config.super_seed:
            return bool(config.seed_heads) and self.uploads.first_copy_at is None
        return bool(config.peer_heads) and not self.uploads.picker.have.complete

    def _head_count(self) -> int:
        config = self.uploads.config
        return config.seed_heads if config.super_seed else config.peer_heads

    def _promote(self, peer: Peer | None = None) -> bool:
        """Unchoke ``peer`` (default: the longest waiting) as one more head."""
        while self.waiting:
            if peer is None:
                nxt = next(iter(self.waiting))
            else:
                nxt, peer = peer, None
            del self.waiting[nxt]
            if not nxt.active or not nxt.peer_interested:
                continue
            self.heads.append(nxt)
            self.promotions += 1
            self.uploads.set_choking(nxt, False)
            return True
        return False

    def slot_free(self) -> None:
        """An upload slot is free and no head waits for a turn: a peer's chain
        (``peer_heads``) unchokes its longest waiter now, not after
        ``seed_head_idle``.

        Why: ``peer_heads`` is there so that requests do not pile up at a busy
        holder while another holder of the same pieces idles (at 1,000
        simulated hosts, 10 Gbit/s, a tenth of the hosts uploaded nothing
        while their rack mates' requests for pieces they held waited in
        other queues: bench/README.md, session 9).  A slot that idles while
        peers wait choked is the opposite; half a second is some 70 times
        an 8 MiB piece's time at 10 Gbit/s.  The tick's idle rule stays for
        heads that ask nothing at all (no turn ends); the seeder's chain
        (``seed_heads``) keeps only that measured rule.
        """
        if self.waiting and not self.uploads.config.super_seed and self.on():
            self._promote()

    def release(self) -> None:
        """The first pass is over: every waiter is unchoked."""
        if not (self.waiting or self.heads):
            return
        waiting = list(self.waiting)
        self.waiting.clear()
        self.heads.clear()
        self._stuck_heads.clear()
        for peer in waiting:
            if peer.active and peer.peer_interested:
                self.uploads.set_choking(peer, False)

    def tick(self, now: float) -> None:
        """Chain liveness, every swarm tick: unchoke a waiter when the heads
        leave the seeder's link idle for ``seed_head_idle`` (a head that asks
        for nothing feeds no chain), when a head stops reading, and any
        waiter after ``seed_head_wait`` (it may be unable to reach the
        heads: no peer waits on one neighbour for ever)."""
        uploaded = self.uploads.uploaded
        previous, self._uploaded_mark = self._uploaded_mark, uploaded
        if not self.on():
            self.release()
            self._idle_since = None
            return
        if not self.waiting:
            self._idle_since = None
            return
        self.heads = [h for h in self.heads if h.active]
        if not self.heads:
            self._promote()
            return
        if uploaded > previous or any(h.upload_queue for h in self.heads):
            self._idle_since = None
        elif self._idle_since is None:
            self._idle_since = now
        elif now - self._idle_since >= self.uploads.config.seed_head_idle:
            self._idle_since = None
            self._promote()
        for head in self.heads:
            if head not in self._stuck_heads and self.uploads.stuck(head, now):
                self._stuck_heads.add(head)
                self.log.info("{address} is not reading; one more peer is unchoked",
                              address=head.address)
                self._promote()
                break
        for peer, since in list(self.waiting.items()):
            if now - since < self.uploads.config.seed_head_wait:
                break  # oldest first
            self._promote(peer)

    def forget(self, peer: Peer) -> None:
        self.waiting.pop(peer, None)
        self._stuck_heads.discard(peer)
        if peer in self.heads:
            self.heads.remove(peer)
            if self.on():
                self._promote()


__all__ = ["Chain"]
