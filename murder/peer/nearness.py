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

Waiting for the true owner (``SwarmConfig.far_wait``, :meth:`Nearness.far_ready`).
A host sees only some rack mates, so it "owns" pieces whose true owner it
does not see; both would fetch them across the uplink (most of the bytes
across racks in the simulator: bench/sim_crossrack.py).  The farther a
piece's point lies from our ring position, the likelier an unseen mate sits
in between.  So a far fetch waits, from when a far connection first offers
the piece, gap² (in mean ring spacings of our view, at most
``fallback_units``) × ``far_wait`` × the time a far piece takes us × our
measured *doubt* (how often a mate brought in a piece we owned before we
asked far); pieces we do not own wait the longest.  Meanwhile the piece
usually enters the rack and reaches a near connection.  A host that sees
its whole rack finds its doubt near 0 and hardly waits.
"""

from __future__ import annotations

import bisect
import hashlib
import ipaddress
from collections import deque
from typing import Callable, Iterable

from twisted.logger import Logger

from murder.peer.interfaces import Clock, Peer
from murder.peer.picker import Picker

_INF = float("inf")
#: ``Nearness.far_ready``: (owned pieces ready, any pieces ready, next wait end).
_Ready = tuple[bytearray, bytearray, "float | None"]


class Nearness:
    """Distances of one swarm's connections, near holders counted in the picker,
    and the ring of piece owners.  ``connections`` is the swarm's own dict."""

    log = Logger()

    def __init__(self, clock: Clock, picker: Picker, connections: dict[bytes, Peer],
                 own_id: bytes, backups: int) -> None:
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
        #: Per owned piece: its distance to our ring position, in mean
        #: spacings of the ring we see (``owned``); 0 for pieces not ours.
        self._gap = [0.0] * n
        #: When a far connection first offered each piece (inf: none yet).
        self._far_seen = [_INF] * n
        # Far pieces: when first asked; the last times taken, their median.
        self._far_started: dict[int, float] = {}
        self._samples: deque[float] = deque(maxlen=9)
        self._per_piece = 0.0
        # Owned pieces counted once: brought in by a rack mate first, or
        # asked far by us first (``doubt``).
        self._resolved = bytearray(n)
        self._brought = self._fetched = 0
        self._near_at = 0.0
        self._seen_version = self._ring_version = 0
        self._ready_cache: tuple[tuple[object, ...], float, _Ready] | None = None
        self._backup = bytearray(n)
        self._far_order: list[int] = []  # pieces as first offered far (``_BackupsDue``)
        self._due = _BackupsDue(n)
        #: Backup owners per piece in a rack (``SwarmConfig.far_backups``;
        #: negative: a near-idle host may ask far for any piece at once).
        self.backups = backups
        #: Units of wait before any piece may be asked far (fallback).
        self.fallback_units = 3.0

    #: Ring positions per host (more: owners' shares closer to equal).
    VNODES = 8
    #: Until a far piece is timed: seconds before others' pieces go far.
    NO_ESTIMATE_WAIT = 1.0
    #: Far piece times a first backup gives a piece's owner (``far_backups``).
    BACKUP_UNITS = 1.5
    #: ``owned()`` ranks our pieces 1, 2, … by distance to our ring position
    #: (the likeliest to be ours in the whole rack first; the picker starts
    #: the lowest) instead of flagging them 1.
    ranked = True

    def owned(self) -> bytearray:
        """One flag per piece: pieces this host is to fetch across the uplink.

        Rebuilt when near connections came or went, at most every 0.1 s (a
        fleet's connections change in bursts; a slightly stale view only
        shifts a few pieces between rack mates)."""
        now = self.clock.seconds()
        if self._owned is not None and (not self._ring_dirty or now - self._ring_at < 0.1):
            return self._owned
        self._ring_at = now
        peer_ids = [peer.peer_id for peer in self.connections.values()
                    if not peer.distance and peer.peer_id is not None]
        owned, self._gap, self._backup = _ring(self._own_id, peer_ids, self._points,
                                               self.VNODES, self.ranked, self.backups)
        self._owned = owned
        self._ring_version += 1
        self._ring_dirty = False
        return owned

    def far_ready(self, unit: float) -> _Ready:
        """What a far connection may be asked for now: (owned pieces whose
        wait is over, ranked as ``owned``; pieces that may be asked when no
        near connection has work (the fallback); when the next wait ends,
        or None).

        Without a wait (``unit`` 0) the fallback is the pieces we back up
        (``backups``), after their owner had time to bring them in, and any
        other piece a far connection has offered for ``fallback_units`` far
        piece times (``_backup_ready``).

        An owned piece waits ``min(gap², fallback_units) × u`` seconds after
        a far connection first offers it, any other ``fallback_units × u``;
        ``u`` = ``unit`` × the far piece time × :meth:`doubt` (the module
        docstring says why)."""
        owned = self.owned()
        n = len(owned)
        if unit <= 0:
            if self.backups < 0:
                return owned, bytearray(b"\x01" * n), None
            return self._backup_ready(owned)
        now = self.clock.seconds()
        unit *= self._piece_time()
        if unit <= 0:
            # No far piece timed yet: our own pieces at once; others only
            # after NO_ESTIMATE_WAIT (a safety net: a host that owns
            # nothing its far connections offer still gets everything).
            if now - self._near_at >= self.NO_ESTIMATE_WAIT:
                return owned, bytearray(b"\x01" * n), None
            return owned, bytearray(n), self._near_at + self.NO_ESTIMATE_WAIT
        unit *= self.doubt()
        return self._answer(
            ("wait", self._ring_version, unit, self._seen_version), now,
            lambda: _waits_due(owned, self._gap, self._far_seen, now, unit, self.fallback_units))

    def _answer(self, key: tuple[object, ...], now: float,
                scan: Callable[[], tuple[bytearray, bytearray, float]]) -> _Ready:
        """``scan()``'s (ready, fallback, next wait end), or its last answer
        while ``key`` (the scan's inputs) is the same and no wait has ended
        since: a far fill runs per batch of blocks, the scan per piece."""
        cached = self._ready_cache
        if cached is not None and cached[0] == key and now < cached[1]:
            return cached[2]
        ready, fallback, later = scan()
        result = ready, fallback, (None if later == _INF else later)
        self._ready_cache = (key, later, result)
        return result

    def backup_ranks(self) -> bytearray:
        """Per piece: k + 1 if we are its k-th backup in our rack (our view
        of it), 0 if we own it or are no backup (``_backup_ranks``)."""
        self.owned()
        return self._backup

    def _backup_ready(self, owned: bytearray) -> _Ready:
        """``far_ready`` without a wait: a piece we back up as the k-th
        backup may be asked far ``(k - 1) × BACKUP_UNITS`` far piece times
        after a far connection first offered it (time for its owner, who
        asks at once, to bring it in and announce it), any other piece after
        ``fallback_units`` of them.  Before a far piece is timed, 1 s
        stands for ``fallback_units`` of them.  Ranked: first backups first."""
        now = self.clock.seconds()
        per_piece = self._piece_time()
        unit = per_piece if per_piece > 0 else self.NO_ESTIMATE_WAIT / self.fallback_units
        return self._answer(
            ("backup", self._ring_version, unit, self._seen_version), now,
            lambda: (owned, *self._due.answer(owned, self._backup, self._far_seen, self._far_order,
                                              now, self.BACKUP_UNITS * unit, self.fallback_units * unit)))

    def far_started(self, blocks: Iterable[tuple[int, int, int]]) -> None:
        """Requests for these blocks went to a far connection: time their pieces."""
        now = self.clock.seconds()
        started = self._far_started
        owned = self._owned
        for block in blocks:
            index = block[0]
            if index not in started:
                started[index] = now
                if owned is not None and owned[index] and not self._resolved[index]:
                    self._resolved[index] = 1
                    self._fetched += 1

    def doubt(self) -> float:
        """How often a piece we own was brought into the rack by a mate we
        did not see as its owner before we asked far for it (Laplace's
        rule: ½ before any).  A host that sees its whole rack finds this
        near 0, and then hardly waits; partial views keep it high."""
        return (self._brought + 1) / (self._brought + self._fetched + 2)

    def far_block(self, index: int, blocks: int) -> None:
        """``blocks`` blocks of piece ``index`` came from a far connection:
        if they are its last, time the piece (from its first far request)."""
        t = self._far_started.get(index)
        if t is None:
            return
        piece = self.picker.in_progress.get(index)
        if piece is not None and piece.remaining > blocks:
            return
        del self._far_started[index]
        samples = self._samples
        samples.append(self.clock.seconds() - t)
        # The median of the last few: one piece held up elsewhere (a block
        # asked of a silent peer) must not stretch every wait.
        self._per_piece = sorted(samples)[len(samples) // 2]

    def _piece_time(self) -> float:
        """Seconds a piece takes us from a far connection (median of recent
        ones; 0 before the first): the wait's unit, so it scales with piece
        size, link rates and load."""
        started = self._far_started
        if started:
            have = self.picker.have
            for index in [i for i in started if i in have]:
                del started[index]  # completed from near connections after all
        return self._per_piece

    def idle(self) -> bool:
        """No near connection has a request of ours outstanding (hot: a loop)."""
        for c in self.connections.values():
            if c.outstanding and not c.distance:
                return False
        return True

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
            self._near_at = self.clock.seconds()
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
        elif peer.distance and self.near_networks:
            now = self.clock.seconds()
            seen = self._far_seen
            for i in peer.bits:
                if seen[i] > now:
                    seen[i] = now
                    self._far_order.append(i)
                    self._seen_version += 1

    def has(self, peer: Peer, index: int) -> None:
        """``peer`` announced ``index`` (already added to its bits)."""
        if peer.near_counted and index not in peer.rejected:
            self.picker.near_has(index)
            owned = self._owned
            if owned is not None and owned[index] and not self._resolved[index] \
                    and index not in self.picker.have:
                # A rack mate brought in a piece we own, before we asked far.
                self._resolved[index] = 1
                self._brought += 1
        elif peer.distance and self.near_networks and self._far_seen[index] == _INF:
            self._far_seen[index] = self.clock.seconds()
            self._far_order.append(index)
            self._seen_version += 1

    def forget(self, peer: Peer) -> None:
        """``peer`` is no longer a connection: its pieces stop counting."""
        self.uncount(peer)
        if not peer.distance:
            self._ring_dirty = True


def _ring(own_id: bytes, peer_ids: list[bytes], points: list[int], vnodes: int,
          ranked: bool, backups: int) -> tuple[bytearray, list[float], bytearray]:
    """The ring of piece owners over us and our near peers: (owned: per
    piece our rank 1, 2, … by distance to our position, or 1 unranked, 0
    not ours; gap: per owned piece that distance in mean ring spacings;
    backup ranks, ``_backup_ranks``)."""
    ring: list[tuple[int, bool]] = [(p, True) for p in _positions(own_id, vnodes)]
    hosts: list[int] = [0] * vnodes
    for number, peer_id in enumerate(peer_ids, 1):
        ring.extend((p, False) for p in _positions(peer_id, vnodes))
        hosts.extend([number] * vnodes)
    order = sorted(range(len(ring)), key=ring.__getitem__)
    host_at = [hosts[k] for k in order]
    ring = [ring[k] for k in order]
    owned = bytearray(len(points))
    gaps: list[tuple[int, int]] = []
    last = len(ring) - 1
    for k, (pos, mine) in enumerate(ring):
        if not mine:
            continue
        prev = ring[k - 1][0] if k else ring[last][0] - (1 << 32)
        # Points in (prev, pos] are ours; the first interval wraps around.
        lo = bisect.bisect_right(points, prev)
        hi = bisect.bisect_right(points, pos)
        gaps.extend((pos - points[i], i) for i in range(max(lo, 0), hi))
        if prev < 0:
            lo2 = bisect.bisect_right(points, prev + (1 << 32))
            gaps.extend((pos + (1 << 32) - points[i], i) for i in range(lo2, len(points)))
    spacing = (1 << 32) / len(ring)
    gap = [0.0] * len(points)
    for g, i in gaps:
        gap[i] = g / spacing
    if ranked:
        # Closest first: see ``Nearness.ranked``.
        gaps.sort()
        for rank, (_, i) in enumerate(gaps):
            owned[i] = min(255, rank + 1)
    else:
        for _, i in gaps:
            owned[i] = 1
    return owned, gap, _backup_ranks(points, ring, host_at, backups)


def _waits_due(owned: bytearray, gap: list[float], seen: list[float], now: float,
               unit: float, units: float) -> tuple[bytearray, bytearray, float]:
    """``Nearness.far_ready`` with a wait: (owned pieces offered far at
    ``seen`` whose min(gap², ``units``) × ``unit`` passed; any piece whose
    ``units`` × ``unit`` passed; when the next wait ends)."""
    n = len(owned)
    ready = bytearray(n)
    fallback = bytearray(n)
    later = _INF
    limit = units * unit
    for i in range(n):
        t = seen[i]
        if t == _INF:
            continue
        if owned[i]:
            at = t + min(gap[i] * gap[i], units) * unit
            if at <= now:
                ready[i] = owned[i]
            elif at < later:
                later = at
        at = t + limit
        if at <= now:
            fallback[i] = 1
        elif at < later:
            later = at
    return ready, fallback, later


class _BackupsDue:
    """``far_ready``'s fallback without a wait, kept up to date, not rescanned.

    Per piece offered far at ``seen`` and not ours: its backup rank once
    ``(rank - 1) × step`` passed, 255 for a piece we do not back up once
    ``limit`` passed, else 0; and when the next of those waits ends.

    Why not a scan of every piece: the answer changes each time a wait ends
    or the far piece time moves, and each far fill after that needs it; the
    scan was a tenth of a simulated 1,000-host deploy's CPU at 256 pieces
    (bench/README.md, session 10).  Here the pieces are grouped by rank, in
    the order a far connection first offered them (offer times only grow), so
    in each group the pieces whose wait is over are a prefix (``t + offset``
    rounds monotonically in ``t``): its end is moved from where it was, and
    only the pieces that crossed it since the last answer are flagged or
    unflagged.
    The answer is exactly the scan's (tests/unit/test_peer_near_speed.py compares).
    """

    def __init__(self, n: int) -> None:
        self._n = n
        self._owned: bytearray | None = None
        self._ranks: bytearray | None = None
        self._fallback = bytearray(n)
        #: rank → (offer times, pieces, how many of them are flagged).
        self._groups: dict[int, tuple[list[float], list[int], list[int]]] = {}
        self._taken = 0  # entries of ``order`` grouped so far

    def answer(self, owned: bytearray, ranks: bytearray, seen: list[float], order: list[int],
               now: float, step: float, limit: float) -> tuple[bytearray, float]:
        """(flags, next wait end) for ``order``: the pieces with an offer
        time in ``seen``, in the order it was set; a new ``owned`` or
        ``ranks`` object (a new ring) starts over."""
        groups = self._groups
        fallback = self._fallback
        if owned is not self._owned or ranks is not self._ranks:
            self._owned, self._ranks = owned, ranks
            groups.clear()
            fallback[:] = bytes(self._n)
            self._taken = 0
        for i in order[self._taken:]:
            if not owned[i]:
                group = groups.get(ranks[i])
                if group is None:
                    group = groups[ranks[i]] = ([], [], [0])
                group[0].append(seen[i])
                group[1].append(i)
        self._taken = len(order)
        later = _INF
        for rank, (times, pieces, flagged) in groups.items():
            offset = (rank - 1) * step if rank else limit
            # The prefix's end moves by a piece or two per answer: walk it.
            was = due = flagged[0]
            end = len(times)
            while due < end and times[due] + offset <= now:
                due += 1
            while due and times[due - 1] + offset > now:
                due -= 1
            if due > was:
                flag = rank or 255
                for i in pieces[was:due]:
                    fallback[i] = flag
            elif due < was:
                for i in pieces[due:was]:
                    fallback[i] = 0
            flagged[0] = due
            if due < len(times):
                at = times[due] + offset
                if at < later:
                    later = at
        return bytearray(fallback), later


def _backup_ranks(points: list[int], ring: list[tuple[int, bool]], host_at: list[int],
                  backups: int) -> bytearray:
    """Per piece: 2 if we are its first backup in our view (the second
    distinct host clockwise from its point), 3 for the second, … up to
    ``backups``; 0 for the pieces we own and those we do not back up.

    The fallback of a near-idle host used to be any piece a far connection
    offered: early in a deploy few pieces are offered, so most of a rack
    fetched the same few across the uplink (1,844 of 2,718 far fetches in
    a simulated 320-host deploy with whole-rack views; bench/README.md,
    session 7).  Backups are the ring's own order, so each piece has one
    first backup per rack, as it has one owner."""
    ranks = bytearray(len(points))
    size = len(ring)
    if backups <= 0 or size == 0:
        return ranks
    k = 0
    for i, point in enumerate(points):
        while k < size and ring[k][0] < point:
            k += 1
        seen: list[int] = []
        j = k
        for _ in range(size):
            pos, mine = ring[j % size]
            if mine:
                if seen:
                    ranks[i] = len(seen) + 1
                break
            host = host_at[j % size]
            if host not in seen:
                if len(seen) == backups:
                    break
                seen.append(host)
            j += 1
    return ranks


def _positions(peer_id: bytes, vnodes: int) -> list[int]:
    """A host's ring positions, 32 bits each from one keyed digest.

    Not CRC-32 of id + byte: CRC is linear, so every host's positions were
    the same XOR pattern, in tight pairs (4 places on the ring, not 8), and
    a host could own nothing among rack mates."""
    digest = hashlib.blake2b(peer_id, digest_size=4 * vnodes, person=b"murder-ring").digest()
    return [int.from_bytes(digest[4 * v:4 * v + 4], "big") for v in range(vnodes)]


def _offered(peer: Peer) -> Iterable[int]:
    """The pieces ``peer`` holds and has not refused us: what it counts for."""
    if not peer.rejected:
        return peer.bits
    return (i for i in peer.bits if i not in peer.rejected)


__all__ = ["Nearness"]
