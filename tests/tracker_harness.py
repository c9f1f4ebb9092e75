"""In-memory HTTP client for the tracker's server protocol (tests only).

Requests are written into :class:`TrackerHTTPProtocol` over a
``StringTransport``; answers are parsed by the standard library's
:class:`http.client.HTTPResponse`, an HTTP parser independent of ours.
"""

from __future__ import annotations

import http.client
import io
import random
from dataclasses import dataclass

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from murder.tracker.fasthttp import TrackerHTTPFactory, TrackerHTTPProtocol
from murder.tracker.store import PeerStore
from murder.tracker.app import TrackerApp


@dataclass
class Response:
    """One parsed answer."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


class _Stream(io.BytesIO):
    """http.client closes its stream after each body; later answers follow in it."""

    def close(self) -> None:
        pass


class _Socket:
    def __init__(self, stream: io.BytesIO) -> None:
        self._stream = stream

    def makefile(self, *_args: object, **_kw: object) -> io.BytesIO:
        return self._stream


def parse_responses(data: bytes, methods: list[str]) -> list[Response]:
    """Parse consecutive answers to requests made with ``methods`` (in order)."""
    stream = _Stream(data)
    out = []
    for method in methods:
        if stream.tell() == len(data):
            break
        raw = http.client.HTTPResponse(_Socket(stream), method=method)  # type: ignore[arg-type]
        raw.begin()
        body = raw.read()
        out.append(Response(raw.status, raw.headers, body))
    assert stream.tell() == len(data), f"trailing bytes: {data[stream.tell():]!r}"
    return out


class Connection:
    """One client connection to the protocol."""

    def __init__(self, factory: TrackerHTTPFactory, client: str = "127.0.0.1") -> None:
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", client, 40000))
        self.protocol: TrackerHTTPProtocol = factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def take(self) -> bytes:
        """Bytes written to the client since the last call."""
        data = self.transport.value()
        self.transport.clear()
        return data

    def exchange(self, data: bytes, methods: list[str]) -> list[Response]:
        self.send(data)
        return parse_responses(self.take(), methods)


class Tracker:
    """A store, a :class:`TrackerApp` and the HTTP factory, on a Clock."""

    def __init__(self, idle_timeout: float = 30.0, **kw) -> None:
        self.clock = Clock()
        self.store = PeerStore(self.clock, rng=random.Random(1),
                               **{k: kw.pop(k) for k in list(kw) if k.startswith("max_")})
        self.app = TrackerApp(self.store, **kw)
        self.factory = TrackerHTTPFactory(self.app, self.clock, idle_timeout=idle_timeout)

    def connect(self, client: str = "127.0.0.1") -> Connection:
        return Connection(self.factory, client)

    def request(self, target: str | bytes, client: str = "127.0.0.1",
                method: str = "GET") -> Response:
        """One GET (or ``method``) of ``target`` on a fresh connection."""
        if isinstance(target, str):
            target = target.encode("latin-1")
        conn = self.connect(client)
        (response,) = conn.exchange(b"%s %s HTTP/1.1\r\nHost: tracker.test\r\n\r\n"
                                    % (method.encode(), target), [method])
        return response
