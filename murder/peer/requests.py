"""Request pipelines: what we ask of each peer, how much at once, and who is snubbed.

Downloading side of the core.  Each peer's pipeline is kept about
``request_horizon`` seconds deep at its measured rate (never less than a
whole piece: a peer sends a piece per upload turn).  A peer that leaves our
requests unanswered for ``snub_timeout`` (or, if it promises keep-alives,
says nothing at all for ``quiet_timeout``) is *snubbed*: its requests go to
others and it gets one probe request at a time until a block arrives.
Blocks of requests given up on are still used if they arrive.

Near before far (rack-aware deploys): :mod:`murder.peer.nearness` tells a far
connection from a near one and which pieces this host brings across the
uplink; far connections are asked only for what the near ones cannot supply.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from murder.peer.config import SwarmConfig
from murder.peer.interfaces import Block, Clock, Peer
from murder.peer.nearness import Nearness
from murder.peer.picker import Picker
from murder.peer.wire import BLOCK_SIZE, Bitfield


def set_interested(peer: Peer, interested: bool) -> None:
    """Tell the peer whether we want anything it has (only on a change)."""
    if interested != peer.am_interested:
        peer.am_interested = interested
        if interested:
            peer.link.send_interested()
        else:
            peer.link.send_not_interested()


class Requests:
    """The request pipelines of one swarm's connections.

    ``connections`` is the swarm's own ``{peer id: Peer}``, shared, not copied:
    a snub hands the requests to every other connection.
    """

    log = Logger()

    def __init__(self, clock: Clock, config: SwarmConfig, picker: Picker,
                 piece_length: int, connections: dict[bytes, Peer], near: Nearness) -> None:
        self.clock = clock
        self.config = config
        self.picker = picker
        self.connections = connections
        self._min_depth = max(config.min_pipeline, -(-piece_length // BLOCK_SIZE) + 4)
        self.near = near
        self._wake: Any = None
        self._wake_time = 0.0

    def depth(self, peer: Peer) -> int:
        """Requests to keep outstanding: the peer's measured rate times the
        horizon, but never less than a whole piece, since a peer that sends a
        piece per upload turn must have all of it asked for."""
        depth = int(peer.rate * self.config.request_horizon / BLOCK_SIZE) + self._min_depth
        return min(depth, self.config.max_pipeline)

    def update_interest(self, peer: Peer) -> None:
        set_interested(peer, self.picker.interesting(peer.bits))
        if peer.am_interested:
            self.fill(peer)

    def fill(self, peer: Peer) -> None:
        """Top up ``peer``'s pipeline (in batches, not after every block)."""
        if self.picker.have.complete or not peer.am_interested or peer.peer_choking:
            return
        peer_id = peer.peer_id
        if peer_id is None or self.connections.get(peer_id) is not peer:
            return  # forgotten (superseded, banned, closing): it answers no one
        # A snubbed peer gets one block at a time (a probe): if it answers
        # it is not snubbed any more; if not, it holds up one block only.
        depth = 1 if peer.snubbed else self.depth(peer)
        if peer.span == 1 or peer.snubbed:
            want = depth - len(peer.outstanding)
        else:
            want = depth - sum(-(-length // BLOCK_SIZE) for _, _, length in peer.outstanding)
        # Refill in batches, not after every block: one picker pass per
        # quarter pipeline keeps the queue full at a fraction of the CPU.
        if want <= 0 or (peer.outstanding and want < max(1, depth // 4)):
            return
        now = self.clock.seconds()
        exclude = None
        if peer.rejected:
            # A rejected piece is asked of this peer again only after a pause
            # and only if no other *answering* connection can supply it: a
            # snubbed holder (silent, wedged) is no source.  Counting it kept
            # a peer away from the seeder that had refused it once, for ever
            # (a peer stalled at 30 of 32 pieces beside a silent peer).
            exclude = self._still_refused(peer, now)
        span = 1 if peer.snubbed else peer.span
        if peer.distance and self.near.on:
            # Far: what no near connection holds, new pieces only ours, or
            # any when the near ones give us nothing to do (after a wait:
            # ``Nearness.far_ready``).
            owned, fallback, later = self.near.far_ready(self.config.far_wait)
            blocks = self.picker.next_requests(peer, peer.bits, want, exclude, span, far=True,
                                               far_pieces=self.config.far_pieces,
                                               owned=owned)
            if not blocks and self.near.idle():
                blocks = self.picker.next_requests(peer, peer.bits, want, exclude, span,
                                                   far=True, far_pieces=self.config.far_pieces,
                                                   owned=fallback)
            if blocks:
                self.near.far_started(blocks)
            elif later is not None:
                self._wake_at(later)
        else:
            blocks = self.picker.next_requests(peer, peer.bits, want, exclude, span)
        if not blocks:
            if not peer.outstanding and not self.picker.interesting(peer.bits):
                set_interested(peer, False)
            if not peer.distance and self.near.on and not peer.outstanding:
                self._near_done()
            return
        if not peer.outstanding:
            peer.last_block = now  # the snub timer starts with the first request
        for block in blocks:
            peer.outstanding[block] = now
        peer.link.send_requests(blocks)

    def _near_done(self) -> None:
        """A near connection ran out of work for us: if none has any left,
        far connections may be asked for pieces another rack mate owns.

        Without this they waited for the next tick (``tick``, 0.25 s): a
        simulated 1,000-host deploy had 120 hosts missing one piece that
        only a far connection held, nothing requested, for 0.1–0.2 s at the
        end (bench/README.md, "Session 5 simulator").
        """
        if not self.near.idle():
            return
        for other in list(self.connections.values()):
            if other.distance and other.am_interested and not other.outstanding:
                self.fill(other)

    def _wake_at(self, when: float) -> None:
        """Fill the far connections again when a far wait ends (one call
        pending at a time: the earliest)."""
        call = self._wake
        if call is not None and call.active():
            if self._wake_time <= when:
                return
            call.cancel()
        self._wake_time = when
        self._wake = self.clock.callLater(max(0.0, when - self.clock.seconds()), self._woken)

    def _woken(self) -> None:
        self._wake = None
        if self.picker.have.complete:
            return
        for other in list(self.connections.values()):
            if other.distance and other.am_interested:
                self.fill(other)

    def _still_refused(self, peer: Peer, now: float) -> set[int]:
        """Pieces ``peer`` refused that are not to be asked of it again yet.

        The snubbed connections are listed only when a refusal is old enough
        and others seem to hold the piece: most fills need no such scan.
        """
        avail = self.picker.availability
        have = self.picker.have
        mute: list[Bitfield] | None = None
        exclude: set[int] = set()
        for i, t in peer.rejected.items():
            if i in have:
                continue
            if now - t < 2.0:
                exclude.add(i)
                continue
            others = avail[i] - 1
            if others <= 0:
                continue
            if mute is None:
                mute = [c.bits for c in self.connections.values() if c.snubbed and c is not peer]
            if others - sum(i in b for b in mute) > 0:
                exclude.add(i)
        return exclude

    def fill_others(self, peer: Peer) -> None:
        for other in list(self.connections.values()):
            if other is not peer:
                self.fill(other)

    def dropped(self, peer: Peer, blocks: list[Block]) -> None:
        """These requests will not be answered (choke, reject, disconnect, snub)."""
        for block in blocks:
            peer.outstanding.pop(block, None)
            self.picker.request_dropped(peer, block)

    def accept_block(self, peer: Peer, key: Block) -> bool | None:
        """A block arrived: None if we never asked for it (wasted), else
        whether it answers a request we had given up on (withdrawn)."""
        if peer.outstanding.pop(key, None) is None:
            if key not in peer.withdrawn:
                return None
            peer.withdrawn.discard(key)
            withdrawn = True
        else:
            withdrawn = False
        peer.last_block = self.clock.seconds()
        if peer.distance and self.near.on:
            self.near.far_block(key[0], -(-key[2] // BLOCK_SIZE))
        if peer.snubbed:
            peer.snubbed = False
            self.log.info("{address} answers requests again", address=peer.address)
            if self.connections.get(peer.peer_id or b"") is peer:
                self.near.count(peer)
        return withdrawn

    @staticmethod
    def cancel_duplicates(others: list[tuple[Peer, Block]]) -> None:
        """Endgame: the block came from one peer; cancel it at the others."""
        for other, duplicate in others:
            if other.outstanding.pop(duplicate, None) is not None:
                other.link.send_cancel(duplicate)

    def got_reject(self, peer: Peer, block: Block) -> None:
        if block in peer.outstanding:
            if peer.near_counted and block[0] not in peer.rejected and block[0] in peer.bits:
                # A near holder that refuses a piece is no near source for it.
                self.picker.near_gone((block[0],))
            peer.rejected[block[0]] = self.clock.seconds()
            self.dropped(peer, [block])
            self.fill(peer)

    def got_choke(self, peer: Peer) -> None:
        peer.peer_choking = True
        if not peer.fast:  # with BEP 6 a choke cancels nothing; rejects say what
            self.dropped(peer, list(peer.outstanding))

    def not_answering(self, peer: Peer, now: float, judge_silence: bool,
                      reading_paused: bool) -> bool:
        """No block for ``snub_timeout``, or (from a peer that promises
        keep-alives) no byte at all for ``quiet_timeout`` while our requests
        wait.  ``last_block`` is also the time the pipeline was last started,
        so fresh requests are never judged; nor is silence we caused
        (``reading_paused``) or could not see (``judge_silence`` false: a late
        tick, this process did not run)."""
        waited = now - peer.last_block
        if waited > self.config.snub_timeout:
            return True
        quiet = self.config.quiet_timeout
        return (peer.keepalives and judge_silence and waited > quiet
                and now - peer.last_received > quiet and not reading_paused)

    def snub(self, peer: Peer, now: float) -> None:
        """Take back ``peer``'s requests and give them to others."""
        if not peer.snubbed:
            self.log.info("{address} is not answering requests; asking others",
                          address=peer.address)
        self.near.uncount(peer)  # a silent near holder is no near source
        peer.snubbed = True
        peer.last_block = now
        # Kept in mind: if they arrive after all, they are still used.
        if len(peer.withdrawn) < 4 * self.config.max_pipeline:
            peer.withdrawn.update(peer.outstanding)
        self.dropped(peer, list(peer.outstanding))
        self.fill_others(peer)


__all__ = ["Requests", "set_interested"]
