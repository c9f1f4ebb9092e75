"""Request pipelines: what we ask of each peer, how much at once, and who is snubbed.

Downloading side of the core.  Each peer's pipeline is kept about
``request_horizon`` seconds deep at its measured rate (never less than a
whole piece: a peer sends a piece per upload turn).  A peer that leaves our
requests unanswered for ``snub_timeout`` (or, if it promises keep-alives,
says nothing at all for ``quiet_timeout``) is *snubbed*: its requests go to
others and it gets one probe request at a time until a block arrives.
Blocks of requests given up on are still used if they arrive.

Near before far (rack-aware deploys).  When the tracker names the networks of
our own rack (the ``near`` key of its reply, ``murder tracker --topology``),
every connection gets a distance: 0 inside those networks, 1 outside.  A far
connection is then asked only for pieces that no near connection can supply
(none holds it, or the holders are snubbed or refused it), so a piece crosses
the rack uplink about once and then spreads inside the rack.  Nothing is
withheld for good: a piece no near connection offers is asked of a far one at
once, a near holder that stops answering (snub) or refuses a piece stops
counting for it.  Without a ``near`` key every connection is near (distance 0)
and nothing changes.

Which host of a rack brings a piece in: rack mates see the same pieces missing
and would all fetch the same ones across the uplink.  So each piece has an
*owner* among the rack's hosts, by consistent hashing of peer ids (a ring; the
piece's point's successor owns it) over the near peers each host is connected
to.  Views differ, but the true successor is in its own view and always
considers the piece its own, so no piece is left unowned by a live host;
views that miss hosts only cause duplicates.  A far connection is asked for a
new piece only if we own it, unless no near connection has anything for us
to do (then any piece: the owner may be slow or gone).
"""

from __future__ import annotations

import bisect
import ipaddress
import zlib
from typing import Iterable

from twisted.logger import Logger

from murder.peer.config import SwarmConfig
from murder.peer.interfaces import Block, Clock, Peer
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
                 piece_length: int, connections: dict[bytes, Peer]) -> None:
        self.clock = clock
        self.config = config
        self.picker = picker
        self.connections = connections
        self._min_depth = max(config.min_pipeline, -(-piece_length // BLOCK_SIZE) + 4)
        #: Our rack's networks as the tracker named them (empty: no preference).
        self.near_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
        self._distance_of: dict[str, int] = {}
        # The ring of piece owners (see the module docstring), rebuilt lazily.
        self._own_id = b""
        self._owned: bytearray | None = None
        self._ring_dirty = True
        n = picker.num_pieces
        #: Each piece's point on the ring (evenly spaced over 32 bits).
        self._points = [((2 * i + 1) << 31) // n for i in range(n)]

    #: Ring positions per host (more: owners' shares closer to equal).
    VNODES = 8

    def set_own_id(self, peer_id: bytes) -> None:
        self._own_id = peer_id
        self._ring_dirty = True

    @classmethod
    def _positions(cls, peer_id: bytes) -> list[int]:
        return [zlib.crc32(peer_id + bytes((v,))) for v in range(cls.VNODES)]

    def owned(self) -> bytearray:
        """One flag per piece: pieces this host is to fetch across the uplink."""
        if self._owned is not None and not self._ring_dirty:
            return self._owned
        ring: list[tuple[int, bool]] = [(p, True) for p in self._positions(self._own_id)]
        for peer in self.connections.values():
            if not peer.distance and peer.peer_id is not None:
                ring.extend((p, False) for p in self._positions(peer.peer_id))
        ring.sort()
        points = self._points
        owned = bytearray(len(points))
        last = len(ring) - 1
        for k, (pos, mine) in enumerate(ring):
            if not mine:
                continue
            prev = ring[k - 1][0] if k else ring[last][0] - (1 << 32)
            # Points in (prev, pos] are ours; the first interval wraps around.
            lo = bisect.bisect_right(points, prev)
            hi = bisect.bisect_right(points, pos)
            owned[max(lo, 0):hi] = b"\x01" * (hi - max(lo, 0))
            if prev < 0:
                lo2 = bisect.bisect_right(points, prev + (1 << 32))
                owned[lo2:] = b"\x01" * (len(points) - lo2)
        self._owned = owned
        self._ring_dirty = False
        return owned

    def _near_idle(self) -> bool:
        """No near connection has a request of ours outstanding."""
        return not any(c.outstanding for c in self.connections.values() if not c.distance)

    # ------------------------------------------------------------ near/far
    @property
    def near_on(self) -> bool:
        return bool(self.near_networks)

    def set_near(self, networks: Iterable[str]) -> None:
        """The tracker named our rack's networks (CIDR strings; none: no
        preference).  Every connection is classified again."""
        parsed = []
        for text in networks:
            try:
                parsed.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                continue  # garbage from a tracker is ignored, not fatal
        new = tuple(sorted(set(parsed), key=str))
        if new == self.near_networks:
            return
        for peer in self.connections.values():
            self._uncount(peer)
        self.near_networks = new
        self._distance_of.clear()
        self.picker.near_reset()
        for peer in self.connections.values():
            peer.near_counted = False
            self.classify(peer)
        if new:
            self.log.info("rack-aware: near networks {networks}",
                          networks=", ".join(map(str, new)))

    def distance(self, ip: str) -> int:
        """0 (near) or 1 (far) for a peer at ``ip``."""
        if not self.near_networks:
            return 0
        d = self._distance_of.get(ip)
        if d is None:
            try:
                address = ipaddress.ip_address(ip)
            except ValueError:
                d = 1
            else:
                d = 0 if any(address.version == n.version and address in n
                             for n in self.near_networks) else 1
            if len(self._distance_of) < 100_000:
                self._distance_of[ip] = d
        return d

    def classify(self, peer: Peer) -> None:
        """A new connection (or new near networks): its distance, its count."""
        peer.distance = self.distance(peer.address[0])
        if not peer.distance:
            self._ring_dirty = True
        self._count(peer)

    def _count(self, peer: Peer) -> None:
        if peer.near_counted or not self.near_networks or peer.distance or peer.snubbed:
            return
        peer.near_counted = True
        if peer.rejected:
            self.picker.near_bitfield(i for i in peer.bits if i not in peer.rejected)
        else:
            self.picker.near_bitfield(peer.bits)

    def _uncount(self, peer: Peer) -> None:
        if not peer.near_counted:
            return
        peer.near_counted = False
        if peer.rejected:
            self.picker.near_gone(i for i in peer.bits if i not in peer.rejected)
        else:
            self.picker.near_gone(peer.bits)

    def near_bitfield(self, peer: Peer) -> None:
        """``peer.bits`` were just set from its BITFIELD (the picker counted them)."""
        if peer.near_counted:
            self.picker.near_bitfield(i for i in peer.bits if i not in peer.rejected)

    def near_has(self, peer: Peer, index: int) -> None:
        """``peer`` announced ``index`` (already added to its bits)."""
        if peer.near_counted and index not in peer.rejected:
            self.picker.near_has(index)

    def forget(self, peer: Peer) -> None:
        """``peer`` is no longer a connection: its pieces stop counting."""
        self._uncount(peer)
        if not peer.distance:
            self._ring_dirty = True

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
        if peer.peer_id is None or self.connections.get(peer.peer_id) is not peer:
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
        if peer.distance and self.near_on:
            # Far: what no near connection holds, new pieces only ours, or
            # any when the near ones give us nothing to do.
            blocks = self.picker.next_requests(peer, peer.bits, want, exclude, span, far=True,
                                               far_pieces=self.config.far_pieces,
                                               owned=self.owned())
            if not blocks and self._near_idle():
                blocks = self.picker.next_requests(peer, peer.bits, want, exclude, span,
                                                   far=True, far_pieces=self.config.far_pieces)
        else:
            blocks = self.picker.next_requests(peer, peer.bits, want, exclude, span)
        if not blocks:
            if not peer.outstanding and not self.picker.interesting(peer.bits):
                set_interested(peer, False)
            return
        if not peer.outstanding:
            peer.last_block = now  # the snub timer starts with the first request
        for block in blocks:
            peer.outstanding[block] = now
        peer.link.send_requests(blocks)

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
        if peer.snubbed:
            peer.snubbed = False
            self.log.info("{address} answers requests again", address=peer.address)
            if self.connections.get(peer.peer_id or b"") is peer:
                self._count(peer)
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
        self._uncount(peer)  # a silent near holder is no near source
        peer.snubbed = True
        peer.last_block = now
        # Kept in mind: if they arrive after all, they are still used.
        if len(peer.withdrawn) < 4 * self.config.max_pipeline:
            peer.withdrawn.update(peer.outstanding)
        self.dropped(peer, list(peer.outstanding))
        self.fill_others(peer)


__all__ = ["Requests", "set_interested"]
