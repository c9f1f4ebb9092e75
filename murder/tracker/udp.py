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

import errno
import hashlib
import hmac
import os
import socket
from typing import Any

from twisted.application.service import Service
from twisted.internet import udp
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from murder.errors import AnnounceError, UDPCodecError
from murder.tracker import udpcodec
from murder.tracker.announce_codec import normalize_host
from murder.tracker.app import RateLimitedLog, TrackerApp
from murder.tracker.metrics import classify

log = Logger()

try:
    from murder.tracker import _udpfast
except ImportError as _e:  # built without a C compiler: the pure-Python path
    _udpfast = None  # type: ignore[assignment]
    #: Why the C drain loop is missing, for the start-up log line.
    UDPFAST_MISSING = str(_e)
else:
    UDPFAST_MISSING = ""

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
    """One request datagram in, one reply datagram (or ``None``) out.

    Announces, nearly every datagram a tracker gets, take a fast path
    (:meth:`_announce`): the codec's raw fields straight into
    :meth:`PeerStore.update <murder.tracker.store.PeerStore.update>`, the
    connection id checked against a per-host memo of the two valid ids, and
    the reply packed from the torrent's cached compact peer list.  Every step
    of it was measured (bench/README.md, "UDP hot path").
    """

    #: Memoised connection ids (hosts x 2 buckets) before the memo is reset.
    _ID_CACHE = 65536

    def __init__(self, app: TrackerApp, *, secret: bytes | None = None,
                 error_rate: float = 100.0, error_burst: float = 200.0) -> None:
        self.app = app
        self.store = app.store
        self.clock = app.store.clock
        self._secret = secret or os.urandom(32)
        self._ids: dict[tuple[str, int], int] = {}
        #: host -> (its id of this bucket, of the last one), for this bucket only.
        self._valid_ids: dict[str, tuple[int, int]] = {}
        self._bucket = 0
        self._bucket_end = float("-inf")
        self.errors = TokenBucket(self.clock, error_rate, error_burst)
        self.rejected_log = RateLimitedLog(self.clock)
        #: Counters, for tests and the status page.
        self.answered = 0
        self.dropped = 0
        #: Announce counters shared with /metrics (transport "udp").
        self._counts = app.metrics.announces
        self._ok_keys = {name: ("udp", name or "update", "ok")
                         for name in udpcodec.EVENTS.values()}

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

        The two ids are memoised per host for the current bucket: the same
        hosts announce again and again, and an HMAC per datagram was a fifth
        of its cost.  A timing-safe comparison is not needed for an 8-byte
        token that only proves the sender reads replies at its address.
        """
        now = self.clock.seconds()
        if now >= self._bucket_end or now < self._bucket_end - BUCKET:
            self._bucket = int(now // BUCKET)
            self._bucket_end = (self._bucket + 1) * BUCKET
            self._valid_ids = {}
        ids = self._valid_ids.get(host)
        if ids is None:
            ids = (self.connection_id(host, self._bucket),
                   self.connection_id(host, self._bucket - 1))
            if len(self._valid_ids) >= self._ID_CACHE:
                self._valid_ids.clear()
            self._valid_ids[host] = ids
        return connection_id == ids[0] or connection_id == ids[1]

    # -------------------------------------------------------------------- handle

    def handle(self, data: bytes, host: str, port: int) -> bytes | None:
        """The reply to ``data`` from ``(host, port)``; never raises."""
        try:
            if host.startswith("::ffff:"):
                host = normalize_host(host)
            if data[8:12] == _ANNOUNCE_ACTION and len(data) >= _ANNOUNCE_SIZE:
                return self._announce(data, host)
            return self._handle(data, host, port)
        except Exception as e:
            self._crash(len(data), host, e)
            return None

    def _crash(self, size: int, host: str, error: Exception) -> None:
        """A bug met while answering: counted and logged (rate limited), no reply.

        The C drain loop (:mod:`murder.tracker._udpfast`) calls it too, for an
        exception of :meth:`_apply`, so both paths count and log alike.
        """
        self.dropped += 1
        if self.rejected_log.allow():
            log.failure("UDP tracker bug answering {size} bytes from {peer}",
                        failure=Failure(error, type(error), error.__traceback__),
                        size=size, peer=host)

    def _handle(self, data: bytes, host: str, port: int) -> bytes | None:
        """Everything but well-formed announces: connects, scrapes and errors."""
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
            self.app.metrics.scrape("ok", "udp")
            return udpcodec.scrape_reply(request.transaction, [
                (s, d, i) for s, i, d in
                (files.get(ih, (0, 0, 0)) for ih in request.info_hashes)])
        # parse_request only returns an announce when the fast path would have
        # taken it; kept for callers that feed it other shapes.
        return self._announce(data, host)

    def _announce(self, data: bytes, host: str) -> bytes | None:
        (connection_id, _, transaction, info_hash, peer_id, downloaded, left, uploaded,
         number, ip, key, numwant, port) = _unpack_announce(data)
        # valid(), inlined: the memo of this bucket answers nearly every time.
        ids = self._valid_ids.get(host)
        if (ids is None or self.clock.seconds() >= self._bucket_end
                or (connection_id != ids[0] and connection_id != ids[1])):
            if not self.valid(connection_id, host):
                return self._error(transaction, "connection id expired or invalid", host)
        app = self.app
        event = _EVENTS.get(number)
        if event is None:
            return self._refused(transaction, f"invalid event {number}", host, "unknown")
        if app.auth is not None:
            return self._refused(transaction,
                                 "this tracker needs the auth token of an HTTP announce URL",
                                 host, event, "auth_refused")
        if not port:
            return self._refused(transaction, "invalid port: must be 1-65535", host, event)
        address = host
        if ip and host in app.trusted:
            address = udpcodec.ip_from_int(ip)
        result = self._apply(transaction, info_hash, peer_id, downloaded, left, uploaded,
                             event, key, numwant, port, address, host)
        if result.__class__ is not tuple:
            return result  # type: ignore[return-value]
        leechers, seeders, peers = result  # type: ignore[misc]
        return _pack_reply(_ANNOUNCE, transaction, app.interval, leechers, seeders) + peers

    def _apply(self, transaction: int, info_hash: bytes, peer_id: bytes, downloaded: int,
               left: int, uploaded: int, event: str, key: bytes, numwant: int, port: int,
               address: str, host: str) -> tuple[int, int, bytes] | bytes | None:
        """An announce that passed every check: store, log, peers, counters.

        Returns ``(leechers, seeders, compact peers)`` for the reply, or the
        error reply (``bytes`` or ``None``) when the store refuses.  Both
        paths call it after the same checks: :meth:`_announce` and the C drain
        loop (:mod:`murder.tracker._udpfast`), which packs the reply itself.
        """
        app = self.app
        if event == "stopped":
            numwant = 0
        elif numwant < 0:
            numwant = app.numwant_default
        if numwant > app.numwant_max:
            numwant = app.numwant_max
        try:
            torrent = self.store.update(info_hash, peer_id, address, port, left, uploaded,
                                        downloaded, event, key, numwant)
        except AnnounceError as e:
            return self._refused(transaction, e.reason, host, event, classify(e.reason))
        if event or app.verbose:  # regular updates are not logged: the hot path
            log.info("UDP announce {event} {info_hash} from {peer} left={left}",
                     event=event or "update", info_hash=info_hash.hex(),
                     peer=f"{address}:{port}", left=left)
        peers = self.store.compact_peers(torrent, peer_id, numwant, ":" in host)
        self.answered += 1
        counts, k = self._counts, self._ok_keys[event]
        counts[k] = counts.get(k, 0) + 1
        return torrent.leechers, torrent.seeders, peers

    def _refused(self, transaction: int, reason: str, host: str, event: str,
                 result: str = "invalid") -> bytes | None:
        """An announce refused: counted for /metrics, then an error reply."""
        counts, k = self._counts, ("udp", event or "update", result)
        counts[k] = counts.get(k, 0) + 1
        return self._error(transaction, reason, host)

    def _error(self, transaction: int | None, reason: str, host: str) -> bytes | None:
        self.dropped += 1
        if self.rejected_log.allow():
            log.info("UDP request from {peer} rejected: {reason}", peer=host, reason=reason)
        if transaction is None or not self.errors.take():
            return None
        return udpcodec.error_reply(transaction, reason)


#: recvfrom errors that end a read: nothing queued, or an ICMP error of an
#: earlier reply (Twisted's udp.Port ignores the same).
_READ_DONE = frozenset((errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR, errno.ECONNREFUSED))
_ANNOUNCE_ACTION = udpcodec.ANNOUNCE_ACTION
_ANNOUNCE_SIZE = udpcodec.ANNOUNCE_SIZE
_EVENTS = udpcodec.EVENTS
#: The codec's structs, bound: a Python call less per announce.
_unpack_announce = udpcodec.ANNOUNCE_FIELDS.unpack_from
_pack_reply = udpcodec.ANNOUNCE_REPLY_HEAD.pack
_ANNOUNCE = udpcodec.ANNOUNCE


class UDPTrackerProtocol(DatagramProtocol):
    """Hands each datagram to the core and sends its reply back; nothing else."""

    noisy = False
    #: The UDP port; set by makeConnection.
    transport: Any

    def __init__(self, core: UDPTrackerCore) -> None:
        self.core = core

    def datagramReceived(self, data: bytes, addr: Any) -> None:  # noqa: N802 (Twisted API)
        reply = self.core.handle(data, addr[0], addr[1])
        if reply is not None:
            try:
                self.transport.write(reply, addr)
            except OSError:  # e.g. EMSGSIZE, or the sender's address is unroutable
                self.core.dropped += 1

    def dropped(self) -> None:
        """A reply the transport could not send (:class:`TrackerUDPPort` says so)."""
        self.core.dropped += 1


class TrackerUDPPort(udp.Port):
    """Twisted's UDP port without the address checks of each ``write``.

    ``udp.Port.write`` checks that the address is an IP literal of the
    socket's family with ``isIPAddress`` (twice) and ``isIPv6Address``: about
    9 us of Python per reply, as much as the whole announce (bench/README.md,
    "UDP hot path").  The tracker only ever replies to the address
    ``recvfrom`` gave it, so the checks can only pass; the reply goes
    straight to ``sendto``.  A reply the kernel cannot take now (full buffer,
    unroutable sender) is dropped, as UDP may.
    """

    #: Datagrams answered per wakeup at most, so HTTP gets its turn.
    batch = 1000
    #: Receive buffer asked for (SO_RCVBUF; Linux caps it at net.core.rmem_max).
    #: Linux's default (212,992 bytes) queues only 256 announces: a fleet
    #: announcing at once (a deploy starting) would lose the rest, and a BEP 15
    #: client waits 15 s before it retries.  4 MiB queues several thousand,
    #: i.e. tens of milliseconds of work (bench/README.md, "Session 5 tracker").
    receive_buffer = 4 << 20

    def createInternetSocket(self) -> socket.socket:  # noqa: N802 (Twisted API)
        """Twisted's socket, with the larger receive buffer (best effort)."""
        skt = super().createInternetSocket()
        try:
            skt.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
        except OSError as e:  # pragma: no cover - platform refusing the option
            log.warn("UDP receive buffer left at the default: {error}", error=e)
        return skt

    def write(self, datagram: bytes, addr: Any = None) -> None:
        try:
            self.socket.sendto(datagram, addr)
        except OSError:
            self.protocol.dropped()

    #: The C drain loop (:mod:`murder.tracker._udpfast`), or None for the
    #: pure-Python one below; :class:`UDPTrackerService` sets it.
    fast: Any = None

    def doRead(self) -> None:  # noqa: N802 (Twisted API)
        """Answer every queued datagram (at most :attr:`batch`), each at once."""
        if self.fast is not None:
            self._drain_c(self.fast)
        else:
            self._drain_python()

    def _drain_c(self, fast: Any) -> None:
        """:meth:`_drain_python` in C: same replies, same counters (see _udpfast.c).

        A read error other than "nothing queued" is raised here, after the
        counters, as the Python loop raises it.  Only an exception that is not
        an ``Exception`` (KeyboardInterrupt) leaves the wakeup's datagrams
        uncounted.
        """
        core = self.protocol.core
        n = err = 0
        try:
            n, err = fast.drain(self.socket.fileno(), self.batch, self.maxPacketSize, core,
                                self.protocol)
        finally:
            metrics = core.app.metrics
            metrics.udp_reads += 1
            metrics.udp_datagrams += n
        if err:
            raise OSError(err, os.strerror(err))

    def _drain_python(self) -> None:
        """Answer every queued datagram (at most :attr:`batch`), each at once.

        Twisted's loop hands each datagram to ``datagramReceived``, which
        calls ``write``; here the core is called and ``sendto`` directly
        (measured in bench/README.md, "UDP hot path").  Wakeups and datagrams
        are counted once per wakeup, for /metrics: datagrams per wakeup says
        how many datagrams share Twisted's cost of one wakeup (bench/README.md,
        "Session 5 tracker").
        """
        recvfrom = self.socket.recvfrom
        sendto = self.socket.sendto
        core = self.protocol.core
        handle = core.handle
        size = self.maxPacketSize
        n = 0
        try:
            for n in range(self.batch):
                try:
                    data, addr = recvfrom(size)
                except OSError as e:
                    if e.errno in _READ_DONE:
                        return
                    raise
                reply = handle(data, addr[0], addr[1])
                if reply is not None:
                    try:
                        sendto(reply, addr)
                    except OSError:
                        self.protocol.dropped()
            n = self.batch
        finally:
            metrics = core.app.metrics
            metrics.udp_reads += 1
            metrics.udp_datagrams += n


class UDPTrackerService(Service):
    """Listens on ``port`` with a :class:`TrackerUDPPort` (``internet.UDPServer``'s job).

    The port is bound in ``privilegedStartService``, before twistd drops
    privileges, like ``UDPServer`` does.
    """

    def __init__(self, reactor: Any, port: int, protocol: UDPTrackerProtocol,
                 interface: str = "", fastpath: bool = True) -> None:
        self.reactor = reactor
        self.portnum = port
        self.protocol = protocol
        self.interface = interface
        #: The C drain loop if built and not turned off (``--no-udp-fastpath``).
        self.fast = _udpfast if fastpath else None
        self.port: TrackerUDPPort | None = None

    def privilegedStartService(self) -> None:  # noqa: N802 (Twisted API)
        Service.privilegedStartService(self)
        self._listen()

    def startService(self) -> None:  # noqa: N802
        Service.startService(self)
        self._listen()

    def _listen(self) -> None:
        if self.port is None:
            self.port = TrackerUDPPort(self.portnum, self.protocol, self.interface,
                                       reactor=self.reactor)
            self.port.fast = self.fast
            self.port.startListening()
            if self.fast is not None:
                path = "C (murder.tracker._udpfast)"
            elif _udpfast is not None:
                path = "Python (--no-udp-fastpath)"
            else:
                path = f"Python (C extension not built: {UDPFAST_MISSING})"
            log.info("UDP announces on port {port} answered in {path}",
                     port=self.port.getHost().port, path=path)

    def stopService(self) -> Any:  # noqa: N802
        Service.stopService(self)
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None
