"""Which connections are near (same rack), and which pieces this host brings in.

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

from murder.peer.interfaces import Clock, Peer
from murder.peer.picker import Picker


class Nearness:
    """Distances of one swarm's connections, near holders counted in the picker,
    and the ring of piece owners.  ``connections`` is the swarm's own dict."""

    log = Logger()

    def __init__(self, clock: Clock, picker: Picker, connections: dict[bytes, Peer],
                 own_id: bytes) -> None:
        self.clock = clock
        self.picker = picker
        self.connections = connections
        #: Our rack's networks as the tracker named them (empty: no preference).
        self.near_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
        self._distance_of: dict[str, int] = {}
        # The ring of piece owners (see the module docstring), rebuilt lazily.
        self._own_id = own_id
        self._owned: bytearray | None = None
        self._ring_dirty = True
        self._ring_at = 0.0
        n = picker.num_pieces
        #: Each piece's point on the ring (evenly spaced over 32 bits).
        self._points = [((2 * i + 1) << 31) // n for i in range(n)]

    #: Ring positions per host (more: owners' shares closer to equal).
    VNODES = 8

    @classmethod
    def _positions(cls, peer_id: bytes) -> list[int]:
        return [zlib.crc32(peer_id + bytes((v,))) for v in range(cls.VNODES)]

    def owned(self) -> bytearray:
        """One flag per piece: pieces this host is to fetch across the uplink.

        Rebuilt when near connections came or went, at most every 0.1 s (a
        fleet's connections change in bursts; a slightly stale view only
        shifts a few pieces between rack mates)."""
        now = self.clock.seconds()
        if self._owned is not None and (not self._ring_dirty or now - self._ring_at < 0.1):
            return self._owned
        self._ring_at = now
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

    def idle(self) -> bool:
        """No near connection has a request of ours outstanding."""
        return not any(c.outstanding for c in self.connections.values() if not c.distance)

    @property
    def on(self) -> bool:
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
            self.uncount(peer)
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
                if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                    address = address.ipv4_mapped  # a dual-stack listener's view
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
        self.count(peer)

    def count(self, peer: Peer) -> None:
        if peer.near_counted or not self.near_networks or peer.distance or peer.snubbed:
            return
        peer.near_counted = True
        self.picker.near_bitfield(_offered(peer))

    def uncount(self, peer: Peer) -> None:
        if not peer.near_counted:
            return
        peer.near_counted = False
        self.picker.near_gone(_offered(peer))

    def bitfield(self, peer: Peer) -> None:
        """``peer.bits`` were just set from its BITFIELD (the picker counted them)."""
        if peer.near_counted:
            self.picker.near_bitfield(_offered(peer))

    def has(self, peer: Peer, index: int) -> None:
        """``peer`` announced ``index`` (already added to its bits)."""
        if peer.near_counted and index not in peer.rejected:
            self.picker.near_has(index)

    def forget(self, peer: Peer) -> None:
        """``peer`` is no longer a connection: its pieces stop counting."""
        self.uncount(peer)
        if not peer.distance:
            self._ring_dirty = True


def _offered(peer: Peer) -> Iterable[int]:
    """The pieces ``peer`` holds and has not refused us: what it counts for."""
    if not peer.rejected:
        return peer.bits
    return (i for i in peer.bits if i not in peer.rejected)


__all__ = ["Nearness"]
