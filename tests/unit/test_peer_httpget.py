"""PlainHTTP (murder/peer/httpget.py), the production announce client, in memory.

A ``MemoryReactorClock`` records the dial; the test plays the server over a
``StringTransport``, or connects the client to the real tracker protocol
(``TrackerHTTPFactory`` + ``TrackerApp``) with ``iosim``.
"""

from __future__ import annotations

from urllib.parse import quote_from_bytes

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.test import iosim

from murder import bencode
from murder.peer.httpget import MAX_BODY, HTTPError, PlainHTTP, Response
from tracker_harness import Tracker

URL = "http://tracker.test:8998/announce?info_hash=%41%41&port=1"


def dial(url: str = URL, timeout: float = 10.0):
    """Begin a GET; return (reactor, outcome list, the client factory it dialed with)."""
    reactor = MemoryReactorClock()
    outcome: list = []
    PlainHTTP(reactor).get(url, timeout=timeout).addBoth(outcome.append)
    host, port, factory, dial_timeout, _ = reactor.tcpClients[0]
    assert (host, port, dial_timeout) == ("tracker.test", 8998, timeout)
    return reactor, outcome, factory


def start(url: str = URL, timeout: float = 10.0):
    """Dial and connect over a StringTransport: (reactor, outcome, protocol, transport, factory)."""
    reactor, outcome, factory = dial(url, timeout)
    proto = factory.buildProtocol(IPv4Address("TCP", "tracker.test", 8998))
    transport = StringTransport()
    proto.makeConnection(transport)
    return reactor, outcome, proto, transport, factory


class PlainHTTPTests:
    """One GET, read to close, status line parsed."""

    def test_request_bytes_and_reply(self):
        """It sends one HTTP/1.0 GET with Host and Connection: close, and reads
        the status, reason phrase and body once the server closes."""
        _, outcome, proto, transport, _ = start()
        assert transport.value() == (b"GET /announce?info_hash=%41%41&port=1 HTTP/1.0\r\n"
                                     b"Host: tracker.test:8998\r\nUser-Agent: murder\r\n"
                                     b"Connection: close\r\n\r\n")
        proto.dataReceived(b"HTTP/1.0 400 Invalid Request\r\nContent-Length: 3\r\n\r\nd1e")
        assert outcome == []
        proto.connectionLost(None)
        (response,) = outcome
        assert response == Response(400, b"d1e", b"Invalid Request")
        body: list = []
        PlainHTTP.content(response).addCallback(body.append)
        assert body == [b"d1e"]

    def test_timeout(self):
        """No reply within the timeout: HTTPError naming it, the dial is dropped."""
        reactor, outcome, _, _, _ = start(timeout=3.0)
        reactor.advance(2.9)
        assert outcome == []
        reactor.advance(0.2)
        (failure,) = outcome
        assert failure.check(HTTPError) and "no reply within 3s" in str(failure.value)

    def test_reply_too_large(self):
        """A reply beyond MAX_BODY fails and aborts the connection."""
        _, outcome, proto, transport, _ = start()
        proto.dataReceived(b"x" * (MAX_BODY + 1))
        (failure,) = outcome
        assert failure.check(HTTPError) and "larger than" in str(failure.value)
        assert transport.disconnecting

    def test_garbage_and_empty_replies(self):
        """A closed connection without a status line is an HTTPError, not a crash."""
        _, outcome, proto, _, _ = start()
        proto.dataReceived(b"not http at all")
        proto.connectionLost(None)
        assert outcome[0].check(HTTPError) and "malformed" in str(outcome[0].value)
        _, outcome, proto, _, _ = start()
        proto.connectionLost(None)
        assert "without a reply" in str(outcome[0].value)

    def test_refused(self):
        """A refused dial fails the GET with the connection error."""
        _, outcome, _, _, factory = start()
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        assert outcome[0].check(ConnectionRefusedError)

    @pytest.mark.parametrize("url", ["https://t/announce", "udp://t:1/announce", "http:///x"])
    def test_not_http(self, url):
        """Only http:// URLs with a host: others fail at once, without a dial."""
        reactor = MemoryReactorClock()
        outcome: list = []
        PlainHTTP(reactor).get(url).addBoth(outcome.append)
        assert outcome[0].check(HTTPError) and reactor.tcpClients == []


class AgainstOurTrackerTests:
    """The production client against the production tracker protocol, in memory."""

    def test_announce_round_trip(self):
        """A started announce through PlainHTTP gets the tracker's bencoded reply."""
        tracker = Tracker()
        info_hash = b"\x11" * 20
        url = ("http://tracker.test:8998/announce?info_hash=" + quote_from_bytes(info_hash)
               + "&peer_id=" + "P" * 20 + "&port=6881&uploaded=0&downloaded=0&left=5"
               "&compact=1&event=started")
        _, outcome, factory = dial(url)
        client = factory.buildProtocol(IPv4Address("TCP", "tracker.test", 8998))
        server = tracker.factory.buildProtocol(None)
        s_addr = IPv4Address("TCP", "127.0.0.1", 8998)
        c_addr = IPv4Address("TCP", "127.0.0.1", 40000)
        client_tr = iosim.FakeTransport(client, isServer=False, hostAddress=c_addr,
                                        peerAddress=s_addr)
        server_tr = iosim.FakeTransport(server, isServer=True, hostAddress=s_addr,
                                        peerAddress=c_addr)
        pump = iosim.connect(server, server_tr, client, client_tr, greet=False,
                             clock=tracker.clock)
        pump.flush()
        (response,) = outcome
        assert response.code == 200
        reply = bencode.decode(response.body)
        assert reply[b"incomplete"] == 1 and b"interval" in reply
        assert tracker.store.peer_count == 1
