"""The UDP tracker (BEP 15): a pure core and a thin ``DatagramProtocol``.

:class:`UDPTrackerCore` answers one datagram with at most one datagram and
shares the :class:`~murder.tracker.app.TrackerApp`'s store and settings
(interval, numwant, trusted networks), so HTTP and UDP peers see each other.
It never raises and never keeps per-client state:

* **Connection ids** are a keyed MAC (HMAC-SHA256 with a random per-process
  key) over the client's address and a one-minute time bucket; an id is
  accepted in its bucket and the next, so it stays valid one to two minutes
  (BEP 15 lets clients use it for one).  Only the host is covered, not the
  source port: clients that open a new socket per announce (ours does) can
  still reuse an id.  Several tracker processes behind one address share
  nothing, so an id from one fails on another; the client then connects
  again.
* **Replies to IPv6 senders** carry 18-byte IPv6 peers, to IPv4 senders
  6-byte IPv4 peers (BEP 15's IPv6 rule; a v4-mapped sender on a dual-stack
  socket counts as IPv4).
* **Error replies** are rate limited (``error_burst`` per second at most):
  the source address of a datagram is not verified, so errors must not make
  the tracker a reflector.  Datagrams too short to carry a transaction id, or
  connects without the protocol magic, get no reply at all.  Connect replies
  are no larger than their request, and announces and scrapes need a valid
  connection id, which proves the sender receives at its address.

Announce authorisation (``--auth-secret``) has no place in a BEP 15 announce,
so a tracker with it answers UDP announces and scrapes with an error.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from murder.errors import AnnounceError, UDPCodecError
from murder.tracker import udpcodec
from murder.tracker.announce_codec import AnnounceRequest, normalize_host
from murder.tracker.app import RateLimitedLog, TrackerApp

log = Logger()

#: Seconds per connection-id time bucket; ids are valid for 1-2 buckets.
BUCKET = 60.0


class TokenBucket:
    """At most ``rate`` events per second on average, ``burst`` at once."""

    def __init__(self, clock: IReactorTime, rate: float, burst: float) -> None:
        self.clock = clock
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = clock.seconds()
        self.refused = 0

    def take(self) -> bool:
        now = self.clock.seconds()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        self.refused += 1
        return False


class UDPTrackerCore:
    """One request datagram in, one reply datagram (or ``None``) out."""

    #: Memoised connection ids (hosts x 2 buckets) before the memo is reset.
    _ID_CACHE = 65536

    def __init__(self, app: TrackerApp, *, secret: bytes | None = None,
                 error_rate: float = 100.0, error_burst: float = 200.0) -> None:
        self.app = app
        self.store = app.store
        self.clock = app.store.clock
        self._secret = secret or os.urandom(32)
        self._ids: dict[tuple[str, int], int] = {}
        self.errors = TokenBucket(self.clock, error_rate, error_burst)
        self.rejected_log = RateLimitedLog(self.clock)
        #: Counters, for tests and the status page.
        self.answered = 0
        self.dropped = 0

    # ------------------------------------------------------------ connection ids

    def connection_id(self, host: str, bucket: int | None = None) -> int:
        """The id for ``host`` in ``bucket`` (default: now's)."""
        if bucket is None:
            bucket = int(self.clock.seconds() // BUCKET)
        key = (host, bucket)
        known = self._ids.get(key)
        if known is None:
            mac = hmac.new(self._secret, b"%s|%d" % (host.encode(), bucket), hashlib.sha256)
            known = int.from_bytes(mac.digest()[:8], "big")
            if len(self._ids) >= self._ID_CACHE:
                self._ids.clear()
            self._ids[key] = known
        return known

    def valid(self, connection_id: int, host: str) -> bool:
        """Whether ``connection_id`` is ``host``'s, of this bucket or the last one.

        The MACs are memoised per (host, bucket): the same hosts announce
        again and again, and an HMAC per datagram was a fifth of its cost.
        A timing-safe comparison is not needed for an 8-byte token that
        only proves the sender reads replies at its address.
        """
        bucket = int(self.clock.seconds() // BUCKET)
        return (connection_id == self.connection_id(host, bucket)
                or connection_id == self.connection_id(host, bucket - 1))

    # -------------------------------------------------------------------- handle

    def handle(self, data: bytes, host: str, port: int) -> bytes | None:
        """The reply to ``data`` from ``(host, port)``; never raises."""
        try:
            return self._handle(data, normalize_host(host), port)
        except Exception:
            self.dropped += 1
            if self.rejected_log.allow():
                log.failure("UDP tracker bug answering {size} bytes from {peer}",
                            size=len(data), peer=host)
            return None

    def _handle(self, data: bytes, host: str, port: int) -> bytes | None:
        try:
            request = udpcodec.parse_request(data)
        except UDPCodecError as e:
            return self._error(e.transaction, e.reason, host)
        if isinstance(request, udpcodec.ConnectRequest):
            self.answered += 1
            return udpcodec.connect_reply(request.transaction, self.connection_id(host))
        if not self.valid(request.connection_id, host):
            return self._error(request.transaction, "connection id expired or invalid", host)
        if self.app.auth is not None:
            return self._error(request.transaction,
                               "this tracker needs the auth token of an HTTP announce URL",
                               host)
        if isinstance(request, udpcodec.ScrapeRequest):
            files = self.store.scrape(list(request.info_hashes))
            self.answered += 1
            return udpcodec.scrape_reply(request.transaction, [
                (s, d, i) for s, i, d in
                (files.get(ih, (0, 0, 0)) for ih in request.info_hashes)])
        return self._announce(request, host)

    def _announce(self, request: udpcodec.UDPAnnounce, host: str) -> bytes | None:
        app = self.app
        if not 0 < request.port < 65536:
            return self._error(request.transaction, "invalid port: must be 1-65535", host)
        ip = host
        if request.ip and host in app.trusted:
            ip = udpcodec.ip_from_int(request.ip)
        numwant = request.num_want
        if numwant < 0:
            numwant = app.numwant_default
        numwant = min(numwant, app.numwant_max)
        req = AnnounceRequest(
            info_hash=request.info_hash, peer_id=request.peer_id, ip=ip, port=request.port,
            uploaded=request.uploaded, downloaded=request.downloaded, left=request.left,
            event=request.event, compact=True, no_peer_id=True, numwant=numwant,
            key=request.key.to_bytes(4, "big"))
        try:
            torrent = self.store.announce(req)
        except AnnounceError as e:
            return self._error(request.transaction, e.reason, host)
        if req.event or app.verbose:
            log.info("UDP announce {event} {info_hash} from {peer} left={left}",
                     event=req.event or "update", info_hash=req.info_hash.hex(),
                     peer=f"{ip}:{req.port}", left=req.left)
        if req.event == "stopped":
            numwant = 0
        peers4, peers6 = self.store.compact_sample(torrent, req.peer_id, numwant)
        self.answered += 1
        return udpcodec.announce_reply(request.transaction, app.interval, torrent.leechers,
                                       torrent.seeders, peers6 if ":" in host else peers4)

    def _error(self, transaction: int | None, reason: str, host: str) -> bytes | None:
        self.dropped += 1
        if self.rejected_log.allow():
            log.info("UDP request from {peer} rejected: {reason}", peer=host, reason=reason)
        if transaction is None or not self.errors.take():
            return None
        return udpcodec.error_reply(transaction, reason)


class UDPTrackerProtocol(DatagramProtocol):
    """Hands each datagram to the core and sends its reply back; nothing else."""

    noisy = False

    def __init__(self, core: UDPTrackerCore) -> None:
        self.core = core

    def datagramReceived(self, data: bytes, addr: Any) -> None:  # noqa: N802 (Twisted API)
        host, port = addr[0], addr[1]
        reply = self.core.handle(data, host, port)
        if reply is not None:
            try:
                self.transport.write(reply, addr)
            except OSError:  # e.g. EMSGSIZE, or the sender's address is unroutable
                self.core.dropped += 1
