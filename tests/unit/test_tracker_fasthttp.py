"""Unit tests for murder.tracker.fasthttp: HTTP framing, keep-alive, limits, in memory."""

from __future__ import annotations

import bencodepy
import pytest
from hypothesis import given, settings, strategies as st

from murder.tracker import fasthttp
from tracker_harness import Tracker, parse_responses

IH = b"%AA" * 20
ANNOUNCE = b"/announce?info_hash=" + IH + b"&peer_id=-TT0001-000000000001&port=6881&left=5&compact=1"


def get(target: bytes = b"/scrape", version: bytes = b"HTTP/1.1", *fields: bytes) -> bytes:
    return b"GET %s %s\r\n%s\r\n" % (target, version, b"".join(f + b"\r\n" for f in fields))


def reason(body: bytes) -> bytes:
    return bencodepy.decode(body)[b"failure reason"]


class KeepAliveTests:
    """Connections persist per HTTP/1.1 and HTTP/1.0 rules; pipelined requests are answered in order."""

    def test_http11_keeps_the_connection(self):
        """Two HTTP/1.1 requests in turn on one connection both get answers; it stays open."""
        conn = Tracker().connect()
        (first,) = conn.exchange(get(ANNOUNCE, b"HTTP/1.1", b"Host: t"), ["GET"])
        (second,) = conn.exchange(get(b"/scrape"), ["GET"])
        assert (first.status, second.status) == (200, 200)
        assert first.header("connection") is None and not conn.closed
        assert bencodepy.decode(second.body)[b"files"][b"\xaa" * 20][b"incomplete"] == 1

    def test_pipelined_in_order(self):
        """Requests sent in one write are answered in the order they were sent."""
        conn = Tracker().connect()
        responses = conn.exchange(get(ANNOUNCE) + get(b"/nope") + get(b"/scrape"), ["GET"] * 3)
        assert [r.status for r in responses] == [200, 404, 200]
        assert b"peers" in bencodepy.decode(responses[0].body)
        assert b"files" in bencodepy.decode(responses[2].body)

    def test_connection_close(self):
        """Connection: close is honoured: the answer says so, the rest of the input is ignored."""
        conn = Tracker().connect()
        conn.send(get(b"/scrape", b"HTTP/1.1", b"Connection: Close") + get(b"/scrape"))
        (response,) = parse_responses(conn.take(), ["GET"])
        assert response.header("connection") == "close" and conn.closed

    def test_http10_closes_unless_keep_alive(self):
        """HTTP/1.0 closes by default and stays open with Connection: keep-alive."""
        conn = Tracker().connect()
        (plain,) = conn.exchange(get(b"/scrape", b"HTTP/1.0"), ["GET"])
        assert plain.header("connection") == "close" and conn.closed
        conn = Tracker().connect()
        (kept,) = conn.exchange(get(b"/scrape", b"HTTP/1.0", b"Connection: keep-alive"),
                                ["GET"])
        assert kept.header("connection") == "keep-alive" and not conn.closed
        assert conn.transport.value() == b""

    def test_bare_lf_and_leading_empty_lines(self):
        """LF-only line ends and empty lines before a request line are accepted."""
        conn = Tracker().connect()
        responses = conn.exchange(b"\r\n\nGET /scrape HTTP/1.1\nHost: t\n\nGET / HTTP/1.1\n\n",
                                  ["GET", "GET"])
        assert [r.status for r in responses] == [200, 200]
        assert responses[1].header("content-type").startswith("text/html")

    @settings(max_examples=150, deadline=None)
    @given(cuts=st.lists(st.integers(0, 400), max_size=12))
    def test_any_split(self, cuts):
        """However the bytes are cut into reads, the answers are the same."""
        stream = get(b"/scrape") + get(b"/nope", b"HTTP/1.1", b"Host: t", b"X-A: b") + get(b"/")
        tracker = Tracker()
        whole = tracker.connect().exchange(stream, ["GET"] * 3)
        conn = tracker.connect()
        previous = 0
        for cut in sorted(c % (len(stream) + 1) for c in cuts) + [len(stream)]:
            conn.send(stream[previous:cut])
            previous = cut
        pieces = parse_responses(conn.take(), ["GET"] * 3)
        assert [(r.status, r.body) for r in pieces] == [(r.status, r.body) for r in whole]

    def test_head(self):
        """HEAD gets the headers of the GET answer (with its length) and no body."""
        tracker = Tracker()
        tracker.request(ANNOUNCE)
        body = tracker.request(b"/scrape").body
        conn = tracker.connect()
        conn.send(get(b"/scrape").replace(b"GET", b"HEAD"))
        raw = conn.take()
        (head,) = parse_responses(raw, ["HEAD"])
        assert head.status == 200 and int(head.header("content-length")) == len(body)
        assert raw.endswith(b"\r\n\r\n") and not conn.closed

    def test_headers(self):
        """Answers carry Date (from the injected clock), Content-Type and Content-Length."""
        tracker = Tracker()
        tracker.clock.advance(86400)
        response = tracker.request(ANNOUNCE)
        assert response.header("date") == "Fri, 02 Jan 1970 00:00:00 GMT"
        assert response.header("content-type") == "text/plain"
        assert int(response.header("content-length")) == len(response.body)

    def test_absolute_form_target(self):
        """An absolute-form target (as proxies send) reaches the same path."""
        response = Tracker().request(b"http://tracker.test:8998/scrape")
        assert response.status == 200 and bencodepy.decode(response.body) == {b"files": {}}


class RefusalTests:
    """Requests the tracker cannot serve get a bencoded failure reason and the right code."""

    def test_other_methods(self):
        """POST without a body is 405 with Allow; the connection stays usable."""
        conn = Tracker().connect()
        (refused, after) = conn.exchange(b"POST /announce HTTP/1.1\r\n\r\n" + get(),
                                         ["POST", "GET"])
        assert refused.status == 405 and refused.header("allow") == "GET, HEAD"
        assert reason(refused.body) == b"only GET and HEAD are supported"
        assert after.status == 200

    @pytest.mark.parametrize("request_bytes, code, why", [
        (b"GET /scrape\r\n\r\n", 400, b"malformed request line"),
        (b"GET  /scrape HTTP/1.1\r\n\r\n", 400, b"malformed request line"),
        (b"GET /scrape HTTP/1.1 x\r\n\r\n", 400, b"malformed request line"),
        (b"GET /scrape FTP/1.1\r\n\r\n", 400, b"malformed request line"),
        (b"GET /scrape HTTP/2.0\r\n\r\n", 505, b"only HTTP/1.0 and HTTP/1.1 are supported"),
        (b"GET /sc\rrape HTTP/1.1\r\n\r\n", 400, b"bare CR in request"),
        (b"GET /scrape HTTP/1.1\r\nNoColon\r\n\r\n", 400, b"malformed header field"),
        (b"GET /scrape HTTP/1.1\r\nName : v\r\n\r\n", 400, b"malformed header field"),
        (b"GET /scrape HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400, b"malformed header field"),
        (b"GET /scrape HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400, b"malformed Content-Length"),
        (b"POST /announce HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 413,
         b"request bodies are not accepted"),
        (b"GET /scrape HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501,
         b"request bodies are not accepted"),
    ])
    def test_bad_requests_close(self, request_bytes, code, why):
        """Malformed requests get their code and reason, and the connection is closed."""
        conn = Tracker().connect()
        conn.send(request_bytes + get())
        (response,) = parse_responses(conn.take(), ["GET"])
        assert (response.status, reason(response.body)) == (code, why)
        assert response.header("connection") == "close" and conn.closed

    def test_zero_content_length_is_fine(self):
        """Content-Length: 0 is no body, so the GET is served."""
        (response,) = Tracker().connect().exchange(
            get(b"/scrape", b"HTTP/1.1", b"Content-Length: 0"), ["GET"])
        assert response.status == 200

    def test_uri_414_keeps_connection_when_framed(self):
        """A target over 8 KiB inside a complete head is 414 from the app; the connection stays."""
        conn = Tracker().connect()
        (long, after) = conn.exchange(get(b"/announce?x=" + b"a" * 9000) + get(), ["GET"] * 2)
        assert long.status == 414 and after.status == 200 and not conn.closed

    def test_endless_request_line_is_414(self):
        """A request line that never ends is cut at the head limit with 414; input stays bounded."""
        conn = Tracker().connect()
        conn.send(b"GET /announce?")
        for _ in range(20):
            conn.send(b"a" * 1000)
            if conn.closed:
                break
        assert len(conn.protocol._buffer) == 0
        (response,) = parse_responses(conn.take(), ["GET"])
        assert response.status == 414 and conn.closed

    def test_endless_headers_are_431(self):
        """Header fields past the head limit, or too many of them, give 431."""
        conn = Tracker().connect()
        conn.send(b"GET /scrape HTTP/1.1\r\n")
        while not conn.closed:
            conn.send(b"X-Filler: " + b"f" * 100 + b"\r\n")
        (response,) = parse_responses(conn.take(), ["GET"])
        assert (response.status, reason(response.body)) == (431, b"request header too large")
        conn = Tracker().connect()
        conn.send(get(b"/scrape", b"HTTP/1.1", *[b"X-%d: v" % i for i in
                                                range(fasthttp.MAX_HEADERS + 1)]))
        (response,) = parse_responses(conn.take(), ["GET"])
        assert (response.status, reason(response.body)) == (431, b"too many header fields")

    def test_app_bug_is_500_and_close(self):
        """A bug below the protocol becomes a bencoded 500 and a closed connection."""
        tracker = Tracker()

        def broken(target, remote):
            raise RuntimeError("boom")
        tracker.app.handle = broken
        conn = tracker.connect()
        conn.send(get())
        (response,) = parse_responses(conn.take(), ["GET"])
        assert response.status == 500 and conn.closed
        assert reason(response.body) == b"internal tracker error"


class FlowTests:
    """Idle connections are closed; a client that does not read stops being served."""

    def test_idle_timeout(self):
        """A connection silent for idle_timeout is closed; traffic restarts the wait."""
        tracker = Tracker(idle_timeout=10)
        conn = tracker.connect()
        tracker.clock.advance(9)
        conn.exchange(get(), ["GET"])
        tracker.clock.advance(9)
        assert not conn.closed
        tracker.clock.advance(1)
        assert conn.closed

    def test_idle_timer_cancelled_on_close(self):
        """A closed connection leaves no pending timer on the clock."""
        tracker = Tracker(idle_timeout=10)
        conn = tracker.connect()
        conn.send(get(b"/scrape", b"HTTP/1.0"))
        conn.protocol.connectionLost(None)
        assert tracker.clock.getDelayedCalls() == []

    def test_backpressure(self):
        """While the transport is full, requests wait unanswered and reading pauses; then resume."""
        tracker = Tracker()
        conn = tracker.connect()
        assert conn.transport.producer is conn.protocol
        conn.protocol.pauseProducing()
        assert conn.transport.producerState == "paused"
        conn.send(get() + get(b"/nope"))
        assert conn.take() == b""
        conn.protocol.resumeProducing()
        assert conn.transport.producerState == "producing"
        assert [r.status for r in parse_responses(conn.take(), ["GET"] * 2)] == [200, 404]

    def test_idle_while_paused_aborts(self):
        """A paused connection that goes idle is aborted, not left waiting to drain."""
        tracker = Tracker(idle_timeout=5)
        conn = tracker.connect()
        conn.protocol.pauseProducing()
        tracker.clock.advance(5)
        assert conn.transport.disconnecting
