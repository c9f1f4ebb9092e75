"""The tracker's state: torrents, their peers, expiry, caps, and the dfile.

:class:`PeerStore` is pure (no I/O): time comes from an injected
``IReactorTime`` so expiry is tested with :class:`twisted.internet.task.Clock`.
Memory is bounded by three caps (torrents, peers per torrent, peers in total);
a new torrent or peer past a cap is refused with an
:class:`~murder.errors.AnnounceError`, so announcing millions of random info
hashes costs at most the caps.

Each torrent caches the concatenated compact form of its peers: in a
datacenter swarm the same hosts re-announce every 15 s without changing, and
the reply is then a slice of that cached string.

The dfile (:func:`save_dfile` / :func:`load_dfile`) is bencode::

    {"version": 1, "saved": <unix time>,
     "torrents": {<info hash>: {"downloaded": n,
                                "peers": {<peer id>: {"ip": s, "port": n, "left": n,
                                          "uploaded": n, "downloaded": n,
                                          "age": seconds since last announce,
                                          "completed": 0|1, ["key": s]}}}}}
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from typing import Any, Iterator

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from murder import bencode
from murder.errors import AnnounceError
from murder.metainfo import write_atomic
from murder.tracker.announce_codec import AnnounceRequest, compact_address

log = Logger()

DFILE_VERSION = 1


@dataclass(frozen=True, slots=True)
class TorrentInfo:
    """What the allow-list knows about a torrent (for the status page)."""

    name: str
    size: int


@dataclass(slots=True)
class Peer:
    """One peer of one torrent, as last announced."""

    peer_id: bytes
    ip: str
    port: int
    compact: bytes
    v6: bool
    left: int
    uploaded: int
    downloaded: int
    last_seen: float
    key: bytes | None = None
    completed: bool = False
    # Progress bookkeeping for the live view (murder.tracker.view); times are
    # the store clock's.  Filled by PeerStore.announce, never by the caller.
    #: First announce seen (or the dfile load time).
    first_seen: float = 0.0
    #: ``left`` at that first announce: 0 means an origin seeder.
    initial_left: int = 0
    #: Last time ``left`` fell or ``downloaded`` grew (stall detection).
    progress_at: float = 0.0
    #: When ``left`` reached 0 after leeching (or ``completed`` was announced).
    completed_at: float | None = None
    #: Smoothed bytes/s of ``left`` falling and of ``uploaded`` growing.
    rate: float = 0.0
    up_rate: float = 0.0
    #: Set when the peer left the swarm (stopped or expired); see Torrent.departed.
    gone_at: float | None = None


class Torrent:
    """The peers of one info hash, with counters and cached compact lists."""

    __slots__ = ("info_hash", "peers", "seeders", "downloaded", "empty_since", "departed",
                 "_c4", "_c6", "_list4", "_list6", "_pos4", "_pos6")

    def __init__(self, info_hash: bytes, now: float) -> None:
        self.info_hash = info_hash
        self.peers: dict[bytes, Peer] = {}
        self.seeders = 0
        #: How many peers announced ``completed`` (scrape's ``downloaded``).
        self.downloaded = 0
        self.empty_since: float | None = now
        #: Peers that left (stopped or expired), newest last, for the live view:
        #: a deploy's finished hosts stay visible after they exit.  Bounded by
        #: PeerStore.max_departed and forgotten after PeerStore.departed_keep.
        self.departed: dict[bytes, Peer] = {}
        self._invalidate()

    def _invalidate(self) -> None:
        self._c4: bytes | None = None
        self._c6 = b""
        self._list4: list[Peer] = []
        self._list6: list[Peer] = []
        self._pos4: dict[bytes, int] = {}
        self._pos6: dict[bytes, int] = {}

    def _build(self) -> None:
        list4 = [p for p in self.peers.values() if not p.v6]
        list6 = [p for p in self.peers.values() if p.v6]
        self._list4, self._list6 = list4, list6
        self._pos4 = {p.peer_id: i for i, p in enumerate(list4)}
        self._pos6 = {p.peer_id: i for i, p in enumerate(list6)}
        self._c4 = b"".join(p.compact for p in list4)
        self._c6 = b"".join(p.compact for p in list6)

    def _append(self, peer: Peer) -> None:
        """Extend the caches with a new peer (swarms mostly grow during a deploy)."""
        if self._c4 is None:
            return
        if peer.v6:
            self._pos6[peer.peer_id] = len(self._list6)
            self._list6.append(peer)
            self._c6 += peer.compact
        else:
            self._pos4[peer.peer_id] = len(self._list4)
            self._list4.append(peer)
            self._c4 += peer.compact

    @property
    def leechers(self) -> int:
        return len(self.peers) - self.seeders

    def sample(self, exclude: bytes, numwant: int, rng: random.Random) -> tuple[list[Peer], list[Peer]]:
        """Up to ``numwant`` IPv4 and up to ``numwant`` IPv6 peers, not ``exclude``."""
        if self._c4 is None:
            self._build()
        return (_pick(self._list4, self._pos4, exclude, numwant, rng),
                _pick(self._list6, self._pos6, exclude, numwant, rng))

    def compact_sample(self, exclude: bytes, numwant: int,
                       rng: random.Random) -> tuple[bytes, bytes]:
        """Compact ``peers`` and ``peers6`` strings for a reply (BEP 23 / BEP 7)."""
        if self._c4 is None:
            self._build()
        assert self._c4 is not None and self._c6 is not None  # _build made them
        return (_pick_compact(self._c4, self._list4, self._pos4, 6, exclude, numwant, rng),
                _pick_compact(self._c6, self._list6, self._pos6, 18, exclude, numwant, rng))


    def compact_peers(self, exclude: bytes, numwant: int, v6: bool,
                      rng: random.Random) -> bytes:
        """:meth:`compact_sample`'s IPv6 string if ``v6``, else its IPv4 one."""
        if self._c4 is None:
            self._build()
        if v6:
            return _pick_compact(self._c6, self._list6, self._pos6, 18, exclude, numwant, rng)
        assert self._c4 is not None  # _build made it
        return _pick_compact(self._c4, self._list4, self._pos4, 6, exclude, numwant, rng)


def _pick(peers: list[Peer], pos: dict[bytes, int], exclude: bytes, numwant: int,
          rng: random.Random) -> list[Peer]:
    if numwant <= 0 or not peers:
        return []
    if len(peers) - (exclude in pos) <= numwant:
        return [p for p in peers if p.peer_id != exclude]
    chosen = rng.sample(peers, min(numwant + 1, len(peers)))
    return [p for p in chosen if p.peer_id != exclude][:numwant]


def _pick_compact(whole: bytes, peers: list[Peer], pos: dict[bytes, int], width: int,
                  exclude: bytes, numwant: int, rng: random.Random) -> bytes:
    if numwant <= 0 or not peers:
        return b""
    me = pos.get(exclude)
    if len(peers) - (me is not None) <= numwant:
        if me is None:
            return whole
        return whole[:me * width] + whole[(me + 1) * width:]
    return b"".join(p.compact for p in _pick(peers, pos, exclude, numwant, rng))


class PeerStore:
    """All torrents and peers the tracker knows; decides every announce.

    ``allowed`` is ``None`` (track anything) or the allow-list from
    ``--allowed-dir``; ``known`` gives names and sizes for the status page.
    """

    def __init__(self, clock: IReactorTime, *, peer_timeout: float = 120.0,
                 max_torrents: int = 10_000, max_peers_per_torrent: int = 50_000,
                 max_peers: int = 200_000, rng: random.Random | None = None,
                 max_departed: int = 50_000, departed_keep: float = 3600.0) -> None:
        self.clock = clock
        #: Departed peers kept for the live view, in total over all torrents.
        self.max_departed = max_departed
        self.departed_keep = departed_keep
        self.departed_count = 0
        #: Sums of announced counter increases, for /metrics (monotonic).
        self.reported_uploaded = 0
        self.reported_downloaded = 0
        self.peer_timeout = peer_timeout
        self.max_torrents = max_torrents
        self.max_peers_per_torrent = max_peers_per_torrent
        self.max_peers = max_peers
        self.rng = rng or random.Random()
        self.torrents: dict[bytes, Torrent] = {}
        self.peer_count = 0
        self.allowed: dict[bytes, TorrentInfo] | None = None
        self.known: dict[bytes, TorrentInfo] = {}

    # ------------------------------------------------------------ announces

    def announce(self, req: AnnounceRequest) -> Torrent:
        """Apply one announce and return its torrent (for counts and peers).

        Raises :class:`AnnounceError` when the torrent is not allowed, a cap is
        hit, or the peer id is in use from another address with another key.
        """
        return self.update(req.info_hash, req.peer_id, req.ip, req.port, req.left,
                           req.uploaded, req.downloaded, req.event, req.key)

    def update(self, info_hash: bytes, peer_id: bytes, ip: str, port: int, left: int,
               uploaded: int, downloaded: int, event: str, key: bytes | None,
               numwant: int = 0) -> Torrent:
        """:meth:`announce` from its fields, for the UDP tracker's fast path.

        BEP 15 announces arrive as fixed binary fields: building an
        :class:`AnnounceRequest` for each was a measured share of a UDP
        announce (bench/README.md, "UDP hot path").  ``numwant`` is not used
        here (peers are picked by :meth:`compact_sample`); the Redis store
        picks them in the same round trip and needs it now.
        """
        torrent = self.torrents.get(info_hash)
        if torrent is None:
            if self.allowed is not None and info_hash not in self.allowed:
                raise AnnounceError("torrent not allowed on this tracker")
            if event == "stopped":
                # Nothing to forget; do not create state for it.
                return Torrent(info_hash, self.clock.seconds())
            if len(self.torrents) >= self.max_torrents:
                raise AnnounceError("tracker is full: too many torrents")
            if self.peer_count >= self.max_peers:
                raise AnnounceError("tracker is full: too many peers")
            torrent = Torrent(info_hash, self.clock.seconds())
            self.torrents[info_hash] = torrent
        peer = torrent.peers.get(peer_id)
        now = self.clock.seconds()
        if event == "stopped":
            if peer is not None:
                if peer.key is not None and key != peer.key and ip != peer.ip:
                    raise AnnounceError("peer id in use from another address")
                # Final counters for the live view (the seeder's upload total);
                # ``left`` stays, the seeder count depends on it.
                _track_progress(peer, left, uploaded, downloaded, event, now)
                peer.uploaded = max(peer.uploaded, uploaded)
                peer.downloaded = max(peer.downloaded, downloaded)
                self._remove(torrent, peer)
            return torrent
        if peer is None:
            if len(torrent.peers) >= self.max_peers_per_torrent:
                raise AnnounceError("torrent is full: too many peers")
            if self.peer_count >= self.max_peers:
                raise AnnounceError("tracker is full: too many peers")
            compact, v6 = _compact(ip, port)
            peer = Peer(peer_id, ip, port, compact, v6, left, uploaded, downloaded, now, key)
            peer.first_seen = peer.progress_at = now
            peer.initial_left = left
            if event == "completed":
                peer.completed_at = now
            self.reported_uploaded += uploaded
            self.reported_downloaded += downloaded
            if torrent.departed and torrent.departed.pop(peer_id, None) is not None:
                self.departed_count -= 1
            torrent.peers[peer_id] = peer
            torrent._append(peer)
            torrent.empty_since = None
            self.peer_count += 1
            if left == 0:
                torrent.seeders += 1
        else:
            if peer.port != port or peer.ip != ip:
                if peer.key is not None and key != peer.key:
                    raise AnnounceError("peer id in use from another address")
                peer.compact, peer.v6 = _compact(ip, port)
                peer.ip, peer.port = ip, port
                torrent._c4 = None
            old_left = peer.left
            if (old_left == 0) != (left == 0):
                torrent.seeders += 1 if left == 0 else -1
            _track_progress(peer, left, uploaded, downloaded, event, now)
            if uploaded > peer.uploaded:
                self.reported_uploaded += uploaded - peer.uploaded
            if downloaded > peer.downloaded:
                self.reported_downloaded += downloaded - peer.downloaded
            peer.left = left
            peer.uploaded = uploaded
            peer.downloaded = downloaded
            peer.last_seen = now
            if key is not None:
                peer.key = key
        if event == "completed" and not peer.completed:
            peer.completed = True
            torrent.downloaded += 1
        return torrent

    def _remove(self, torrent: Torrent, peer: Peer) -> None:
        del torrent.peers[peer.peer_id]
        peer.gone_at = self.clock.seconds()
        if self.departed_count < self.max_departed:
            torrent.departed[peer.peer_id] = peer
            self.departed_count += 1
        torrent._c4 = None
        self.peer_count -= 1
        if peer.left == 0:
            torrent.seeders -= 1
        if not torrent.peers:
            torrent.empty_since = self.clock.seconds()

    # -------------------------------------------------------------- handout

    #: Optional handout policy (``murder.tracker.topology.RackAwareHandout``,
    #: ``--topology``): its ``sample(torrent, exclude, numwant, rng)`` picks
    #: and orders the peers of a reply.  None: a uniform random sample.
    handout: Any = None

    def sample(self, torrent: Torrent, exclude: bytes,
               numwant: int) -> tuple[list[Peer], list[Peer]]:
        """The peers for one reply (IPv4, IPv6), through the handout policy if any."""
        if self.handout is not None:
            chosen: tuple[list[Peer], list[Peer]] = self.handout.sample(
                torrent, exclude, numwant, self.rng)
            return chosen
        return torrent.sample(exclude, numwant, self.rng)

    def compact_sample(self, torrent: Torrent, exclude: bytes, numwant: int) -> tuple[bytes, bytes]:
        """:meth:`sample` as compact ``peers``/``peers6`` strings."""
        if self.handout is not None:
            four, six = self.handout.sample(torrent, exclude, numwant, self.rng)
            return b"".join(p.compact for p in four), b"".join(p.compact for p in six)
        return torrent.compact_sample(exclude, numwant, self.rng)

    def compact_peers(self, torrent: Torrent, exclude: bytes, numwant: int, v6: bool) -> bytes:
        """One family's compact peers for a reply that carries only that family.

        A BEP 15 reply holds IPv4 peers for an IPv4 sender and IPv6 peers for
        an IPv6 one, so the UDP tracker asks for one list, not both.
        """
        if self.handout is not None:
            four, six = self.handout.sample(torrent, exclude, numwant, self.rng)
            return b"".join(p.compact for p in (six if v6 else four))
        return torrent.compact_peers(exclude, numwant, v6, self.rng)

    # --------------------------------------------------------------- expiry

    def expire(self) -> int:
        """Forget peers silent for ``peer_timeout`` and torrents empty that long.

        Torrents of the allow-list stay (their ``downloaded`` count is worth
        keeping and the list is bounded by the directory).  Returns how many
        peers were dropped.
        """
        now = self.clock.seconds()
        deadline = now - self.peer_timeout
        dropped = 0
        for info_hash, torrent in list(self.torrents.items()):
            stale = [p for p in torrent.peers.values() if p.last_seen <= deadline]
            for peer in stale:
                self._remove(torrent, peer)
            dropped += len(stale)
            forget = now - self.departed_keep
            departed = torrent.departed
            while departed:
                oldest = next(iter(departed.values()))
                if oldest.gone_at is None or oldest.gone_at > forget:
                    break
                del departed[oldest.peer_id]
                self.departed_count -= 1
            if (not torrent.peers and torrent.empty_since is not None
                    and torrent.empty_since <= deadline
                    and (self.allowed is None or info_hash not in self.allowed)):
                del self.torrents[info_hash]
                self.departed_count -= len(torrent.departed)
        return dropped

    # ------------------------------------------------------------ allow-list

    def set_allowed(self, allowed: dict[bytes, TorrentInfo] | None) -> None:
        """Replace the allow-list; torrents no longer allowed are dropped."""
        self.allowed = allowed
        self.known = dict(allowed or {})
        if allowed is None:
            return
        for info_hash in [ih for ih in self.torrents if ih not in allowed]:
            torrent = self.torrents.pop(info_hash)
            self.peer_count -= len(torrent.peers)
            self.departed_count -= len(torrent.departed)

    # ---------------------------------------------------------------- views

    def scrape(self, info_hashes: list[bytes] | None = None) -> dict[bytes, tuple[int, int, int]]:
        """``{info_hash: (complete, incomplete, downloaded)}``; unknown hashes omitted."""
        if info_hashes is None:
            chosen: Iterator[Torrent] = iter(self.torrents.values())
        else:
            chosen = (t for t in map(self.torrents.get, info_hashes) if t is not None)
        return {t.info_hash: (t.seeders, t.leechers, t.downloaded) for t in chosen}

    def reported_bytes(self) -> tuple[int, int] | None:
        """Sums of announced ``uploaded`` and ``downloaded`` increases (for /metrics)."""
        return self.reported_uploaded, self.reported_downloaded

    # ----------------------------------------------------------- persistence

    def to_dfile(self) -> bytes:
        """The whole state as bencode (see the module docstring)."""
        now = self.clock.seconds()
        torrents: dict[bytes, Any] = {}
        for info_hash, torrent in self.torrents.items():
            peers: dict[bytes, Any] = {}
            for peer in torrent.peers.values():
                record: dict[bytes, Any] = {
                    b"ip": peer.ip.encode(), b"port": peer.port, b"left": peer.left,
                    b"uploaded": peer.uploaded, b"downloaded": peer.downloaded,
                    b"age": max(0, int(now - peer.last_seen)), b"completed": int(peer.completed),
                }
                if peer.key is not None:
                    record[b"key"] = peer.key
                peers[peer.peer_id] = record
            torrents[info_hash] = {b"downloaded": torrent.downloaded, b"peers": peers}
        return bencode.encode({b"version": DFILE_VERSION, b"saved": int(time.time()),
                                 b"torrents": torrents})

    def from_dfile(self, data: bytes) -> None:
        """Replace the state with a dfile's.  Raises ``ValueError`` if malformed.

        Peers get back the age they had when saved, so a peer that stopped
        announcing still expires on time.  Caps and the allow-list apply.
        """
        try:
            top = bencode.decode(data)
        except Exception as e:  # bencodepy raises many kinds on garbage
            raise ValueError(f"not bencode: {e}") from None
        if not isinstance(top, dict) or top.get(b"version") != DFILE_VERSION:
            raise ValueError("not a version 1 tracker dfile")
        raw_torrents = top.get(b"torrents")
        if not isinstance(raw_torrents, dict):
            raise ValueError("missing torrents")
        now = self.clock.seconds()
        self.torrents = {}
        self.peer_count = 0
        self.departed_count = 0
        for info_hash, entry in raw_torrents.items():
            if not (isinstance(info_hash, bytes) and len(info_hash) == 20
                    and isinstance(entry, dict)):
                raise ValueError("bad torrent entry")
            if self.allowed is not None and info_hash not in self.allowed:
                continue
            if len(self.torrents) >= self.max_torrents:
                break
            torrent = Torrent(info_hash, now)
            torrent.downloaded = _int(entry.get(b"downloaded", 0))
            peers = entry.get(b"peers", {})
            if not isinstance(peers, dict):
                raise ValueError("bad peers entry")
            for peer_id, rec in peers.items():
                if (len(torrent.peers) >= self.max_peers_per_torrent
                        or self.peer_count >= self.max_peers):
                    break
                peer = _peer_from_record(peer_id, rec, now)
                torrent.peers[peer_id] = peer
                self.peer_count += 1
                if peer.left == 0:
                    torrent.seeders += 1
            if torrent.peers:
                torrent.empty_since = None
            self.torrents[info_hash] = torrent


#: Weight of the newest sample in the smoothed rates (successive announces).
RATE_WEIGHT = 0.5
#: Announces closer than this (seconds) do not update rates: an event burst
#: (``completed`` right after an update) would give absurd instant rates.
_MIN_RATE_GAP = 0.2


def _track_progress(peer: Peer, left: int, uploaded: int, downloaded: int, event: str,
                    now: float) -> None:
    """Update ``peer``'s progress fields from a re-announce, before its counters change.

    Rates come from successive announces (no peer change needed): with the
    short leecher interval they are a few seconds old at most.
    """
    fell = peer.left - left
    if fell > 0 or downloaded > peer.downloaded:
        peer.progress_at = now
    if peer.completed_at is None and (
            (left == 0 and peer.left > 0) or event == "completed"):
        peer.completed_at = now
    gap = now - peer.last_seen
    if gap >= _MIN_RATE_GAP:
        w = RATE_WEIGHT
        up = uploaded - peer.uploaded
        peer.rate = (1 - w) * peer.rate + w * ((fell if fell > 0 else 0) / gap)
        peer.up_rate = (1 - w) * peer.up_rate + w * ((up if up > 0 else 0) / gap)


def _compact(ip: str, port: int) -> tuple[bytes, bool]:
    try:
        return compact_address(ip, port)
    except (OSError, OverflowError, ValueError):
        # e.g. a UNIX-socket listener: no address to hand to other peers.
        raise AnnounceError(f"unusable peer address {ip!r}") from None


def _int(value: Any) -> int:
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"bad number {value!r}")
    return value


def _peer_from_record(peer_id: Any, rec: Any, now: float) -> Peer:
    if not (isinstance(peer_id, bytes) and len(peer_id) == 20 and isinstance(rec, dict)):
        raise ValueError("bad peer entry")
    ip_raw, key = rec.get(b"ip"), rec.get(b"key")
    if not isinstance(ip_raw, bytes) or (key is not None and not isinstance(key, bytes)):
        raise ValueError("bad peer address")
    port = _int(rec.get(b"port"))
    ip = ip_raw.decode("ascii", "replace")
    try:
        compact, v6 = compact_address(ip, port)
    except (OSError, OverflowError) as e:
        raise ValueError(f"bad peer address {ip!r}:{port}: {e}") from None
    peer = Peer(peer_id, ip, port, compact, v6, _int(rec.get(b"left", 0)),
                _int(rec.get(b"uploaded", 0)), _int(rec.get(b"downloaded", 0)),
                now - _int(rec.get(b"age", 0)), key, bool(rec.get(b"completed", 0)))
    # The dfile keeps no history: progress starts again from the load.  A peer
    # that had completed here stays "complete" (not an origin seeder).
    peer.first_seen = peer.progress_at = now
    peer.initial_left = peer.left
    if peer.completed and peer.left == 0:
        peer.completed_at = now
    return peer


def save_dfile(store: PeerStore, path: str) -> None:
    """Write the store atomically (temp file, fsync, rename)."""
    write_atomic(path, store.to_dfile())


def load_dfile(store: PeerStore, path: str) -> bool:
    """Load ``path`` into ``store``; returns whether state was loaded.

    A missing dfile is a fresh start.  An unreadable or corrupt one is logged
    in one line and renamed aside (``<path>.corrupt-<unix time>``) so the
    next save does not destroy the evidence; the tracker then starts empty.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return False
    except OSError as e:
        log.error("cannot read dfile {path}: {error}; starting empty", path=path,
                  error=e.strerror or str(e))
        return False
    try:
        store.from_dfile(data)
    except (ValueError, RecursionError) as e:
        store.torrents, store.peer_count, store.departed_count = {}, 0, 0
        aside = f"{path}.corrupt-{int(time.time())}"
        try:
            os.replace(path, aside)
        except OSError as rename_error:
            aside = f"(not moved: {rename_error.strerror})"
        log.error("corrupt dfile {path} ({error}); moved to {aside}; starting empty",
                  path=path, error=str(e), aside=aside)
        return False
    log.info("loaded dfile {path}: {torrents} torrents, {peers} peers", path=path,
             torrents=len(store.torrents), peers=store.peer_count)
    return True
