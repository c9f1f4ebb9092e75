"""Unit tests of the live fleet view: progress in the store, the leecher
interval, /dashboard.json, the dashboard pages and /metrics, all in memory."""

from __future__ import annotations

import json
import shutil
import subprocess
from urllib.parse import quote_from_bytes, urlencode

import bencodepy
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tracker_harness import Tracker as _Harness

from murder.tracker.auth import Authoriser
from murder.tracker.store import TorrentInfo
from murder.tracker.tap import Options

IH = b"\xaa" * 19 + b"\x01"
IH2 = b"\xbb" * 20
SIZE = 1000


class Tracker(_Harness):
    """The tracker in memory on a Clock, with announce and JSON helpers."""

    def announce(self, n: int, ih: bytes = IH, **params) -> dict:
        query = {"peer_id": b"%020d" % n, "port": str(6000 + n), "left": str(SIZE),
                 "uploaded": "0", "downloaded": "0", "ip": f"10.0.0.{n}", "compact": "1"}
        query.update(params)
        qs = "info_hash=" + quote_from_bytes(ih) + "&" + urlencode(query)
        response = self.request("/announce?" + qs)
        assert response.status == 200
        return bencodepy.decode(response.body)

    def json(self, target: str) -> dict:
        response = self.request(target)
        assert response.status == 200, response.body
        assert response.header("content-type") == "application/json"
        return json.loads(response.body)

    def swarm(self, ih: bytes = IH) -> dict:
        (swarm,) = self.json("/dashboard.json?info_hash=" + ih.hex())["swarms"]
        return swarm

    def rows(self, ih: bytes = IH) -> dict[int, dict]:
        """Peer rows of the per-swarm document as dicts, by port."""
        swarm = self.swarm(ih)
        return {r[1]: dict(zip(swarm["columns"], r)) for r in swarm["peers"]}

    def metrics(self) -> dict[tuple[str, tuple], float]:
        response = self.request("/metrics")
        assert response.status == 200
        assert response.header("content-type").startswith("text/plain")
        out = {}
        for family in text_string_to_metric_families(response.body.decode()):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out


class ProgressTests:
    """The store keeps each peer's progress from successive announces."""

    def test_rate_and_completion(self):
        """Rate is bytes of 'left' falling per second; completion time is kept."""
        t = Tracker()
        t.announce(1, event="started")
        t.clock.advance(2)
        t.announce(1, left="600", downloaded="400")
        peer = t.store.torrents[IH].peers[b"%020d" % 1]
        assert peer.rate == pytest.approx(0.5 * 400 / 2)
        assert (peer.first_seen, peer.progress_at, peer.completed_at) == (0, 2, None)
        t.clock.advance(2)
        t.announce(1, left="0", downloaded="1000", event="completed")
        assert peer.completed_at == 4 and peer.progress_at == 4
        assert peer.rate == pytest.approx(0.5 * 100 + 0.5 * 300)

    def test_reported_bytes_are_monotonic(self):
        """Reported up/down totals sum the increases, never go back."""
        t = Tracker()
        t.announce(1, uploaded="100", downloaded="50")
        t.announce(1, uploaded="300", downloaded="40")
        t.announce(2, uploaded="7")
        assert (t.store.reported_uploaded, t.store.reported_downloaded) == (307, 50)

    def test_departed_kept_then_forgotten(self):
        """A stopped peer stays visible as departed, then is forgotten after departed_keep."""
        t = Tracker()
        t.store.departed_keep = 100
        t.announce(1)
        t.announce(1, event="stopped", uploaded="5")
        departed = t.store.torrents[IH].departed[b"%020d" % 1]
        assert departed.gone_at == 0 and departed.uploaded == 5
        assert t.store.peer_count == 0 and t.store.departed_count == 1
        t.clock.advance(101)
        t.announce(2)
        t.store.expire()
        assert t.store.torrents[IH].departed == {} and t.store.departed_count == 0

    def test_departed_capped(self):
        """Departed peers are capped in total: memory stays bounded."""
        t = Tracker(max_departed=2)
        for n in range(1, 5):
            t.announce(n)
            t.announce(n, event="stopped")
        assert len(t.store.torrents[IH].departed) == 2 == t.store.departed_count

    def test_rejoin_leaves_departed(self):
        """A departed peer that announces again is a live peer, not listed twice."""
        t = Tracker()
        t.announce(1)
        t.announce(1, event="stopped")
        t.announce(1)
        assert t.store.torrents[IH].departed == {} and t.store.departed_count == 0
        assert len(t.rows()) == 1


class LeecherIntervalTests:
    """Leechers are asked to announce often; seeders at the normal interval."""

    def test_leecher_and_seeder_intervals(self):
        """left > 0 gets leecher_interval (min interval no larger); left = 0 gets interval."""
        t = Tracker(leecher_interval=2)
        leecher = t.announce(1)
        seeder = t.announce(2, left="0")
        assert (leecher[b"interval"], leecher[b"min interval"]) == (2, 2)
        assert (seeder[b"interval"], seeder[b"min interval"]) == (15, 5)

    def test_off_by_default_in_app(self):
        """Without leecher_interval every peer gets interval."""
        assert Tracker().announce(1)[b"interval"] == 15

    def test_options(self):
        """--leecher-interval and --stall-after reach the config; 0 turns the former off."""
        o = Options()
        o.parseOptions(["--dfile", "", "--leecher-interval", "1", "--stall-after", "4.5"])
        assert (o.config.leecher_interval, o.config.stall_after) == (1, 4.5)
        o = Options()
        o.parseOptions(["--dfile", "", "--leecher-interval", "0"])
        assert o.config.leecher_interval is None
        o = Options()
        o.parseOptions(["--dfile", ""])
        assert (o.config.leecher_interval, o.config.stall_after) == (2, 30.0)
        o = Options()
        o.parseOptions(["--dfile", "", "--interval", "1"])  # the default never exceeds it
        assert o.config.leecher_interval == 1

    @pytest.mark.parametrize("argv", [["--leecher-interval", "20"],
                                      ["--leecher-interval", "x"], ["--stall-after", "0"]])
    def test_option_errors(self, argv):
        """A leecher interval above --interval, or a non-positive stall time, is refused."""
        from twisted.python import usage
        with pytest.raises(usage.UsageError):
            Options().parseOptions(["--dfile", "", *argv])


class DashboardJsonTests:
    """/dashboard.json: states, rates, ETA, seeder ratio, completion times."""

    def test_states(self):
        """Every state: downloading, stalled after stall_after, complete, seeder, gone."""
        t = Tracker(stall_after=5)
        t.store.set_allowed({IH: TorrentInfo("app.tgz", SIZE)})
        t.announce(9, left="0", uploaded="0")            # origin seeder
        for n in (1, 2, 3, 4):
            t.announce(n, event="started")
        t.clock.advance(3)
        t.announce(1, left="0", downloaded="1000", event="completed")
        t.announce(2, left="500", downloaded="500")
        t.announce(4, event="stopped")
        t.announce(9, left="0", uploaded="1500")
        t.clock.advance(3)                                # 3: 6 s without progress
        t.announce(2, left="400", downloaded="600")
        rows = t.rows()
        assert {port - 6000: r["state"] for port, r in rows.items()} == {
            1: "complete", 2: "downloading", 3: "stalled", 4: "gone", 9: "seeder"}
        assert rows[6002]["progress"] == 0.6 and rows[6001]["done_at"] == 3.0
        assert rows[6003]["idle"] == 6.0
        swarm = t.swarm()
        assert swarm["states"] == {"downloading": 1, "stalled": 1, "complete": 1,
                                   "seeder": 1, "gone": 1}
        assert (swarm["hosts"], swarm["completions"], swarm["failures"]) == (4, [3.0], [3.0])
        assert swarm["seeder_uploaded"] == 1500 and swarm["seeder_ratio"] == 1.5
        assert swarm["size"] == SIZE and swarm["size_estimated"] is False
        # A stalled host means no ETA can be promised.
        assert swarm["eta"] is None and swarm["elapsed"] == 6.0

    def test_eta_and_estimated_size(self):
        """ETA is the slowest downloading host's left ÷ rate; size from the largest left."""
        t = Tracker()
        t.announce(1)
        t.announce(2)
        t.clock.advance(1)
        t.announce(1, left="800")
        t.announce(2, left="600")
        swarm = t.swarm()
        assert swarm["size"] == SIZE and swarm["size_estimated"] is True
        rows = t.rows()
        assert rows[6001]["rate"] == 100 and rows[6001]["eta"] == 8.0
        assert swarm["eta"] == 8.0 and swarm["rate"] == 300 and swarm["left"] == 1400

    def test_stalled_when_silent(self):
        """A frozen host (no announces at all) shows stalled after stall_after."""
        t = Tracker(stall_after=3)
        t.announce(1)
        t.clock.advance(2.9)
        assert t.rows()[6001]["state"] == "downloading"
        t.clock.advance(0.1)
        assert t.rows()[6001]["state"] == "stalled"
        assert t.json("/status.json")["torrents"][0]["stalled"] == 1

    def test_overview_and_unknown(self):
        """Without info_hash every swarm is summarised, without rows; an unknown one is empty."""
        t = Tracker()
        t.announce(1, ih=IH)
        t.announce(1, ih=IH2)
        doc = t.json("/dashboard.json")
        assert [s["info_hash"] for s in doc["swarms"]] == sorted([IH.hex(), IH2.hex()])
        assert all("peers" not in s for s in doc["swarms"])
        assert t.json("/dashboard.json?info_hash=" + "cc" * 20)["swarms"] == []

    def test_rows_in_numeric_address_order(self):
        """Hosts are listed by numeric address (10.0.0.9 before 10.0.0.10), IPv4 first."""
        t = Tracker()
        for n in (10, 9, 100):
            t.announce(n)
        t.announce(1, ip="fd00::1")
        swarm = t.swarm()
        assert [r[0] for r in swarm["peers"]] == ["10.0.0.9", "10.0.0.10", "10.0.0.100",
                                                  "fd00::1"]

    def test_dfile_keeps_complete(self):
        """After a tracker restart (dfile), a host that completed is complete, not a seeder."""
        from murder.tracker.store import PeerStore
        t = Tracker()
        t.announce(1)
        t.announce(1, left="0", event="completed")
        t.announce(2, left="0")
        restored = PeerStore(t.clock)
        restored.from_dfile(t.store.to_dfile())
        t.store.torrents = restored.torrents
        assert {p - 6000: r["state"] for p, r in t.rows().items()} == {1: "complete", 2: "seeder"}

    @pytest.mark.parametrize("value", ["zz" * 20, "aa", "%ff" * 20])
    def test_bad_info_hash(self, value):
        """A malformed info_hash parameter gets 400 with a bencoded reason."""
        response = Tracker().request("/dashboard.json?info_hash=" + value)
        assert response.status == 400 and b"failure reason" in response.body

    def test_cache(self):
        """With view_cache, answers are reused for that long, then rebuilt."""
        t = Tracker(view_cache=0.5)
        t.announce(1)
        assert len(t.rows()) == 1
        t.announce(2)
        assert len(t.rows()) == 1
        t.clock.advance(0.5)
        assert len(t.rows()) == 2

    def test_status_json_additions(self):
        """status.json keeps version 1 and its keys, and adds state, rate and idle per peer."""
        t = Tracker(stall_after=7)
        t.announce(1)
        t.clock.advance(1)
        t.announce(1, left="900")
        doc = t.json("/status.json")
        (peer,) = doc["torrents"][0]["peers"]
        assert doc["version"] == 1 and doc["stall_after"] == 7
        assert {"peer_id", "ip", "port", "left", "uploaded", "downloaded", "seeder",
                "progress", "last_announce_age"} <= set(peer)
        assert (peer["left"], peer["state"], peer["rate"], peer["idle"]) == (
            900, "downloading", 50, 0.0)


class DashboardPageTests:
    """The dashboard pages and their assets come from the package."""

    def test_root_page(self):
        """/ is the live page (script, stylesheet) with the plain tables in <noscript>."""
        t = Tracker()
        t.announce(1)
        response = t.request("/")
        page = response.body.decode()
        assert response.status == 200 and response.header("content-type").startswith("text/html")
        assert 'src="static/dashboard.js"' in page and 'href="static/dashboard.css"' in page
        assert "<noscript>" in page and "10.0.0.1:6001" in page
        assert "http://" not in page and "https://" not in page  # nothing external

    def test_assets(self):
        """The script and stylesheet are served with their types, and fetch only relative URLs."""
        t = Tracker()
        js = t.request("/static/dashboard.js")
        css = t.request("/static/dashboard.css")
        assert js.status == css.status == 200
        assert js.header("content-type").startswith("text/javascript")
        assert css.header("content-type").startswith("text/css")
        assert b"dashboard.json" in js.body
        for body in (js.body, css.body):
            assert b"http://" not in body and b"https://" not in body

    def test_swarm_page(self):
        """/swarm?info_hash=… is the same page (the script reads the query)."""
        t = Tracker()
        response = t.request("/swarm?info_hash=" + IH.hex())
        assert response.status == 200 and b"dashboard.js" in response.body


class MetricsTests:
    """/metrics: Prometheus text format with bounded labels, agreeing with status.json."""

    def test_announces_by_event_and_result(self):
        """Announces are counted by event and result, failures by reason class."""
        t = Tracker(max_peers=2)
        t.announce(1, event="started")
        t.announce(1)
        t.announce(2, event="completed", left="0")
        t.announce(3, event="started")                    # tracker is full
        t.request("/announce?info_hash=x&peer_id=y")      # invalid
        t.request("/scrape")
        m = t.metrics()
        total = "murder_tracker_announces_total"

        def announces(event: str, result: str) -> float:
            return m[(total, (("event", event), ("result", result), ("transport", "http")))]

        assert announces("started", "ok") == 1
        assert announces("update", "ok") == 1
        assert announces("completed", "ok") == 1
        assert announces("started", "full") == 1
        assert announces("update", "invalid") == 1
        assert m[("murder_tracker_scrapes_total",
                  (("result", "ok"), ("transport", "http")))] == 1
        assert m[("murder_tracker_request_duration_seconds_count",
                  (("route", "announce"),))] == 5

    def test_auth_refused(self):
        """Announces refused for a missing token are counted as auth_refused."""
        t = Tracker(auth=Authoriser([b"s" * 32]))
        t.announce(1, event="started")
        assert t.metrics()[("murder_tracker_announces_total",
                            (("event", "started"), ("result", "auth_refused"),
                             ("transport", "http")))] == 1

    def test_agrees_with_status(self):
        """Gauges equal the status.json totals taken at the same moment."""
        t = Tracker(stall_after=2)
        for n in range(1, 6):
            t.announce(n, left="0" if n == 5 else str(SIZE), uploaded=str(10 * n))
        t.announce(1, ih=IH2)
        t.clock.advance(2)
        t.announce(2, left="100")
        status = t.json("/status.json")
        m = t.metrics()
        assert m[("murder_tracker_swarms", ())] == status["totals"]["torrents"] == 2
        assert m[("murder_tracker_peers", ())] == status["totals"]["peers"] == 6
        assert m[("murder_tracker_seeders", ())] == status["totals"]["seeders"] == 1
        assert m[("murder_tracker_leechers", ())] == status["totals"]["leechers"] == 5
        stalled = sum(tor["stalled"] for tor in status["torrents"])
        assert m[("murder_tracker_stalled_peers", ())] == stalled == 4
        assert m[("murder_tracker_reported_uploaded_bytes_total", ())] == 150
        assert m[("murder_tracker_swarm_peers",
                  (("info_hash", IH.hex()), ("state", "stalled")))] == 3

    def test_swarm_series_capped(self, monkeypatch):
        """Per-swarm series only for swarms with peers, and at most MAX_SWARM_SERIES."""
        from murder.tracker import metrics
        monkeypatch.setattr(metrics, "MAX_SWARM_SERIES", 3)
        t = Tracker()
        for i in range(5):
            t.announce(1, ih=bytes([i]) * 20)
        t.announce(1, ih=bytes([4]) * 20, event="stopped")
        hashes = {dict(labels)["info_hash"] for name, labels in t.metrics()
                  if name == "murder_tracker_swarm_left_bytes"}
        assert len(hashes) == 3 and (bytes([4]) * 20).hex() not in hashes

    def test_registries_are_separate(self):
        """Two trackers in one process do not share series."""
        a, b = Tracker(), Tracker()
        a.announce(1)
        assert ("murder_tracker_peers", ()) in b.metrics()
        assert b.metrics()[("murder_tracker_peers", ())] == 0

    def test_dfile_save_timed(self, tmp_path):
        """The state service times every dfile save into the histogram."""
        from twisted.internet.task import Clock

        from murder.tracker.tap import TrackerConfig, TrackerStateService
        t = Tracker()
        service = TrackerStateService(t.store, TrackerConfig(dfile=str(tmp_path / "d")),
                                      Clock(), save_timer=t.app.metrics.dfile_save)
        service.save()
        assert t.metrics()[("murder_tracker_dfile_save_duration_seconds_count", ())] == 1

    def test_udp_announces_and_scrapes_counted(self):
        """BEP 15 announces and scrapes are counted with transport="udp", beside HTTP's."""
        from murder.tracker import udpcodec
        from murder.tracker.udp import UDPTrackerCore

        t = Tracker(max_peers=2)
        t.announce(1, event="started")
        udp = UDPTrackerCore(t.app, secret=b"k" * 32)
        cid = udp.connection_id("10.0.0.9")

        def udp_announce(n: int, event: str) -> None:
            udp.handle(udpcodec.announce_request(cid, n, IH, b"%020d" % n, 0, 5, 0, event, 0,
                                                 -1, 6000 + n), "10.0.0.9", 1)

        udp_announce(2, "started")
        udp_announce(2, "")
        udp_announce(2, "")
        udp_announce(3, "started")                        # tracker is full
        udp.handle(udpcodec.scrape_request(cid, 9, [IH]), "10.0.0.9", 1)
        m = t.metrics()
        total = "murder_tracker_announces_total"

        def announces(transport: str, event: str, result: str) -> float:
            return m[(total, (("event", event), ("result", result),
                              ("transport", transport)))]

        assert announces("http", "started", "ok") == 1
        assert announces("udp", "started", "ok") == 1
        assert announces("udp", "update", "ok") == 2
        assert announces("udp", "started", "full") == 1
        assert m[("murder_tracker_scrapes_total", (("result", "ok"), ("transport", "udp")))] == 1

    @pytest.mark.skipif(shutil.which("promtool") is None,
                        reason="promtool (Debian package prometheus) not installed")
    def test_promtool_accepts(self):
        """`promtool check metrics` finds no problem in the exposition."""
        from murder.tracker import udpcodec
        from murder.tracker.udp import UDPTrackerCore

        t = Tracker(auth=Authoriser([b"s" * 32]))
        t.announce(1)
        udp = UDPTrackerCore(t.app, secret=b"k" * 32)
        udp.handle(udpcodec.announce_request(udp.connection_id("10.0.0.9"), 1, IH, b"u" * 20,
                                             0, 5, 0, "started", 0, -1, 7000), "10.0.0.9", 1)
        t.request("/dashboard.json")
        body = t.request("/metrics").body
        result = subprocess.run(["promtool", "check", "metrics"], input=body,
                                capture_output=True, timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr
