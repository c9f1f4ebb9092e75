"""Announce over ``udp://`` (BEP 15): connect, then announce, 4 datagrams in all.

:class:`UDPTrackerClient` offers ``announce(url, params, timeout)`` to the
:class:`~murder.peer.announcer.Announcer`.  Each announce is one
:class:`_Exchange` on its own UDP port: it sends a connect request (or reuses
a connection id younger than a minute, as BEP 15 allows), then the announce,
and retransmits the request in flight after 15 s, 30 s, 60 s … (BEP 15's
``15 * 2 ** n``) until ``timeout``, which the announcer derives from
``--tracker-timeout``.  An error datagram from the tracker fails the announce
with :class:`~murder.errors.AnnounceError` (the tracker answered); silence
fails it with :class:`UDPTimeout` (the tracker was not reached).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any, Callable
from urllib.parse import urlsplit

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from murder.errors import AnnounceError, UDPCodecError
from murder.peer.announcer import AnnounceParams, AnnounceReply, _compact
from murder.tracker import udpcodec

#: BEP 15: a client may use a connection id for one minute.
CONNECTION_ID_TTL = 60.0
#: BEP 15: retransmit after ``15 * 2 ** n`` seconds, n up to 8.
RETRY_BASE = 15.0
MAX_RETRY_EXPONENT = 8


class UDPTimeout(Exception):
    """The UDP tracker did not answer in time (it was never reached)."""


def parse_udp_url(url: str) -> tuple[str, int]:
    """``udp://host:port/announce`` → ``(host, port)``; :class:`AnnounceError` if unusable."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "udp" or not parts.hostname or not port:
        raise AnnounceError(f"not a udp://host:port URL: {url}")
    return parts.hostname, port


class UDPTrackerClient:
    """BEP 15 announces over ``reactor``; connection ids cached per tracker address."""

    log = Logger()

    def __init__(self, reactor: Any, retry_base: float = RETRY_BASE) -> None:
        self.reactor = reactor
        self.retry_base = retry_base
        self._connections: dict[tuple[str, int], tuple[int, float]] = {}

    def announce(self, url: str, params: AnnounceParams,
                 timeout: float) -> defer.Deferred[AnnounceReply]:
        """Fire with an :class:`AnnounceReply`, or fail within ``timeout`` seconds."""
        try:
            host, port = parse_udp_url(url)
        except AnnounceError as e:
            return defer.fail(e)
        try:
            ipaddress.ip_address(host)
            resolved: defer.Deferred[str] = defer.succeed(host)
        except ValueError:
            resolved = self.reactor.resolve(host)
        return resolved.addCallback(lambda ip: self._exchange((ip, port), params, timeout))

    def _exchange(self, address: tuple[str, int], params: AnnounceParams,
                  timeout: float) -> defer.Deferred[AnnounceReply]:
        v6 = ":" in address[0]
        cached = self._connections.get(address)
        connection_id = None
        if cached is not None and self.reactor.seconds() - cached[1] < CONNECTION_ID_TTL:
            connection_id = cached[0]
        exchange = _Exchange(self, address, params, timeout, connection_id, v6)
        try:
            port = self.reactor.listenUDP(0, exchange, interface="::" if v6 else "")
        except Exception as e:  # CannotListenError: no UDP socket for this family
            return defer.fail(UDPTimeout(f"cannot open a UDP socket: {e}"))
        return exchange.result.addBoth(_closing(port))

    def remember(self, address: tuple[str, int], connection_id: int | None) -> None:
        if connection_id is None:
            self._connections.pop(address, None)
        else:
            self._connections[address] = (connection_id, self.reactor.seconds())


def _closing(port: Any) -> Callable[[Any], Any]:
    def close(outcome: Any) -> Any:
        port.stopListening()
        return outcome
    return close


def _key(peer_id: bytes) -> int:
    """BEP 15's ``key``: stable for this peer, so the tracker can tell it moved."""
    return int.from_bytes(peer_id[-4:], "big")


def _ipv4(ip: str | None) -> int:
    if not ip:
        return 0
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return 0
    return int(address) if address.version == 4 else 0


class _Exchange(protocol.DatagramProtocol):
    """One announce: connect (unless cached) → announce, with retransmissions."""

    def __init__(self, client: UDPTrackerClient, address: tuple[str, int],
                 params: AnnounceParams, timeout: float, connection_id: int | None,
                 v6: bool) -> None:
        self.client = client
        self.reactor = client.reactor
        self.address = address
        self.params = params
        self.connection_id = connection_id
        self.reused = connection_id is not None
        self.v6 = v6
        self.result: defer.Deferred[AnnounceReply] = defer.Deferred()
        self.transaction = 0
        self.retries = 0
        self._retry: IDelayedCall | None = None
        self._deadline = self.reactor.callLater(timeout, self._expire, timeout)

    def startProtocol(self) -> None:  # noqa: N802 (Twisted API)
        self._send()

    def _send(self) -> None:
        self.transaction = int.from_bytes(os.urandom(4), "big")
        p = self.params
        if self.connection_id is None:
            datagram = udpcodec.connect_request(self.transaction)
        else:
            datagram = udpcodec.announce_request(
                self.connection_id, self.transaction, p.info_hash, p.peer_id, p.downloaded,
                p.left, p.uploaded, p.event or "", _key(p.peer_id), p.numwant, p.port,
                _ipv4(p.ip))
        try:
            assert self.transport is not None, "sent before the port was listening"
            self.transport.write(datagram, self.address)
        except OSError as e:  # e.g. no route: retried like a lost datagram
            self.client.log.debug("UDP send to {address} failed: {error}",
                                  address=self.address, error=e)
        delay = self.client.retry_base * 2 ** min(self.retries, MAX_RETRY_EXPONENT)
        self._retry = self.reactor.callLater(delay, self._retransmit)

    def _retransmit(self) -> None:
        self.retries += 1
        self._send()

    def datagramReceived(self, data: bytes, addr: Any) -> None:  # noqa: N802 (Twisted API)
        if self.result.called or addr[:2] != self.address:
            return
        try:
            reply = udpcodec.parse_reply(data)
        except UDPCodecError:
            return  # garbage: keep waiting for the real answer
        if reply.transaction != self.transaction:
            return
        if isinstance(reply, udpcodec.ErrorReply):
            if self.reused:
                # The cached id may have expired on the tracker's side: connect afresh once.
                self.reused = False
                self.connection_id = None
                self.client.remember(self.address, None)
                self._restart()
                return
            self._finish(AnnounceError(f"tracker refused: {reply.message}"))
        elif isinstance(reply, udpcodec.ConnectReply) and self.connection_id is None:
            self.connection_id = reply.connection_id
            self.client.remember(self.address, reply.connection_id)
            self._restart()
        elif isinstance(reply, udpcodec.AnnounceReply) and self.connection_id is not None:
            family = socket.AF_INET6 if self.v6 else socket.AF_INET
            try:
                peers = _compact(reply.peers, family)
            except AnnounceError as e:
                self._finish(e)
                return
            self._finish(AnnounceReply(float(reply.interval or 15), peers, reply.seeders,
                                       reply.leechers))

    def _restart(self) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._send()

    def _expire(self, timeout: float) -> None:
        what = "connect" if self.connection_id is None else "announce"
        self._finish(UDPTimeout(f"no UDP {what} reply within {timeout:g}s "
                                f"({self.retries} retransmissions)"))

    def _finish(self, outcome: Any) -> None:
        if self.result.called:
            return
        for call in (self._retry, self._deadline):
            if call is not None and call.active():
                call.cancel()
        if isinstance(outcome, Exception):
            self.result.errback(outcome)
        else:
            self.result.callback(outcome)
