"""A minimal HTTP/1.0 GET client for plain ``http://`` tracker announces.

Why not treq here: importing treq pulls in twisted.web.client and pyOpenSSL,
about a third of a peer's start-up time, and every peer of a deploy starts
at once on the same hosts.  An announce is one GET with a small bencoded
reply, so this client does exactly that: connect, send, read to close (at most
``MAX_BODY`` bytes), parse the status line.  ``https://`` trackers still go
through treq (see :func:`murder.peer.httpclients.http_client`).  It offers the two
treq calls the announcer uses, ``get(url, timeout=)`` and ``content(response)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IAddress, IConnector
from twisted.python.failure import Failure

MAX_BODY = 4 * 2**20


class HTTPError(Exception):
    """The tracker's HTTP answer could not be read."""


@dataclass(frozen=True)
class Response:
    code: int
    body: bytes
    #: The status line's reason phrase (``Invalid Request``), for error messages.
    phrase: bytes = b""


class _GetProtocol(protocol.Protocol):
    def __init__(self, request: bytes, result: defer.Deferred[Response]) -> None:
        self.request = request
        self.result = result
        self.chunks: list[bytes] = []
        self.size = 0

    def connectionMade(self) -> None:  # noqa: N802
        assert self.transport is not None
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.size += len(data)
        if self.size > MAX_BODY:
            self.chunks = []
            self._finish(HTTPError(f"reply larger than {MAX_BODY} bytes"))
            transport: Any = self.transport  # an ITCPTransport: it can abort
            transport.abortConnection()
            return
        self.chunks.append(data)

    def connectionLost(self, reason: Failure | None = None) -> None:  # noqa: N802
        raw = b"".join(self.chunks)
        head, sep, body = raw.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].split()
        if not sep or len(status) < 2 or not status[1].isdigit():
            self._finish(HTTPError("malformed HTTP reply" if raw else "connection closed "
                                   "without a reply"))
            return
        phrase = head.split(b"\r\n", 1)[0].split(None, 2)[2:]
        self._finish(Response(int(status[1]), body, phrase[0].strip() if phrase else b""))

    def _finish(self, outcome: Response | Exception) -> None:
        if not self.result.called:
            if isinstance(outcome, Exception):
                self.result.errback(outcome)
            else:
                self.result.callback(outcome)


class _GetFactory(protocol.ClientFactory):
    noisy = False

    def __init__(self, request: bytes, result: defer.Deferred[Response]) -> None:
        self.request = request
        self.result = result

    def buildProtocol(self, addr: IAddress | None) -> _GetProtocol:  # noqa: N802
        return _GetProtocol(self.request, self.result)

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:  # noqa: N802
        if not self.result.called:
            self.result.errback(reason)


class PlainHTTP:
    """``get``/``content`` for ``http://`` URLs over the given reactor."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def get(self, url: str, timeout: float = 10.0) -> defer.Deferred[Response]:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            return defer.fail(HTTPError(f"not an http:// URL: {url}"))
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        host = parts.hostname
        port = parts.port or 80
        host_header = parts.netloc.rsplit("@", 1)[-1]
        request = (f"GET {path} HTTP/1.0\r\nHost: {host_header}\r\n"
                   "User-Agent: murder\r\nConnection: close\r\n\r\n").encode("latin-1")
        result: defer.Deferred[Response] = defer.Deferred()
        connector = self.reactor.connectTCP(host, port, _GetFactory(request, result),
                                            timeout=timeout)
        timer = self.reactor.callLater(timeout, self._timeout, result, connector, timeout)

        def done(outcome: Any) -> Any:
            if timer.active():
                timer.cancel()
            return outcome

        return result.addBoth(done)

    @staticmethod
    def _timeout(result: defer.Deferred[Response], connector: IConnector, timeout: float) -> None:
        if not result.called:
            result.errback(HTTPError(f"no reply within {timeout:g}s"))
            connector.disconnect()

    @staticmethod
    def content(response: Response) -> defer.Deferred[bytes]:
        return defer.succeed(response.body)
