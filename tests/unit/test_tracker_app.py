"""Unit tests for murder.tracker.app (TrackerApp) through the HTTP protocol, in memory."""

from __future__ import annotations

import json
from urllib.parse import quote_from_bytes, urlencode

import bencodepy
import pytest
from twisted.internet.task import Clock

from murder.tracker.announce_codec import TrustedNetworks
from murder.tracker.store import TorrentInfo
from murder.tracker.app import RateLimitedLog
from tracker_harness import Tracker as _Harness

IH = b"\xaa" * 19 + b"\x01"


class Tracker(_Harness):
    """The tracker in memory with a synchronous GET helper."""

    def get(self, path: str) -> tuple[int, bytes, bytes]:
        """(status, content-type, body) of GET ``path``."""
        response = self.request(path)
        return response.status, response.header("content-type").encode(), response.body

    def announce(self, n: int, ih: bytes = IH, **params) -> dict:
        query = {"peer_id": b"%020d" % n, "port": str(6000 + n), "left": "100",
                 "uploaded": "0", "downloaded": "0", "ip": f"10.0.0.{n}"}
        query.update(params)
        qs = "info_hash=" + quote_from_bytes(ih) + "&" + urlencode(
            {k: v for k, v in query.items() if v is not None})
        code, _, body = self.get("/announce?" + qs)
        assert code == 200
        return bencodepy.decode(body)


class AnnounceResourceTests:
    """/announce answers BEP 3 clients."""

    def test_compact_reply(self):
        """A compact announce gets counts, intervals and the other peers, not itself."""
        t = Tracker()
        t.announce(1, event="started", left="0")
        reply = t.announce(2, event="started", compact="1")
        assert reply == {b"complete": 1, b"incomplete": 1, b"interval": 15,
                         b"min interval": 5, b"peers": bytes([10, 0, 0, 1, 0x17, 0x71])}

    def test_dict_reply(self):
        """Without compact, peers are dicts; no_peer_id drops the ids."""
        t = Tracker()
        t.announce(1)
        assert t.announce(2)[b"peers"] == [
            {b"ip": b"10.0.0.1", b"peer id": b"%020d" % 1, b"port": 6001}]
        assert t.announce(2, no_peer_id="1")[b"peers"] == [{b"ip": b"10.0.0.1", b"port": 6001}]

    def test_peers6(self):
        """An IPv6 peer is handed out in peers6."""
        t = Tracker()
        t.announce(1, ip="fd00::1")
        reply = t.announce(2, compact="1")
        assert reply[b"peers"] == b"" and len(reply[b"peers6"]) == 18

    def test_numwant_and_stopped(self):
        """numwant limits the peers; stopped removes the peer and returns none."""
        t = Tracker(numwant_max=3)
        for n in range(1, 8):
            t.announce(n)
        assert len(t.announce(8, compact="1", numwant="100")[b"peers"]) == 18
        assert len(t.announce(8, compact="1", numwant="2")[b"peers"]) == 12
        reply = t.announce(8, compact="1", event="stopped")
        assert reply[b"peers"] == b"" and reply[b"incomplete"] == 7

    def test_ip_ignored_from_untrusted(self):
        """ip= from an untrusted network is ignored: the socket address is used."""
        t = Tracker(trusted=TrustedNetworks(["10.0.0.0/8"]))  # the harness is 127.0.0.1
        t.announce(1, ip="10.5.5.5")
        assert t.store.torrents[IH].peers[b"%020d" % 1].ip == "127.0.0.1"

    def test_configured_intervals(self):
        """interval and min interval come from the configuration."""
        t = Tracker(interval=30, min_interval=10)
        reply = t.announce(1)
        assert (reply[b"interval"], reply[b"min interval"]) == (30, 10)

    @pytest.mark.parametrize("query, reason", [
        ("info_hash=abc&peer_id=01234567890123456789&port=1&left=0",
         b"invalid info_hash: must be 20 bytes"),
        ("info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=x&port=1&left=0",
         b"invalid peer_id: must be 20 bytes"),
        ("info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=01234567890123456789&port=99999&left=0",
         b"invalid port: must be 1-65535"),
        ("info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=01234567890123456789&port=1&left=%ff",
         b"invalid left: not a non-negative integer"),
        ("info_hash=%%%&peer_id=&&&&port", b"invalid info_hash: must be 20 bytes"),
    ])
    def test_malformed_is_failure_200(self, query, reason):
        """Malformed announces get HTTP 200 with a bencoded failure reason."""
        code, ctype, body = Tracker().get("/announce?" + query)
        assert (code, ctype) == (200, b"text/plain")
        assert bencodepy.decode(body) == {b"failure reason": reason}

    def test_not_an_announce_is_400(self):
        """A request without info_hash and peer_id is not an announce: 400."""
        code, _, body = Tracker().get("/announce")
        assert code == 400 and b"failure reason" in bencodepy.decode(body)

    def test_unknown_path_and_long_uri(self):
        """Unknown paths get 404 and huge URIs 414, both bencoded."""
        t = Tracker()
        code, _, body = t.get("/nope")
        assert code == 404 and bencodepy.decode(body)[b"failure reason"]
        code, _, body = t.get("/announce?x=" + "a" * 10000)
        assert code == 414 and bencodepy.decode(body)[b"failure reason"]

    def test_cap_reason(self):
        """Past the torrent cap a new info hash gets a failure reason."""
        t = Tracker(max_torrents=1)
        t.announce(1)
        assert t.announce(1, ih=b"\x05" * 20) == {b"failure reason": b"tracker is full: too many torrents"}

    def test_internal_error_is_500_not_raise(self):
        """An unexpected bug becomes a bencoded 500, never an exception out of render."""
        t = Tracker()

        def broken(_req):
            raise RuntimeError("boom")
        t.store.announce = broken
        code, _, body = t.get("/announce?info_hash=aaaaaaaaaaaaaaaaaaaa"
                              "&peer_id=01234567890123456789&port=1&left=0")
        assert code == 500 and bencodepy.decode(body) == {b"failure reason": b"internal tracker error"}


class ScrapeResourceTests:
    """/scrape follows BEP 48."""

    def test_one_several_all(self):
        """One, several or (without info_hash) every torrent is reported."""
        t = Tracker()
        other = b"\xbb" * 20
        t.announce(1, left="0", event="completed")
        t.announce(2)
        t.announce(3, ih=other)
        one = bencodepy.decode(t.get("/scrape?info_hash=" + quote_from_bytes(IH))[2])
        assert one == {b"files": {IH: {b"complete": 1, b"incomplete": 1, b"downloaded": 1}}}
        both = bencodepy.decode(t.get("/scrape?info_hash=" + quote_from_bytes(IH)
                                      + "&info_hash=" + quote_from_bytes(other))[2])
        assert set(both[b"files"]) == {IH, other}
        every = bencodepy.decode(t.get("/scrape")[2])
        assert every == both
        unknown = bencodepy.decode(t.get("/scrape?info_hash=" + "c" * 20)[2])
        assert unknown == {b"files": {}}

    def test_bad_hash(self):
        """A wrong-length scrape hash is a failure reason."""
        code, _, body = Tracker().get("/scrape?info_hash=short")
        assert code == 200 and bencodepy.decode(body) == {
            b"failure reason": b"invalid info_hash: must be 20 bytes"}


class StatusResourceTests:
    """/ and /status.json show torrents, counts and per-peer progress."""

    def test_json(self):
        """status.json has the documented schema; progress uses the known size."""
        t = Tracker()
        t.store.set_allowed({IH: TorrentInfo("release.tgz", 400)})
        t.announce(1, left="100")
        t.announce(2, left="0", event="completed")
        t.clock.advance(3)
        code, ctype, body = t.get("/status.json")
        doc = json.loads(body)
        assert (code, ctype) == (200, b"application/json")
        assert doc["version"] == 1 and doc["totals"] == {
            "torrents": 1, "peers": 2, "seeders": 1, "leechers": 1}
        (tor,) = doc["torrents"]
        assert (tor["info_hash"], tor["name"], tor["size"]) == (IH.hex(), "release.tgz", 400)
        assert (tor["complete"], tor["incomplete"], tor["downloaded"]) == (1, 1, 1)
        assert [(p["ip"], p["progress"], p["seeder"], p["last_announce_age"])
                for p in tor["peers"]] == [("10.0.0.1", 0.75, False, 3.0),
                                           ("10.0.0.2", 1.0, True, 3.0)]

    def test_json_unknown_size(self):
        """Without the torrent file, progress is null and bytes left are shown."""
        t = Tracker()
        t.announce(1, left="12345")
        (peer,) = json.loads(t.get("/status.json")[2])["torrents"][0]["peers"]
        assert peer["progress"] is None and peer["left"] == 12345

    def test_html(self):
        """The HTML page names the torrent, the counts and each peer's progress, escaped."""
        t = Tracker()
        t.store.set_allowed({IH: TorrentInfo("<b>rel</b>", 400)})
        t.announce(1, left="100")
        code, ctype, body = t.get("/")
        page = body.decode()
        assert code == 200 and ctype.startswith(b"text/html")
        assert "&lt;b&gt;rel&lt;/b&gt;" in page and "<b>rel" not in page
        assert "75.0%" in page and "10.0.0.1:6001" in page and IH.hex() in page


class RateLimitedLogTests:
    """Rejected-request logging is bounded per period."""

    def test_burst_then_suppressed(self):
        """After `burst` lines in a period, lines are counted, then allowed again."""
        clock = Clock()
        limiter = RateLimitedLog(clock, period=10, burst=3)
        assert [limiter.allow() for _ in range(5)] == [True, True, True, False, False]
        assert limiter.suppressed == 2
        clock.advance(10)
        assert limiter.allow() is True and limiter.suppressed == 0
