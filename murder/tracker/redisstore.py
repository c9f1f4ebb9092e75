"""Peers kept in Redis, so several tracker processes answer for one swarm.

:class:`RedisPeerStore` offers what :class:`~murder.tracker.store.PeerStore`
offers the HTTP and UDP front ends (``announce``, ``scrape``, ``torrents``
for the status page, ``set_allowed``, ``expire``), with the state in Redis
(``--store redis://HOST:PORT/DB`` or ``unix:///PATH?db=N``).  Any tracker
on the same store hands out every peer, so a peer that fails over along its
announce-list (BEP 12) finds the swarm where it lands.

**One round trip per announce.**  Each announce is one ``EVALSHA`` of a Lua
script that runs atomically in Redis: it checks the caps and the peer id's
owner, records the peer, and returns the counts and the compact peer lists
ready to send.  Scrapes are one more script.

**Expiry is Redis's.**  Per torrent, a sorted set scores each peer by the
Redis server's clock at its last announce (one clock for every tracker):
each announce of the torrent first drops the members older than
``peer_timeout`` (a range removal, no scan of other torrents), and every key
of a torrent carries a TTL of ``peer_timeout`` renewed by each announce, so a
silent torrent vanishes on its own.  :meth:`RedisPeerStore.expire` therefore
has nothing to do.

**Why a blocking client.**  The tracker's request path is synchronous
(``TrackerApp.handle`` returns a reply, which the HTTP and UDP front ends
write at once), so a Twisted-native client (txredisapi) would mean turning
every front end to Deferreds.  A round trip to a Redis on the same host or
rack costs tens of microseconds against the ~100 µs the announce itself
costs in Python, so the well-kept ``redis`` package (with hiredis) is called
inline; ``bench/tracker_announce.py --fleet`` and
``bench/tracker_redis_cost.py`` measure the cost.  A command
times out after ``socket_timeout`` (1 s): while Redis is down, announces get
a ``failure reason`` ("peer store unavailable") and peers retry or fail over.

Keys (``murder:`` prefix by default; a Lua script builds the per-torrent
keys, so the store is for one Redis server, not Redis Cluster)::

    murder:torrents             ZSET  info hash (hex) -> last announce time
    murder:peers                ZSET  info hash (hex) || peer id -> last announce time
                                      (every live peer: the --max-peers cap)
    murder:t:<ih>:seen          ZSET  peer id -> last announce time (expiry)
    murder:t:<ih>:rec           HASH  peer id -> len(compact) || compact || key
    murder:t:<ih>:stat          HASH  peer id -> "ip port left uploaded downloaded"
    murder:t:<ih>:seeds         SET   peer ids with left = 0
    murder:t:<ih>:completed     SET   peer ids that announced completed
"""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import parse_qs, urlsplit

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from murder.errors import AnnounceError, ConfigError
from murder.tracker.announce_codec import AnnounceRequest, compact_address
from murder.tracker.store import Peer, Torrent, TorrentInfo

log = Logger()

_ANNOUNCE = r"""
local prefix, ih, pid, compact, left, event, numwant, key, timeout, max_per, max_torrents,
      ip, port, up, down, want_ids, max_peers = unpack(ARGV)
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
timeout = tonumber(timeout)
numwant = tonumber(numwant)
local base = prefix .. 't:' .. ih
local seen, rec, stat, seeds, completed = base .. ':seen', base .. ':rec', base .. ':stat',
    base .. ':seeds', base .. ':completed'
local index = prefix .. 'torrents'
local all = prefix .. 'peers'
local member = ih .. pid
local deadline = now - timeout
redis.call('ZREMRANGEBYSCORE', index, '-inf', deadline)
redis.call('ZREMRANGEBYSCORE', all, '-inf', deadline)
local stale = redis.call('ZRANGEBYSCORE', seen, '-inf', deadline, 'LIMIT', 0, 500)
if #stale > 0 then
  redis.call('ZREM', seen, unpack(stale))
  redis.call('HDEL', rec, unpack(stale))
  redis.call('HDEL', stat, unpack(stale))
  redis.call('SREM', seeds, unpack(stale))
end
local old = redis.call('HGET', rec, pid)
if old then
  local n = string.byte(old, 1)
  local oldkey = string.sub(old, n + 2)
  if string.sub(old, 2, n + 1) ~= compact and oldkey ~= '' and oldkey ~= key then
    return {'peer id in use from another address'}
  end
  if key == '' then key = oldkey end
end
if event == 'stopped' then
  if old then
    redis.call('ZREM', seen, pid)
    redis.call('HDEL', rec, pid)
    redis.call('HDEL', stat, pid)
    redis.call('SREM', seeds, pid)
    redis.call('ZREM', all, member)
  end
  local s = redis.call('SCARD', seeds)
  return {'', s, redis.call('ZCARD', seen) - s, '', '', {}}
end
if not old then
  if not redis.call('ZSCORE', index, ih) and redis.call('ZCARD', index) >= tonumber(max_torrents) then
    return {'tracker is full: too many torrents'}
  end
  if redis.call('ZCARD', seen) >= tonumber(max_per) then
    return {'torrent is full: too many peers'}
  end
  if redis.call('ZCARD', all) >= tonumber(max_peers) then
    return {'tracker is full: too many peers'}
  end
end
redis.call('HSET', rec, pid, string.char(#compact) .. compact .. key)
redis.call('HSET', stat, pid, ip .. ' ' .. port .. ' ' .. left .. ' ' .. up .. ' ' .. down)
redis.call('ZADD', seen, now, pid)
if left == '0' then redis.call('SADD', seeds, pid) else redis.call('SREM', seeds, pid) end
if event == 'completed' then redis.call('SADD', completed, pid) end
redis.call('ZADD', index, now, ih)
redis.call('ZADD', all, now, member)
local ttl = math.floor(timeout * 1000) + 1000
for _, k in ipairs({seen, rec, stat, seeds, completed, index, all}) do
  redis.call('PEXPIRE', k, ttl)
end
local count = redis.call('HLEN', rec)
local entries
if count - 1 <= numwant then
  entries = redis.call('HGETALL', rec)
else
  entries = redis.call('HRANDFIELD', rec, numwant + 1, 'WITHVALUES')
end
local four, six, ids4, ids6, taken = {}, {}, {}, {}, 0
for i = 1, #entries, 2 do
  if entries[i] ~= pid and taken < numwant then
    local v = entries[i + 1]
    local n = string.byte(v, 1)
    if n == 6 then
      four[#four + 1] = string.sub(v, 2, 7)
      if want_ids == '1' then ids4[#ids4 + 1] = entries[i] end
    else
      six[#six + 1] = string.sub(v, 2, n + 1)
      if want_ids == '1' then ids6[#ids6 + 1] = entries[i] end
    end
    taken = taken + 1
  end
end
for _, id in ipairs(ids6) do ids4[#ids4 + 1] = id end
local s = redis.call('SCARD', seeds)
return {'', s, redis.call('ZCARD', seen) - s, table.concat(four), table.concat(six), ids4}
"""

_SCRAPE = r"""
local prefix, timeout = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local deadline = tonumber(t[1]) + tonumber(t[2]) / 1000000 - timeout
local hashes = {}
for i = 3, #ARGV do hashes[#hashes + 1] = ARGV[i] end
if #hashes == 0 then
  hashes = redis.call('ZRANGEBYSCORE', prefix .. 'torrents', deadline, '+inf', 'LIMIT', 0, 10000)
end
local out = {}
for _, ih in ipairs(hashes) do
  local base = prefix .. 't:' .. ih
  local total = redis.call('ZCOUNT', base .. ':seen', deadline, '+inf')
  if total > 0 then
    local s = redis.call('SCARD', base .. ':seeds')
    if s > total then s = total end
    out[#out + 1] = ih
    out[#out + 1] = s
    out[#out + 1] = total - s
    out[#out + 1] = redis.call('SCARD', base .. ':completed')
  end
end
return out
"""


def parse_store_url(url: str) -> dict[str, Any]:
    """``redis://HOST:PORT/DB``, ``unix:///PATH?db=N`` or a socket ``/PATH`` →
    keyword arguments of :class:`redis.Redis`; :class:`ConfigError` otherwise."""
    if url.startswith("/"):
        url = "unix://" + url
    parts = urlsplit(url)
    if parts.scheme == "redis":
        try:
            port = parts.port or 6379
        except ValueError:
            raise ConfigError(f"bad port in {url!r}") from None
        db = parts.path.strip("/") or "0"
        if not parts.hostname or not db.isdigit():
            raise ConfigError(f"{url!r} is not redis://HOST:PORT/DB")
        return {"host": parts.hostname, "port": port, "db": int(db)}
    if parts.scheme == "unix":
        db = parse_qs(parts.query).get("db", ["0"])[0]
        if not parts.path or not db.isdigit():
            raise ConfigError(f"{url!r} is not unix:///PATH?db=N")
        return {"unix_socket_path": parts.path, "db": int(db)}
    raise ConfigError(f"{url!r}: use redis://HOST:PORT/DB or unix:///PATH?db=N")


class _Reply:
    """One announce's torrent as the script saw it: counts and the chosen peers."""

    __slots__ = ("seeders", "leechers", "_c4", "_c6", "_ids")

    def __init__(self, seeders: int, leechers: int, c4: bytes, c6: bytes,
                 ids: list[bytes]) -> None:
        self.seeders = seeders
        self.leechers = leechers
        self._c4, self._c6, self._ids = c4, c6, ids

    def compact_sample(self, exclude: bytes, numwant: int,
                       rng: random.Random) -> tuple[bytes, bytes]:
        """The peers the script chose (it already left out ``exclude``)."""
        if numwant <= 0:
            return b"", b""
        return self._c4, self._c6

    def sample(self, exclude: bytes, numwant: int,
               rng: random.Random) -> tuple[list[Peer], list[Peer]]:
        """The same peers as :class:`Peer` objects (for dictionary replies)."""
        if numwant <= 0:
            return [], []
        four = [_peer(pid, self._c4[i * 6:i * 6 + 6]) for i, pid in
                enumerate(self._ids[:len(self._c4) // 6])]
        rest = self._ids[len(self._c4) // 6:]
        six = [_peer(pid, self._c6[i * 18:i * 18 + 18]) for i, pid in enumerate(rest)]
        return four, six


def _peer(peer_id: bytes, compact: bytes) -> Peer:
    import socket

    family = socket.AF_INET if len(compact) == 6 else socket.AF_INET6
    ip = socket.inet_ntop(family, compact[:-2])
    return Peer(peer_id, ip, int.from_bytes(compact[-2:], "big"), compact, len(compact) == 18,
                0, 0, 0, 0.0)


class RedisPeerStore:
    """The tracker's peers in Redis; the same interface as :class:`PeerStore`."""

    def __init__(self, clock: IReactorTime, url: str, *, peer_timeout: float = 120.0,
                 max_torrents: int = 10_000, max_peers_per_torrent: int = 50_000,
                 max_peers: int = 200_000, rng: random.Random | None = None,
                 prefix: str = "murder:", socket_timeout: float = 1.0,
                 client: Any = None) -> None:
        self.clock = clock
        self.url = url
        self.peer_timeout = peer_timeout
        self.max_torrents = max_torrents
        self.max_peers_per_torrent = max_peers_per_torrent
        #: Enforced over every tracker on the store (``murder:peers``).
        self.max_peers = max_peers
        self.rng = rng or random.Random()
        self.prefix = prefix
        self.allowed: dict[bytes, TorrentInfo] | None = None
        self.known: dict[bytes, TorrentInfo] = {}
        if client is None:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            # No retries inside a command: the reactor waits on it.  The peer
            # retries the announce (or fails over) instead.
            client = redis.Redis(socket_timeout=socket_timeout,
                                 socket_connect_timeout=socket_timeout,
                                 retry=Retry(NoBackoff(), 0), **parse_store_url(url))
        self.redis = client
        self._announce = client.register_script(_ANNOUNCE)
        self._scrape = client.register_script(_SCRAPE)
        self._errors = 0

    def _unavailable(self, error: Exception) -> AnnounceError:
        self._errors += 1
        if self._errors == 1 or self._errors % 1000 == 0:
            log.error("peer store {url} unavailable ({count} errors): {error}", url=self.url,
                      count=self._errors, error=str(error))
        return AnnounceError("peer store unavailable, try again")

    # ------------------------------------------------------------ announces

    #: Rack-aware handouts (``--topology``) need the in-memory store.
    handout = None

    def sample(self, torrent: _Reply, exclude: bytes,
               numwant: int) -> tuple[list[Peer], list[Peer]]:
        """The peers the script chose (``PeerStore.sample``'s interface)."""
        return torrent.sample(exclude, numwant, self.rng)

    def compact_sample(self, torrent: _Reply, exclude: bytes, numwant: int) -> tuple[bytes, bytes]:
        return torrent.compact_sample(exclude, numwant, self.rng)

    def compact_peers(self, torrent: _Reply, exclude: bytes, numwant: int, v6: bool) -> bytes:
        """One family's peers (``PeerStore.compact_peers``, for BEP 15 replies)."""
        four, six = torrent.compact_sample(exclude, numwant, self.rng)
        return six if v6 else four

    def announce(self, req: AnnounceRequest) -> _Reply:
        """Apply one announce in Redis; :class:`AnnounceError` when refused."""
        return self.update(req.info_hash, req.peer_id, req.ip, req.port, req.left,
                           req.uploaded, req.downloaded, req.event, req.key, req.numwant,
                           want_ids=not req.compact)

    def update(self, info_hash: bytes, peer_id: bytes, ip: str, port: int, left: int,
               uploaded: int, downloaded: int, event: str, key: bytes | None,
               numwant: int, want_ids: bool = False) -> _Reply:
        """:meth:`announce` from its fields (``PeerStore.update``'s interface).

        The script picks the reply's peers in the same round trip, so it needs
        ``numwant`` now; ``want_ids`` asks for their peer ids too (dictionary
        replies).
        """
        import redis

        if self.allowed is not None and info_hash not in self.allowed:
            raise AnnounceError("torrent not allowed on this tracker")
        try:
            compact, _ = compact_address(ip, port)
        except (OSError, OverflowError, ValueError):
            raise AnnounceError(f"unusable peer address {ip!r}") from None
        args = [self.prefix, info_hash.hex(), peer_id, compact, left, event,
                numwant, key or b"", self.peer_timeout, self.max_peers_per_torrent,
                self.max_torrents, ip, port, uploaded, downloaded, 1 if want_ids else 0,
                self.max_peers]
        try:
            result = self._announce(args=args)
        except redis.RedisError as e:
            raise self._unavailable(e) from None
        if result[0]:
            raise AnnounceError(result[0].decode())
        self._errors = 0
        return _Reply(result[1], result[2], result[3], result[4], result[5])

    # ---------------------------------------------------------------- views

    def scrape(self, info_hashes: list[bytes] | None = None) -> dict[bytes, tuple[int, int, int]]:
        """``{info_hash: (complete, incomplete, downloaded)}``; unknown hashes omitted."""
        import redis

        try:
            flat = self._scrape(args=[self.prefix, self.peer_timeout,
                                      *(ih.hex() for ih in info_hashes or ())])
        except redis.RedisError as e:
            raise self._unavailable(e) from None
        return {bytes.fromhex(flat[i].decode()): (flat[i + 1], flat[i + 2], flat[i + 3])
                for i in range(0, len(flat), 4)}

    @property
    def torrents(self) -> dict[bytes, Torrent]:
        """A snapshot of every live torrent and its peers (for the status page)."""
        r = self.redis
        seconds, micros = r.time()
        redis_now = seconds + micros / 1e6
        now = self.clock.seconds()
        deadline = redis_now - self.peer_timeout
        out: dict[bytes, Torrent] = {}
        for raw in r.zrangebyscore(self.prefix + "torrents", deadline, "+inf"):
            base = f"{self.prefix}t:{raw.decode()}"
            pipe = r.pipeline(transaction=False)
            pipe.zrangebyscore(base + ":seen", deadline, "+inf", withscores=True)
            pipe.hgetall(base + ":stat")
            pipe.scard(base + ":completed")
            pipe.smembers(base + ":completed")
            seen, stats, downloaded, completed = pipe.execute()
            torrent = Torrent(bytes.fromhex(raw.decode()), now)
            torrent.downloaded = downloaded
            for pid, score in seen:
                fields = (stats.get(pid) or b"").split()
                if len(fields) != 5:
                    continue
                ip = fields[0].decode()
                port, left, up, down = (int(f) for f in fields[1:])
                try:
                    compact, v6 = compact_address(ip, port)
                except (OSError, OverflowError, ValueError):
                    continue
                torrent.peers[pid] = Peer(pid, ip, port, compact, v6, left, up, down,
                                          now - (redis_now - score), None, pid in completed)
                torrent.seeders += left == 0
            if torrent.peers:
                torrent.empty_since = None
                out[torrent.info_hash] = torrent
        return out

    @property
    def peer_count(self) -> int:
        """Live peers of every torrent, as the ``--max-peers`` cap counts them."""
        seconds, micros = self.redis.time()
        deadline = seconds + micros / 1e6 - self.peer_timeout
        return int(self.redis.zcount(self.prefix + "peers", deadline, "+inf"))

    def reported_bytes(self) -> tuple[int, int] | None:
        """None: several trackers share the peers, so no process sees every
        increase of a peer's counters (``PeerStore.reported_bytes``)."""
        return None

    # --------------------------------------------------------- housekeeping

    def expire(self) -> int:
        """Nothing to do: Redis drops stale peers and silent torrents (see the module doc)."""
        return 0

    def set_allowed(self, allowed: dict[bytes, TorrentInfo] | None) -> None:
        """Replace the allow-list; announces of other torrents are refused from now on."""
        self.allowed = allowed
        self.known = dict(allowed or {})
