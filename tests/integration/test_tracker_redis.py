"""The Redis peer store (issue 15) against a real ``redis-server`` the tests start
on a private unix socket; and the HA test: two tracker processes on one store,
peers split between them, one tracker SIGKILLed mid-swarm."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote_from_bytes

import bencodepy
import pytest
from twisted.internet.task import Clock

from conftest import free_port, stop_process
from murder import metainfo
from murder.errors import AnnounceError, ConfigError
from murder.tracker.announce_codec import AnnounceRequest
from murder.tracker.redisstore import RedisPeerStore, parse_store_url
from murder.tracker.store import PeerStore, TorrentInfo
from murder.tracker.udp import UDPTrackerCore
from murder.tracker.app import TrackerApp
from test_faults import Swarm, _bencode, wait_for

REDIS = shutil.which("redis-server")
redis_py = pytest.importorskip("redis")
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(REDIS is None, reason="redis-server is not installed "
                                                       "(Debian redis-server)")]
IH = bytes(range(40, 60))


class RedisServer:
    """``redis-server`` on a unix socket in ``directory``, no TCP, no persistence."""

    def __init__(self, directory: Path) -> None:
        self.socket = str(directory / "redis.sock")
        self.log = directory / "redis.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [REDIS, "--port", "0", "--unixsocket", self.socket, "--unixsocketperm", "700",
                 "--save", "", "--appendonly", "no", "--dir", str(directory)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        client = redis_py.Redis(unix_socket_path=self.socket, socket_timeout=1)

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited: {self.log.read_text()[-2000:]}")
            try:
                return bool(client.ping())
            except redis_py.RedisError:
                return False

        wait_for(ready, 15, "redis-server to answer PING")
        client.close()
        self.url = f"unix://{self.socket}?db=0"

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture
def redis_server(tmp_path: Path):
    server = RedisServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def req(n: int, left: int = 10, event: str = "started", ip: str | None = None,
        ih: bytes = IH, numwant: int = 50, compact: bool = True) -> AnnounceRequest:
    return AnnounceRequest(info_hash=ih, peer_id=b"%020d" % n, ip=ip or f"10.0.0.{n}",
                           port=6000 + n, uploaded=1, downloaded=2, left=left, event=event,
                           compact=compact, no_peer_id=False, numwant=numwant, key=b"k%d" % n)


class StoreURLTests:
    """--store values parse into redis client arguments or a clear error."""

    def test_urls(self):
        """redis://, unix:// and a bare socket path are accepted."""
        assert parse_store_url("redis://127.0.0.1:7000/3") == {
            "host": "127.0.0.1", "port": 7000, "db": 3}
        assert parse_store_url("unix:///run/r.sock?db=2") == {
            "unix_socket_path": "/run/r.sock", "db": 2}
        assert parse_store_url("/run/r.sock")["unix_socket_path"] == "/run/r.sock"

    @pytest.mark.parametrize("url", ["memcached://x", "redis://h:99999/0", "redis:///0",
                                     "redis://h:1/x", "unix://?db=1"])
    def test_bad_urls(self, url):
        """Anything else is a ConfigError naming the accepted forms."""
        with pytest.raises(ConfigError):
            parse_store_url(url)


class RedisStoreTests:
    """Two stores on one Redis behave as one tracker."""

    def test_two_stores_share_peers(self, redis_server):
        """A peer announced to one store is handed out by the other; counts agree."""
        a = RedisPeerStore(Clock(), redis_server.url)
        b = RedisPeerStore(Clock(), redis_server.url)
        a.announce(req(1, left=0))
        reply = b.announce(req(2))
        assert (reply.seeders, reply.leechers) == (1, 1)
        c4, c6 = reply.compact_sample(b"%020d" % 2, 50, b.rng)
        assert c4 == bytes([10, 0, 0, 1]) + (6001).to_bytes(2, "big") and c6 == b""
        assert a.scrape([IH]) == {IH: (1, 1, 0)} == b.scrape()

    def test_ipv6_numwant_stopped_completed(self, redis_server):
        """IPv6 peers come in peers6; numwant caps; stopped leaves; completed counts once."""
        s = RedisPeerStore(Clock(), redis_server.url)
        for n in range(1, 8):
            s.announce(req(n))
        s.announce(req(8, ip="fd00::8"))
        reply = s.announce(req(9, numwant=3))
        c4, c6 = reply.compact_sample(b"", 3, s.rng)
        assert len(c4) // 6 + len(c6) // 18 == 3
        reply = s.announce(req(9, numwant=500))
        c4, c6 = reply.compact_sample(b"", 500, s.rng)
        assert len(c4) == 7 * 6 and len(c6) == 18
        s.announce(req(9, left=0, event="completed"))
        s.announce(req(9, left=0, event="completed"))
        assert s.scrape([IH])[IH] == (1, 8, 1)
        stopped = s.announce(req(9, left=0, event="stopped"))
        assert stopped.compact_sample(b"", 0, s.rng) == (b"", b"")
        assert s.scrape([IH])[IH] == (0, 8, 1)

    def test_dict_reply_has_peer_ids(self, redis_server):
        """A non-compact announce gets BEP 3 dictionaries with the peers' ids."""
        app = TrackerApp(RedisPeerStore(Clock(), redis_server.url))
        app.store.announce(req(1))
        query = ("info_hash=" + quote_from_bytes(IH) + "&peer_id=" + "%020d" % 2
                 + "&port=7000&left=5")
        reply = bencodepy.decode(app.handle(f"/announce?{query}".encode(), "10.0.0.2").body)
        assert reply[b"peers"] == [{b"ip": b"10.0.0.1", b"peer id": b"%020d" % 1,
                                    b"port": 6001}]

    def test_peer_id_owner_and_caps(self, redis_server):
        """A peer id moving address with another key is refused; torrent and
        per-torrent caps hold across stores; the allow-list refuses others."""
        s = RedisPeerStore(Clock(), redis_server.url, max_torrents=2, max_peers_per_torrent=3)
        s.announce(req(1))
        with pytest.raises(AnnounceError, match="peer id in use from another address"):
            s.announce(replace(req(1), ip="10.9.9.9", key=b"other"))
        s.announce(replace(req(1), ip="10.9.9.9", key=b"k1"))  # its own key may move it
        s.announce(req(2))
        s.announce(req(3))
        with pytest.raises(AnnounceError, match="torrent is full"):
            s.announce(req(4))
        s.announce(req(1, ih=b"\x01" * 20))
        with pytest.raises(AnnounceError, match="tracker is full"):
            s.announce(req(1, ih=b"\x02" * 20))
        s.set_allowed({IH: TorrentInfo("x", 1)})
        with pytest.raises(AnnounceError, match="not allowed"):
            s.announce(req(1, ih=b"\x01" * 20))

    def test_total_peer_cap_across_stores(self, redis_server):
        """--max-peers holds over every tracker on the store, as in memory: a new
        peer past it is refused on any torrent, known peers still re-announce, and
        a stopped peer frees its place."""
        a = RedisPeerStore(Clock(), redis_server.url, max_peers=3)
        b = RedisPeerStore(Clock(), redis_server.url, max_peers=3)
        a.announce(req(1))
        b.announce(req(2))
        a.announce(req(3, ih=b"\x01" * 20))
        with pytest.raises(AnnounceError, match="tracker is full: too many peers"):
            b.announce(req(4))
        with pytest.raises(AnnounceError, match="tracker is full: too many peers"):
            a.announce(req(4, ih=b"\x02" * 20))
        b.announce(req(1, event=""))
        assert a.peer_count == b.peer_count == 3
        a.announce(req(2, event="stopped"))
        assert b.peer_count == 2
        b.announce(req(4))
        assert a.scrape([IH])[IH] == (0, 2, 0)

    def test_no_reported_bytes_series(self, redis_server):
        """Counter increases are per tracker process, so the Redis store reports none
        and /metrics leaves the reported-bytes series out (the memory store has them)."""
        store = RedisPeerStore(Clock(), redis_server.url)
        store.announce(req(1))
        assert store.reported_bytes() is None
        body = TrackerApp(store).handle(b"/metrics", "10.0.0.1").body
        assert b"murder_tracker_peers 1.0" in body
        assert b"reported_uploaded" not in body
        memory = TrackerApp(PeerStore(Clock()))
        memory.store.announce(req(1))
        assert b"murder_tracker_reported_uploaded_bytes_total 1.0" in memory.handle(
            b"/metrics", "10.0.0.1").body

    def test_expiry_by_redis(self, redis_server):
        """Silent peers drop out after peer_timeout, and a silent torrent's keys
        expire in Redis itself (TTL), with no sweep by the tracker."""
        s = RedisPeerStore(Clock(), redis_server.url, peer_timeout=0.5)
        silent = b"\x03" * 20
        s.announce(req(1, ih=silent))
        s.announce(req(1))
        s.announce(req(2))
        assert s.redis.pttl(f"murder:t:{IH.hex()}:seen") > 0
        deadline = time.monotonic() + 10

        def only_two_left() -> bool:
            s.announce(req(2))  # keeps 2 alive; 1 must go
            return s.scrape([IH]).get(IH) == (0, 1, 0)

        wait_for(only_two_left, 10, "peer 1 to expire")
        wait_for(lambda: not s.redis.exists(f"murder:t:{silent.hex()}:seen"), 10,
                 "the silent torrent's keys to expire")
        assert time.monotonic() < deadline
        assert s.expire() == 0

    def test_status_snapshot_and_udp(self, redis_server):
        """status.json and the UDP tracker work on the Redis store too."""
        from murder.tracker import udpcodec

        store = RedisPeerStore(Clock(), redis_server.url)
        app = TrackerApp(store)
        store.announce(req(1, left=0))
        core = UDPTrackerCore(app)
        cid = udpcodec.parse_reply(core.handle(udpcodec.connect_request(1), "10.0.0.2", 1))
        data = udpcodec.announce_request(cid.connection_id, 2, IH, b"u" * 20, 0, 5, 0,
                                         "started", 1, -1, 7000)
        reply = udpcodec.parse_reply(core.handle(data, "10.0.0.2", 1))
        assert isinstance(reply, udpcodec.AnnounceReply) and reply.seeders == 1
        doc = app.status()
        assert doc["totals"]["peers"] == 2 and doc["totals"]["seeders"] == 1
        peers = doc["torrents"][0]["peers"]
        assert [(p["ip"], p["port"], p["seeder"]) for p in peers] == [
            ("10.0.0.1", 6001, True), ("10.0.0.2", 7000, False)]

    def test_redis_down_is_a_failure_reason(self, redis_server):
        """With Redis gone, an announce gets a failure reason, not a 500 or a hang."""
        app = TrackerApp(RedisPeerStore(Clock(), redis_server.url, socket_timeout=0.5))
        redis_server.stop()
        query = ("info_hash=" + quote_from_bytes(IH) + "&peer_id=" + "%020d" % 2
                 + "&port=7000&left=5&compact=1")
        started = time.monotonic()
        reply = app.handle(f"/announce?{query}".encode(), "10.0.0.2")
        assert time.monotonic() - started < 2  # no retries: the reactor waits on it
        assert reply.code == 200
        assert bencodepy.decode(reply.body) == {
            b"failure reason": b"peer store unavailable, try again"}


class HATests:
    """Two tracker processes on one Redis: any of them serves the whole swarm."""

    def test_two_trackers_one_killed(self, tmp_path: Path, redis_server) -> None:
        """Seeder and p1 announce to tracker A, p2 to tracker B; p2 finds the seeder
        through B.  A is SIGKILLed mid-swarm; p1 fails over to B (announce-list)
        and a late peer p3, listing A first, completes through B."""
        port_b = free_port()
        with Swarm(tmp_path, size=4 * 2**20) as swarm:
            url_a, url_b = swarm.announce_url, f"http://127.0.0.1:{port_b}/announce"

            def torrent(first: str, second: str, name: str) -> Path:
                raw = metainfo.create(str(swarm.payload), first, piece_length=2**16,
                                      announce_list=[[first], [second]])
                path = tmp_path / name
                metainfo.write_atomic(str(path), _bencode(raw))
                assert metainfo.load(str(path)).info_hash == swarm.meta.info_hash
                return path

            a_first, b_first = torrent(url_a, url_b, "a.torrent"), torrent(url_b, url_a,
                                                                           "b.torrent")
            store = ["--store", redis_server.url]
            tracker_a = swarm.start_tracker(*store)
            tracker_b = swarm.start("trackerB", [
                swarm.murder, "tracker", "--listen", f"tcp:{port_b}:interface=127.0.0.1",
                "--interval", "2", "--min-interval", "1", *store])
            wait_for(lambda: b"failure" not in _scrape(port_b, swarm) or not tracker_b.alive(),
                     15, "tracker B")
            seeder = swarm.start("seeder", [
                swarm.murder, "seed", "--torrent", str(a_first), "--file", str(swarm.payload),
                "--bind", "127.0.0.1", "--max-upload-rate", "1M"])
            wait_for(lambda: b"8:completei1e" in _scrape(port_b, swarm), 15,
                     "tracker B to see the seeder that announced to A")
            p1 = swarm.start_peer("p1", torrent=a_first)
            p2 = swarm.start_peer("p2", torrent=b_first)
            wait_for(lambda: swarm.progress("p1") >= 4 and swarm.progress("p2") >= 4, 30,
                     "both peers to get pieces")
            tracker_a.kill()
            assert not tracker_a.alive()
            p3 = swarm.start_peer("p3", "--tracker-timeout", "30", torrent=a_first)
            for name, proc in (("p1", p1), ("p2", p2), ("p3", p3)):
                swarm.assert_complete(name, proc, timeout=90)
            assert seeder.alive(), seeder.stderr()[-2000:]
            # p3 really tried A first and got the swarm from B.
            assert f"tracker {url_a} failed: Connection was refused" in p3.stderr()


def _scrape(port: int, swarm: Swarm) -> bytes:
    import urllib.request

    url = (f"http://127.0.0.1:{port}/scrape?info_hash="
           + quote_from_bytes(swarm.meta.info_hash, safe=""))
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.read()
    except OSError:
        return b"failure: unreachable"

