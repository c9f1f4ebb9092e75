"""A small HTTP/1.0 and 1.1 server for the tracker, in place of twisted.web.

Tracker traffic is tiny GET requests without bodies, each answered from
memory.  Measured under load, twisted.web spent most of every announce
building ``Request`` objects, header maps and the query dict; this protocol
parses just what a tracker needs and hands the request target to
:class:`~murder.tracker.app.TrackerApp`, which decides every answer.

What it speaks:

- ``GET`` and ``HEAD`` (other methods: 405 with ``Allow``); requests with a
  body (``Content-Length`` > 0: 413, ``Transfer-Encoding``: 501) are refused
  and the connection closed, since nothing a tracker serves takes one;
- keep-alive (HTTP/1.1 by default, HTTP/1.0 with ``Connection: keep-alive``),
  ``Connection: close``, and pipelining (answers in request order);
- CRLF or bare LF line ends, empty lines before a request; a bare CR is a
  400 (all three per RFC 9112 2.2);
- bounded input: request line plus headers at most :data:`MAX_HEAD` bytes
  (414 if the request line alone is longer, else 431) and
  :data:`MAX_HEADERS` fields; malformed request lines or fields get 400,
  other HTTP versions 505, and every error answer closes the connection;
- back-pressure: a client that pipelines without reading its answers stops
  being read (the transport's write buffer is the bound);
- an idle timeout on the injected clock.

Every error answer is a bencoded ``failure reason`` made by
:meth:`TrackerApp.refuse`.  Being a plain :class:`Protocol` and
:class:`Factory`, it runs on any Twisted server endpoint (``tcp:``,
``tcp6:``, ``ssl:``, ``unix:``).
"""

from __future__ import annotations

import email.utils
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from murder.auth import redact
from murder.tracker.app import Reply, TrackerApp

log = Logger()

#: Request line plus header fields, in bytes.  twisted.web allowed 16 KiB per line.
MAX_HEAD = 16384
#: Header fields per request; tracker clients send a handful.
MAX_HEADERS = 64
#: Seconds a connection may stay silent before it is closed.
IDLE_TIMEOUT = 30.0

_REASONS = {
    200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
    413: b"Content Too Large", 414: b"URI Too Long", 431: b"Request Header Fields Too Large",
    500: b"Internal Server Error", 501: b"Not Implemented",
    505: b"HTTP Version Not Supported",
}
_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")


class _HTTPError(Exception):
    """A request the server answers itself, then closes the connection."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class TrackerHTTPProtocol(Protocol):
    """One client connection: frames requests, asks the app, writes answers.

    States are the buffer plus two flags: ``_paused`` (the client is not
    reading; stop handling requests until the transport drains) and
    ``_closing`` (an answer asked to close; ignore any further input).
    """

    #: The TCP (or TLS) transport, also a push consumer; set by makeConnection.
    transport: Any

    def __init__(self, factory: TrackerHTTPFactory) -> None:
        self.factory = factory
        self.app = factory.app
        self._buffer = b""
        self._paused = False
        self._closing = False
        self._remote = ""
        self._timeout: Any = None
        self._registered = False

    # ------------------------------------------------------------ lifecycle

    def connectionMade(self) -> None:  # noqa: N802 (Twisted API)
        host = getattr(self.transport.getPeer(), "host", "")
        self._remote = host if isinstance(host, str) else ""
        self.transport.registerProducer(self, True)
        self._registered = True
        self._timeout = self.factory.clock.callLater(self.factory.idle_timeout, self._idle)

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        self._closing = True
        self._buffer = b""
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None

    def _idle(self) -> None:
        self._timeout = None
        self._closing = True
        if self._paused:
            # The client neither reads nor writes: do not wait for it to drain.
            self.transport.abortConnection()
        else:
            self._lose()

    # ---------------------------------------------------- IPushProducer

    def pauseProducing(self) -> None:  # noqa: N802
        """The transport's write buffer is full: stop reading and answering."""
        if not self._paused:
            self._paused = True
            self.transport.pauseProducing()

    def resumeProducing(self) -> None:  # noqa: N802
        """The client caught up: answer what is buffered, then read again."""
        if self._paused and not self._closing:
            self._paused = False
            self.transport.resumeProducing()
            self._serve()

    def stopProducing(self) -> None:  # noqa: N802
        self._closing = True

    # ------------------------------------------------------------- requests

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self._closing:
            return
        if self._timeout is not None:
            self._timeout.reset(self.factory.idle_timeout)
        self._buffer = self._buffer + data if self._buffer else data
        if not self._paused:
            self._serve()

    def _serve(self) -> None:
        """Answer every complete request in the buffer, in order; never raises."""
        try:
            self._serve_buffered()
        except _HTTPError as e:
            self._error(e.code, e.reason)
        except Exception:
            if self.app.rejected_log.allow():
                log.failure("HTTP server bug; closing the connection to {peer}",
                            peer=self._remote)
            self._error(500, "internal tracker error")

    def _serve_buffered(self) -> None:
        buf = self._buffer
        pos = 0
        size = len(buf)
        while not self._paused and not self._closing:
            # Empty lines before a request line are ignored (RFC 9112 2.2).
            while pos < size and buf[pos] in (10, 13):
                pos += 1
            crlf = buf.find(b"\n\r\n", pos)
            lf = buf.find(b"\n\n", pos, crlf + 1 if crlf >= 0 else size)
            end = lf if lf >= 0 else crlf
            if end < 0:
                if size - pos > MAX_HEAD:
                    self._too_long(buf[pos:])
                break
            if end - pos > MAX_HEAD:
                self._too_long(buf[pos:end])
            head = buf[pos:end]
            pos = end + (2 if end == lf else 3)
            self._request(head)
        if self._closing:
            self._buffer = b""
        else:
            self._buffer = buf[pos:] if pos else buf

    @staticmethod
    def _too_long(head: bytes) -> None:
        if b"\n" not in head[:MAX_HEAD]:
            raise _HTTPError(414, "request line too long")
        raise _HTTPError(431, "request header too large")

    def _request(self, head: bytes) -> None:
        """Answer one request whose request line and fields are ``head``."""
        if b"\r" in head:
            head = head.replace(b"\r\n", b"\n")
            if head[-1:] == b"\r":
                head = head[:-1]
            if b"\r" in head:
                raise _HTTPError(400, "bare CR in request")  # RFC 9112 2.2
        lines = head.split(b"\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            raise _HTTPError(400, "malformed request line")
        method, target, version = parts
        if version not in _VERSIONS:
            if version.startswith(b"HTTP/"):
                raise _HTTPError(505, "only HTTP/1.0 and HTTP/1.1 are supported")
            raise _HTTPError(400, "malformed request line")
        if not target:
            raise _HTTPError(400, "malformed request line")
        keep_alive = version == b"HTTP/1.1"
        if len(lines) > 1:
            if len(lines) > MAX_HEADERS + 1:
                raise _HTTPError(431, "too many header fields")
            keep_alive = self._fields(lines, keep_alive)
        if method == b"GET" or method == b"HEAD":
            reply = self.app.handle(target, self._remote)
            extra = b""
        else:
            reply = self.app.refuse(405, "only GET and HEAD are supported", target,
                                    self._remote)
            extra = b"Allow: GET, HEAD\r\n"
        if self.factory.verbose:
            log.info("{method} {uri!r} from {peer}: {code}", method=method.decode("latin-1"),
                     uri=redact(target[:200]), peer=self._remote, code=reply.code)
        self._write(version, reply, keep_alive, extra, method == b"HEAD")

    def _fields(self, lines: list[bytes], keep_alive: bool) -> bool:
        """Check the header fields; returns whether to keep the connection."""
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name[-1] in b" \t" or line[0] in b" \t":
                # Obsolete line folding (a leading space) is refused too (RFC 9112 5.2).
                raise _HTTPError(400, "malformed header field")
            name = name.lower()
            if name == b"connection":
                tokens = {t.strip() for t in value.lower().split(b",")}
                if b"close" in tokens:
                    keep_alive = False
                elif b"keep-alive" in tokens:
                    keep_alive = True
            elif name == b"content-length":
                value = value.strip()
                if not value.isdigit():
                    raise _HTTPError(400, "malformed Content-Length")
                if int(value):
                    raise _HTTPError(413, "request bodies are not accepted")
            elif name == b"transfer-encoding":
                raise _HTTPError(501, "request bodies are not accepted")
        return keep_alive

    # -------------------------------------------------------------- answers

    def _write(self, version: bytes, reply: Reply, keep_alive: bool, extra: bytes = b"",
               head_only: bool = False) -> None:
        if keep_alive:
            if version == b"HTTP/1.0":
                extra += b"Connection: keep-alive\r\n"
        else:
            extra += b"Connection: close\r\n"
        body = reply.body
        out = b"%s %d %s\r\nDate: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n" % (
            version, reply.code, _REASONS.get(reply.code, b"Unknown"), self.factory.date(),
            reply.content_type, len(body), extra)
        self.transport.write(out if head_only else out + body)
        if not keep_alive:
            self._closing = True
            self._lose()

    def _lose(self) -> None:
        """Close after the buffered answers are sent.

        The producer is unregistered first: a TLS transport
        (``TLSMemoryBIOProtocol``) postpones its close until no producer is
        registered, so over ``ssl:`` a ``Connection: close`` answer would
        otherwise leave the connection open until the idle timeout.
        """
        if self._registered:
            self._registered = False
            self.transport.unregisterProducer()
        self.transport.loseConnection()

    def _error(self, code: int, reason: str) -> None:
        """Answer an HTTP-level error and close; the rest of the input is dropped."""
        if self._closing:
            return
        self._buffer = b""
        self._write(b"HTTP/1.1", self.app.refuse(code, reason, b"", self._remote),
                    keep_alive=False)


class TrackerHTTPFactory(Factory):
    """Builds one :class:`TrackerHTTPProtocol` per connection around a shared app."""

    def __init__(self, app: TrackerApp, clock: IReactorTime, *,
                 idle_timeout: float = IDLE_TIMEOUT, verbose: bool = False) -> None:
        self.app = app
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.verbose = verbose
        self._date_second = -1
        self._date = b""

    def buildProtocol(self, addr: Any) -> TrackerHTTPProtocol:  # noqa: N802
        return TrackerHTTPProtocol(self)

    def date(self) -> bytes:
        """The ``Date`` header value, formatted at most once per second."""
        now = int(self.clock.seconds())
        if now != self._date_second:
            self._date_second = now
            self._date = email.utils.formatdate(now, usegmt=True).encode("ascii")
        return self._date
