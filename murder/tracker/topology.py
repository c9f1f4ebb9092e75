"""Rack-aware peer lists: where each host sits, and which peers to hand it.

A topology file has one ``CIDR LOCATION`` per line (``#`` starts a comment)::

    10.1.3.0/24   dc1/row3/rack12
    10.1.4.0/24   dc1/row3/rack13

A location is a path; two hosts are closer the longer the prefix their paths
share (same rack > same row > same dc).  An address outside every CIDR is
*far* from everyone.  The most specific CIDR containing an address wins.

:class:`RackAwareHandout` is the tracker's handout policy
(``PeerStore.handout``, ``murder tracker --topology FILE``).  Closest peers
first, but designed against Kraken's failure (kraken issue 244: the group that
started first took all the seeder's attention, and a group steered away from
it could not get data):

- every list starts with the origin seeder(s), so no rack depends on another
  rack to get its first pieces;
- a share of every list (``far_share``) is drawn at random from outside the
  requester's rack, so every rack is joined to the rest of the fleet and
  pieces keep entering it from several places;
- the rest is filled closest first (own rack, then own row, …), random
  within a tier.

The list is ordered seeders, own rack, far share, then the other tiers:
a peer dials in that order and stops at its connection limit.  Pure: no I/O,
randomness from the store's ``rng``.
"""

from __future__ import annotations

import ipaddress
import math
import random
from dataclasses import dataclass
from typing import Any

from murder.errors import ConfigError

Location = tuple[str, ...]


class TopologyError(ConfigError):
    """A topology file line that cannot be used."""

    def __init__(self, where: str, line: int, why: str) -> None:
        super().__init__(f"{where}:{line}: {why}")
        self.where = where
        self.line = line


@dataclass(frozen=True)
class Topology:
    """CIDRs and their locations, most specific first."""

    entries: tuple[tuple[Any, Location], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_cache", {})

    def locate(self, ip: str) -> Location | None:
        """The location of ``ip``, or None (far) when no CIDR contains it."""
        cache: dict = self._cache  # type: ignore[attr-defined]
        if ip in cache:
            return cache[ip]
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            found = None
        else:
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                address = address.ipv4_mapped  # a dual-stack socket's view
            found = next((loc for net, loc in self.entries
                          if net.version == address.version and address in net), None)
        if len(cache) < 1_000_000:
            cache[ip] = found
        return found

    @staticmethod
    def closeness(a: Location | None, b: Location | None) -> int:
        """Length of the shared path prefix; -1 when either is far."""
        if a is None or b is None:
            return -1
        n = 0
        for x, y in zip(a, b):
            if x != y:
                break
            n += 1
        return n


def parse(text: str, where: str = "<topology>") -> Topology:
    """Parse a topology file's text; :class:`TopologyError` names the bad line."""
    entries = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 2:
            raise TopologyError(where, number, f"expected 'CIDR LOCATION', got {line!r}")
        cidr, location = fields
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise TopologyError(where, number, f"{cidr!r} is not a CIDR") from None
        path = tuple(p for p in location.split("/") if p)
        if not path:
            raise TopologyError(where, number, f"{location!r} is not a location path")
        entries.append((net, path))
    if not entries:
        raise TopologyError(where, 0, "no CIDR LOCATION lines")
    entries.sort(key=lambda e: -e[0].prefixlen)
    return Topology(tuple(entries))


def load(path: str) -> Topology:
    """Read and parse a topology file (:class:`TopologyError` if unusable)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise TopologyError(path, 0, f"cannot read: {getattr(e, 'strerror', None) or e}") \
            from None
    return parse(text, path)


class _Index:
    """One torrent's peers grouped by location, extended as peers join."""

    __slots__ = ("peer", "flat", "loc", "groups", "prefixes", "seeders", "rank", "leechers")

    def __init__(self) -> None:
        self.peer: dict[bytes, Any] = {}
        #: Join order of each peer within its location (gateways: the first).
        self.rank: dict[bytes, int] = {}
        self.leechers: dict[Location | None, int] = {}
        self.flat: list = []
        self.loc: dict[bytes, Location | None] = {}
        self.groups: dict[Location | None, list] = {}
        self.prefixes: dict[Location, list] = {}
        self.seeders: list = []


class RackAwareHandout:
    """Closest first, plus the seeders and a far share (see the module docstring)."""

    def __init__(self, topology: Topology, *, seeders: int = 2, far_share: float = 0.2,
                 gateways: int = 0, far_max: int = 0) -> None:
        self.topology = topology
        self.seeders = seeders
        self.far_share = far_share
        #: > 0: at most this many peers from outside the requester's rack
        #: per list (the far share and the farther tiers together).
        self.far_max = far_max
        #: > 0: only the first ``gateways`` peers of each location get the far
        #: share (a two-level overlay: few connections cross racks).
        self.gateways = gateways
        self._index: dict[bytes, tuple[Any, _Index]] = {}
        self._near_cache: dict[Location, list[bytes]] = {}

    # ------------------------------------------------------------ near key
    def near_networks(self, ip: str) -> list[bytes]:
        """The networks of ``ip``'s own location (its rack), as CIDR strings:
        the announce reply's ``near`` key.  The peer then asks far
        connections only for what no near one holds (murder.peer.requests).
        Empty when ``ip`` is outside every CIDR (no preference: all equal).
        """
        loc = self.topology.locate(ip)
        if loc is None:
            return []
        cache = self._near_cache
        found = cache.get(loc)
        if found is None:
            found = [str(net).encode() for net, where in self.topology.entries
                     if where == loc][:64]
            cache[loc] = found
        return found

    # -------------------------------------------------------------- index
    def _indexed(self, torrent: Any) -> _Index:
        """The torrent's index, extended with the peers that joined since.

        New peers are appended to ``torrent.peers`` (a dict keeps insertion
        order), so they are read from its end until a known, unchanged peer.
        Departed peers stay in the index and are skipped when drawn; when they
        outnumber the live ones, or a peer came back as a new record, the
        index is rebuilt.
        """
        entry = self._index.get(torrent.info_hash)
        peers = torrent.peers
        if entry is not None and entry[0] is torrent and \
                len(entry[1].flat) <= 2 * len(peers) + 64:
            idx = entry[1]
            fresh: list[Any] | None = []
            for p in reversed(peers.values()):
                known = idx.peer.get(p.peer_id)
                if known is p:
                    break
                if known is not None:
                    fresh = None  # came back as a new record: rebuild
                    break
                assert fresh is not None
                fresh.append(p)
            if fresh is not None:
                for p in reversed(fresh):
                    self._add(idx, p)
                return idx
        idx = _Index()
        for p in peers.values():
            self._add(idx, p)
        if len(self._index) > 10_000:
            self._index.clear()
        self._index[torrent.info_hash] = (torrent, idx)
        return idx

    def _add(self, idx: _Index, peer: Any) -> None:
        loc = self.topology.locate(peer.ip)
        idx.loc[peer.peer_id] = loc
        idx.peer[peer.peer_id] = peer
        idx.flat.append(peer)
        group = idx.groups.get(loc)
        if group is None:
            group = idx.groups[loc] = []
            if loc is not None:
                for k in range(len(loc) + 1):
                    idx.prefixes.setdefault(loc[:k], []).append(loc)
        group.append(peer)
        if peer.left == 0 and not peer.completed:
            idx.seeders.append(peer)
        else:
            n = idx.leechers.get(loc, 0)
            idx.rank[peer.peer_id] = n
            idx.leechers[loc] = n + 1

    # ------------------------------------------------------------ handout
    def sample(self, torrent: Any, exclude: bytes, numwant: int,
               rng: random.Random) -> tuple[list, list]:
        """Up to ``numwant`` peers for the requester ``exclude``, as (IPv4, IPv6)."""
        peers = torrent.peers
        me = peers.get(exclude)
        loc = self.topology.locate(me.ip) if me is not None else None
        if loc is None or numwant <= 0:
            return torrent.sample(exclude, numwant, rng)
        idx = self._indexed(torrent)
        taken = {exclude}
        live = peers.get

        def ok(p: Any) -> bool:
            return p.peer_id not in taken and live(p.peer_id) is p

        seeds = [p for p in idx.seeders if ok(p) and p.left == 0]
        rng.shuffle(seeds)
        seeds = seeds[:min(self.seeders, numwant)]
        taken.update(p.peer_id for p in seeds)
        budget = numwant - len(seeds)

        # The requester's own rack, and everyone else.
        own = [p for p in idx.groups.get(loc, ()) if ok(p)]
        outside = len(idx.flat) - len(idx.groups.get(loc, ()))
        far_quota = min(outside, math.ceil(self.far_share * budget)) if self.far_share else 0
        if self.gateways and idx.rank.get(exclude, 0) >= self.gateways:
            far_quota = 0
        rng.shuffle(own)
        own = own[:max(0, budget - far_quota)]
        taken.update(p.peer_id for p in own)
        budget -= len(own)

        if self.far_max:
            far_quota = min(far_quota, self.far_max)
        far = self._draw(idx, rng, min(far_quota, budget), taken, ok,
                         lambda p: idx.loc[p.peer_id] != loc)
        budget -= len(far)
        if self.far_max:
            budget = min(budget, self.far_max - len(far))

        rest: list = []
        for k in range(len(loc) - 1, -2, -1):
            if budget <= 0:
                break
            tier = self._tier(idx, loc, k)
            size = sum(len(idx.groups[g]) for g in tier)
            if not size:
                continue
            if size <= 4 * budget:
                members = [p for g in tier for p in idx.groups[g] if ok(p)]
                picked = members if len(members) <= budget else rng.sample(members, budget)
                taken.update(p.peer_id for p in picked)
            else:
                wanted = set(tier)
                picked = self._draw(idx, rng, budget, taken, ok,
                                    lambda p: idx.loc[p.peer_id] in wanted)
            rng.shuffle(picked)
            rest.extend(picked)
            budget -= len(picked)

        chosen = seeds + own + far + rest
        return [p for p in chosen if not p.v6], [p for p in chosen if p.v6]

    @staticmethod
    def _tier(idx: _Index, loc: Location, k: int) -> list:
        """Locations sharing exactly ``k`` path elements with ``loc`` (-1: the far ones)."""
        if k < 0:
            return [None] if None in idx.groups else []
        closer = set(idx.prefixes.get(loc[:k + 1], ()))
        return [g for g in idx.prefixes.get(loc[:k], ()) if g not in closer]

    @staticmethod
    def _draw(idx: _Index, rng: random.Random, count: int, taken: set, ok, match) -> list:
        """Up to ``count`` random peers satisfying ``match``, by bounded rejection sampling."""
        out: list = []
        flat = idx.flat
        if count <= 0 or not flat:
            return out
        for _ in range(8 * count + 16):
            p = flat[rng.randrange(len(flat))]
            if ok(p) and match(p):
                taken.add(p.peer_id)
                out.append(p)
                if len(out) >= count:
                    break
        return out


#: Handout variants compared in the simulator (``murder simulate --policy``).
POLICIES: dict[str, dict[str, Any]] = {
    "rack": dict(seeders=2, far_share=0.2),
    "rack-far10": dict(seeders=2, far_share=0.1),
    "rack-gw2": dict(seeders=2, far_share=0.2, gateways=2),
    "rack-noseed": dict(seeders=0, far_share=0.2),
    "rack-strict": dict(seeders=0, far_share=0.0),
    "rack-max4": dict(seeders=2, far_share=0.2, far_max=4),
    "rack-max10": dict(seeders=2, far_share=0.2, far_max=10),
}


def policy_named(name: str, topology: Topology) -> RackAwareHandout:
    """The handout variant ``name`` (see :data:`POLICIES`) over ``topology``."""
    try:
        return RackAwareHandout(topology, **POLICIES[name])
    except KeyError:
        raise ConfigError(f"unknown handout policy {name!r} (random, "
                          f"{', '.join(POLICIES)})") from None
