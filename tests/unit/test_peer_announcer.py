"""Unit tests for murder.peer.announcer with treq.testing.StubTreq and a Clock."""

from __future__ import annotations

import socket
import struct

import bencodepy
import pytest
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.logger import formatEvent
from twisted.web import resource

from murder.errors import AnnounceError, TrackerRefused, TrackerUnreachable
from murder.peer.announcer import Announcer, build_query, parse_response, shown

IH = bytes(range(100, 120))
PID = b"-MU0100-\x00\xff%&=+ abcdefg"[:20]
URL_A = "http://tracker.test/a/announce"
URL_B = "http://tracker.test/b/announce"


class ScriptedTracker(resource.Resource):
    """A tracker whose answers the test scripts per path; records every request.

    ``answers[path]`` is a list of ``(code, body)`` consumed in order; the last
    one repeats.  Each request is recorded as ``(time, path, query dict)``
    with raw byte values.
    """

    isLeaf = True

    def __init__(self, clock: Clock, answers: dict[bytes, list[tuple[int, bytes]]]) -> None:
        super().__init__()
        self.clock = clock
        self.answers = answers
        self.requests: list[tuple[float, bytes, dict]] = []

    def render_GET(self, request):  # noqa: N802
        self.requests.append((self.clock.seconds(), request.path,
                              {k.decode(): v[0] for k, v in request.args.items()}))
        script = self.answers[request.path]
        code, body = script.pop(0) if len(script) > 1 else script[0]
        request.setResponseCode(code)
        return body

    def events(self) -> list[bytes | None]:
        return [q.get("event") for _, _, q in self.requests]


def ok(interval: int = 15, peers=b"", **extra) -> tuple[int, bytes]:
    reply = {b"interval": interval, b"peers": peers}
    reply.update({k.encode(): v for k, v in extra.items()})
    return 200, bencodepy.encode(reply)


def refused(reason: bytes = b"go away") -> tuple[int, bytes]:
    return 200, bencodepy.encode({b"failure reason": reason})


class Harness:
    """An Announcer against a ScriptedTracker, with replies collected."""

    def __init__(self, answers, urls=(URL_A,), **kw) -> None:
        self.clock = Clock()
        self.tracker = ScriptedTracker(self.clock, answers)
        self.stub = StubTreq(self.tracker)
        self.replies = []
        self.stats = (100, 200, 300)
        self.announcer = Announcer(self.clock, self.stub, urls, IH, PID, 6881, "10.1.2.3",
                                   lambda: self.stats, self.replies.append, **kw)

    def advance(self, seconds: float, step: float = 0.25) -> None:
        """Move the clock in small steps, letting StubTreq deliver responses."""
        end = self.clock.seconds() + seconds
        self.clock.advance(0)
        self.stub.flush()
        while self.clock.seconds() < end - 1e-9:
            self.clock.advance(min(step, end - self.clock.seconds()))
            self.stub.flush()


def result_of(d):
    out = []
    d.addBoth(out.append)
    return out


class QueryTests:
    """build_query encodes BEP 3 parameters exactly."""

    def test_query(self):
        """Raw bytes are percent-encoded; ip, event and numwant are included."""
        q = build_query(b"\x00\x01 /", b"abc", 6881, 1, 2, 3, "started", "10.0.0.1", 50)
        assert q == ("info_hash=%00%01%20%2F&peer_id=abc&port=6881&uploaded=1&downloaded=2"
                     "&left=3&compact=1&numwant=50&event=started&ip=10.0.0.1")

    def test_no_event_no_ip(self):
        """A regular re-announce has no event= and, without --ip, no ip=."""
        q = build_query(b"x", b"y", 1, 0, 0, 0, None, None, 500)
        assert "event=" not in q and "ip=" not in q


class ParseResponseTests:
    """parse_response: compact and dict peers, failures, garbage."""

    def test_compact_peers(self):
        """BEP 23 compact peers: 6 bytes each, no peer ids."""
        blob = socket.inet_aton("10.0.0.1") + struct.pack(">H", 6881) + \
            socket.inet_aton("192.168.1.254") + struct.pack(">H", 65535)
        reply = parse_response(bencodepy.encode({b"interval": 30, b"peers": blob,
                                                 b"complete": 2, b"incomplete": 5}))
        assert reply.peers == [(("10.0.0.1", 6881), None), (("192.168.1.254", 65535), None)]
        assert (reply.interval, reply.complete, reply.incomplete) == (30.0, 2, 5)

    def test_compact_peers6(self):
        """BEP 7 peers6: 18 bytes each."""
        blob = socket.inet_pton(socket.AF_INET6, "fd00::1") + struct.pack(">H", 7000)
        reply = parse_response(bencodepy.encode({b"peers": b"", b"peers6": blob}))
        assert reply.peers == [(("fd00::1", 7000), None)]

    def test_dict_peers(self):
        """Non-compact peers keep their 20-byte id; malformed entries are skipped."""
        pid = b"P" * 20
        reply = parse_response(bencodepy.encode({b"interval": 15, b"peers": [
            {b"ip": b"10.0.0.2", b"port": 7000, b"peer id": pid},
            {b"ip": b"10.0.0.3", b"port": 7001, b"peer id": b"short"},
            {b"ip": b"10.0.0.4", b"port": 0},
            {b"ip": b"10.0.0.5", b"port": 70000},
            {b"port": 7002},
            b"not a dict",
        ]}))
        assert reply.peers == [(("10.0.0.2", 7000), pid), (("10.0.0.3", 7001), None)]

    def test_interval_defaults(self):
        """A missing or non-positive interval falls back to 15 s."""
        assert parse_response(bencodepy.encode({b"peers": b""})).interval == 15.0
        assert parse_response(bencodepy.encode({b"interval": -3})).interval == 15.0
        assert parse_response(bencodepy.encode({b"interval": b"x"})).interval == 15.0

    @pytest.mark.parametrize("body, message", [
        (b"<html>oops</html>", "tracker sent no bencode"),
        (b"", "tracker sent no bencode"),
        (b"i42e", "tracker reply is not a dict"),
        (bencodepy.encode({b"failure reason": b"unregistered torrent"}),
         "tracker refused: unregistered torrent"),
        (bencodepy.encode({b"peers": b"12345"}), "compact peers of 5 bytes"),
        (bencodepy.encode({b"peers": b"", b"peers6": b"1" * 17}), "compact peers of 17 bytes"),
    ])
    def test_garbage(self, body, message):
        """Garbage or refusals raise AnnounceError with a readable reason."""
        with pytest.raises(AnnounceError) as e:
            parse_response(body)
        assert str(e.value).startswith(message)


class AnnouncerTests:
    """Announcer timing, events, retries and failover."""

    def test_started_announce(self):
        """The first announce carries event=started and every BEP 3 field; start() fires."""
        peer = socket.inet_aton("10.0.0.7") + struct.pack(">H", 7777)
        h = Harness({b"/a/announce": [ok(peers=peer)]})
        fired = result_of(h.announcer.start())
        h.advance(0)
        assert len(fired) == 1 and fired[0].peers == [(("10.0.0.7", 7777), None)]
        assert h.replies == fired
        _, path, q = h.tracker.requests[0]
        assert path == b"/a/announce"
        assert q == {"info_hash": IH, "peer_id": PID, "port": b"6881", "uploaded": b"100",
                     "downloaded": b"200", "left": b"300", "compact": b"1",
                     "numwant": b"500", "event": b"started", "ip": b"10.1.2.3"}

    def test_reannounce_at_interval(self):
        """After a success the next announce comes one interval later, with no event."""
        peer = socket.inet_aton("10.0.0.7") + struct.pack(">H", 7777)
        h = Harness({b"/a/announce": [ok(interval=30, peers=peer)]})
        h.announcer.start()
        h.advance(29.5)
        assert len(h.tracker.requests) == 1
        h.advance(1)
        assert [t for t, _, _ in h.tracker.requests] == [0, 30]
        assert h.tracker.events() == [b"started", None]

    def test_no_source_yet_means_asking_again_soon(self):
        """A downloading peer whose tracker knows no source for it (no peers,
        or complete=0: peers started before the seeder) asks again after
        ``lonely_interval`` (5 s), not the tracker's 30 minutes; once a seed
        is listed, the tracker's interval holds; a seed itself keeps it."""
        peer = socket.inet_aton("10.0.0.7") + struct.pack(">H", 7777)
        h = Harness({b"/a/announce": [ok(interval=1800), ok(interval=1800, peers=peer,
                                                              complete=0),
                                      ok(interval=1800, peers=peer, complete=1)]})
        h.announcer.start()
        h.advance(11)
        assert [t for t, _, _ in h.tracker.requests] == [0, 5, 10]
        h.advance(100)
        assert len(h.tracker.requests) == 3
        seed = Harness({b"/a/announce": [ok(interval=1800)]})
        seed.stats = (100, 200, 0)
        seed.announcer.start()
        seed.advance(100)
        assert len(seed.tracker.requests) == 1

    def test_failure_backoff_and_failover(self):
        """A refusal moves to the next URL after a backoff; success there resolves start()."""
        h = Harness({b"/a/announce": [refused()], b"/b/announce": [refused(), ok()]},
                    urls=(URL_A, URL_B))
        fired = result_of(h.announcer.start())
        h.advance(5)
        paths = [(t, p) for t, p, _ in h.tracker.requests[:3]]
        # A at 0, B after 0.5 s, A again after 1 s more, then B succeeds after 2 s more.
        assert paths == [(0, b"/a/announce"), (0.5, b"/b/announce"), (1.5, b"/a/announce")]
        assert h.tracker.requests[3][:2] == (3.5, b"/b/announce")
        assert len(fired) == 1 and not isinstance(fired[0], Exception)
        # The started event was retried until it succeeded.
        assert h.tracker.events()[:4] == [b"started"] * 4

    def test_http_error_is_a_failure(self):
        """An HTTP 500 with a non-bencoded body is reported with its status line and retried."""
        h = Harness({b"/a/announce": [(500, b"Internal Server Error"), ok()]})
        fired = result_of(h.announcer.start())
        h.advance(1)
        assert len(h.tracker.requests) == 2 and len(fired) == 1
        assert h.announcer._last_error == "HTTP 500 Internal Server Error"

    def test_http_error_shows_failure_reason(self):
        """A 4xx carrying a bencoded failure reason (opentracker's way) shows both, and
        giving up raises TrackerRefused with the real elapsed time, not 'no tracker'."""
        body = bencodepy.encode({b"failure reason": b"Requested download is not authorized"})
        h = Harness({b"/a/announce": [(400, body)]}, tracker_timeout=3)
        fired = result_of(h.announcer.start())
        h.advance(3.6)
        error = fired[0].value
        assert isinstance(error, TrackerRefused)
        assert error.answers == {
            URL_A: "HTTP 400 Bad Request: Requested download is not authorized"}
        assert 3 <= error.seconds <= 3.6
        assert str(error) == (f"tracker refused the announce for {round(error.seconds, 1):g}s: "
                              f"{URL_A}: HTTP 400 Bad Request: Requested download is "
                              "not authorized")

    def test_refused_and_unreachable_mixed(self):
        """One tracker refusing and one unreachable: TrackerRefused names each outcome."""
        from twisted.internet.error import ConnectionRefusedError

        class Half:
            def __init__(self, stub):
                self.stub = stub

            def get(self, url, timeout):
                if "/b/" in url:
                    from twisted.internet import defer
                    return defer.fail(ConnectionRefusedError())
                return self.stub.get(url, timeout=timeout)

            def content(self, response):
                return self.stub.content(response)

        h = Harness({b"/a/announce": [refused(b"unregistered torrent")]},
                    urls=(URL_A, URL_B), tracker_timeout=2)
        h.announcer.http = Half(h.stub)
        fired = result_of(h.announcer.start())
        h.advance(3)
        error = fired[0].value
        assert isinstance(error, TrackerRefused)
        assert error.answers[URL_A] == "tracker refused: unregistered torrent"
        assert error.answers[URL_B].startswith("unreachable: Connection was refused")

    def test_tracker_refused(self):
        """Trackers answer only refusals within tracker_timeout: start() fails with
        TrackerRefused listing what each one said, and never announces again."""
        h = Harness({b"/a/announce": [refused(b"nope")], b"/b/announce": [refused(b"go away")]},
                    urls=(URL_A, URL_B), tracker_timeout=5)
        fired = result_of(h.announcer.start())
        h.advance(4.9)
        assert fired == []
        h.advance(0.2)
        assert len(fired) == 1
        error = fired[0].value
        assert isinstance(error, TrackerRefused)
        assert error.answers == {URL_A: "tracker refused: nope", URL_B: "tracker refused: go away"}
        assert 5 <= error.seconds < 5.2
        assert str(error).startswith(
            f"tracker refused the announce for {round(error.seconds, 1):g}s: {URL_A}: ")
        count = len(h.tracker.requests)
        h.advance(60)
        assert len(h.tracker.requests) == count  # gave up for good

    def test_auth_token_never_in_logs_or_errors(self):
        """An announce URL's auth= token (a per-swarm secret) is redacted in the
        warning for a failed tracker and in TrackerUnreachable; it still goes out."""
        from twisted.logger import globalLogPublisher

        secret_url = URL_A + "?auth=0123456789abcdef0123456789abcdef&x=1"
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        try:
            h = Harness({b"/a/announce": [refused(b"nope")]}, urls=(secret_url,),
                        tracker_timeout=1)
            fired = result_of(h.announcer.start())
            h.advance(1.5)
        finally:
            globalLogPublisher.removeObserver(events.append)
        assert h.tracker.requests[0][2]["auth"] == b"0123456789abcdef0123456789abcdef"
        error = fired[0].value
        assert isinstance(error, TrackerRefused)
        assert "0123456789abcdef" not in str(error) and "auth=<redacted>&x=1" in str(error)
        warned = [formatEvent(e) for e in events if "tracker" in (e.get("log_format") or "")]
        assert warned and all("0123456789abcdef" not in w for w in warned)
        assert any("auth=<redacted>" in w for w in warned)

    def test_shown_url(self):
        assert shown("http://t/announce") == "http://t/announce"
        assert shown("http://t/a?AUTH=abc&b=2") == "http://t/a?AUTH=<redacted>&b=2"
        assert shown("http://t/a?b=2&auth=abc") == "http://t/a?b=2&auth=<redacted>"

    def test_later_failures_keep_retrying(self):
        """After the first success, failures never end the announcer; it keeps trying."""
        h = Harness({b"/a/announce": [ok(interval=10), refused()]}, tracker_timeout=5)
        fired = result_of(h.announcer.start())
        h.advance(100)
        assert len(fired) == 1
        assert len(h.tracker.requests) > 8

    def test_completed_event(self):
        """completed() announces at once with event=completed."""
        h = Harness({b"/a/announce": [ok(interval=1800)]})
        h.announcer.start()
        h.advance(1)
        h.stats = (5, 6, 0)
        h.announcer.completed()
        h.advance(0)
        assert h.tracker.events() == [b"started", b"completed"]
        assert h.tracker.requests[1][2]["left"] == b"0"

    def test_completed_before_first_reply(self):
        """completed() before the first reply is sent as the event of the next announce."""
        h = Harness({b"/a/announce": [refused(), ok()]})
        h.announcer.start()
        h.advance(0)
        h.announcer.completed()
        h.advance(1)
        assert h.tracker.events() == [b"started", b"completed"]

    def test_stop_sends_stopped(self):
        """stop() announces stopped once and schedules nothing more."""
        h = Harness({b"/a/announce": [ok(interval=5)]})
        h.announcer.start()
        h.advance(1)
        done = result_of(h.announcer.stop())
        h.advance(0)
        assert len(done) == 1 and done[0].interval == 5
        h.advance(60)
        assert h.tracker.events() == [b"started", b"stopped"]

    def test_stop_before_any_reply_sends_nothing(self):
        """If no tracker ever answered, stop() returns at once without a request."""
        h = Harness({b"/a/announce": [refused()]}, tracker_timeout=100)
        h.announcer.start()
        h.advance(0)
        done = result_of(h.announcer.stop())
        assert done == [None]
        h.advance(30)
        assert len(h.tracker.requests) == 1



class UnreachableTests:
    """Nothing answers: TrackerUnreachable with the real elapsed time."""

    def test_unreachable_real_elapsed(self):
        """Connection failures only: TrackerUnreachable, its seconds the time really waited."""
        from twisted.internet import defer
        from twisted.internet.error import ConnectionRefusedError

        class Down:
            def get(self, url, timeout):
                return defer.fail(ConnectionRefusedError())

        clock = Clock()
        announcer = Announcer(clock, Down(), (URL_A,), IH, PID, 6881, None, lambda: (0, 0, 1),
                              lambda r: None, tracker_timeout=7)
        fired = result_of(announcer.start())
        for _ in range(100):
            clock.advance(0.25)
        error = fired[0].value
        assert isinstance(error, TrackerUnreachable)
        assert 7 <= error.seconds < 8
        assert str(error).startswith(f"no tracker answered within {round(error.seconds, 1):g}s "
                                     f"({URL_A}): Connection was refused")


class DictOrCompactTests:
    """compact=1 is asked, but a dictionary peer list (a tracker ignoring it) is read too."""

    def test_dict_reply_to_compact_request(self):
        """A tracker answering compact=1 with BEP 3 dicts still yields the peers."""
        pid = b"Q" * 20
        body = bencodepy.encode({b"interval": 15, b"peers": [
            {b"ip": b"10.0.0.9", b"port": 6000, b"peer id": pid}]})
        h = Harness({b"/a/announce": [(200, body)]})
        fired = result_of(h.announcer.start())
        h.advance(0)
        assert h.tracker.requests[0][2]["compact"] == b"1"
        assert fired[0].peers == [(("10.0.0.9", 6000), pid)]
