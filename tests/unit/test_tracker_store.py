"""Unit tests for murder.tracker.store: peers, caps, expiry (Clock), dfile."""

from __future__ import annotations

import os
import random

import bencodepy
import pytest
from twisted.internet.task import Clock

from murder.errors import AnnounceError
from murder.tracker.announce_codec import AnnounceRequest
from murder.tracker.store import PeerStore, TorrentInfo, load_dfile, save_dfile

IH = b"\x11" * 20


def req(n: int = 1, *, ih: bytes = IH, left: int = 100, event: str = "", ip: str | None = None,
        port: int = 6881, key: bytes | None = None) -> AnnounceRequest:
    """An announce from peer number ``n`` (address 10.0.0.n unless ``ip``)."""
    return AnnounceRequest(
        info_hash=ih, peer_id=b"%020d" % n, ip=ip or f"10.0.{n // 256}.{n % 256}", port=port,
        uploaded=0, downloaded=0, left=left, event=event, compact=True, no_peer_id=False,
        numwant=50, key=key)


def store(clock: Clock | None = None, **kw) -> PeerStore:
    return PeerStore(clock or Clock(), rng=random.Random(7), **kw)


class AnnounceStateTests:
    """PeerStore.announce keeps counts and membership right."""

    def test_counts(self):
        """Seeders and leechers follow `left`; completed is counted once per peer."""
        s = store()
        s.announce(req(1, left=0, event="started"))
        s.announce(req(2, event="started"))
        t = s.announce(req(3, event="started"))
        assert (t.seeders, t.leechers) == (1, 2)
        s.announce(req(2, left=0, event="completed"))
        t = s.announce(req(2, left=0, event="completed"))
        assert (t.seeders, t.leechers, t.downloaded) == (2, 1, 1)
        assert s.scrape() == {IH: (2, 1, 1)}

    def test_stopped_removes(self):
        """A stopped event removes the peer; a stopped unknown torrent creates nothing."""
        s = store()
        s.announce(req(1, event="started"))
        t = s.announce(req(1, event="stopped"))
        assert not t.peers and s.peer_count == 0
        s.announce(req(1, ih=b"\x22" * 20, event="stopped"))
        assert b"\x22" * 20 not in s.torrents

    def test_reply_excludes_self(self):
        """The announcing peer never gets its own address back."""
        s = store()
        for n in range(1, 4):
            s.announce(req(n))
        t = s.torrents[IH]
        peers, peers6 = t.compact_sample(b"%020d" % 2, 50, s.rng)
        assert peers == bytes([10, 0, 0, 1, 0x1a, 0xe1, 10, 0, 0, 3, 0x1a, 0xe1])
        assert peers6 == b""

    def test_sample_bounded_and_distinct(self):
        """With more peers than numwant, numwant distinct others are returned."""
        s = store()
        for n in range(1, 201):
            s.announce(req(n))
        t = s.torrents[IH]
        peers, _ = t.compact_sample(b"%020d" % 5, 30, s.rng)
        chunks = {peers[i:i + 6] for i in range(0, len(peers), 6)}
        assert len(peers) == 180 and len(chunks) == 30
        assert bytes([10, 0, 0, 5, 0x1a, 0xe1]) not in chunks

    def test_v6_peers_separate(self):
        """IPv6 peers are returned in the peers6 string."""
        s = store()
        s.announce(req(1, ip="fd00::1"))
        s.announce(req(2))
        peers, peers6 = s.torrents[IH].compact_sample(b"%020d" % 3, 50, s.rng)
        assert len(peers) == 6 and len(peers6) == 18

    def test_address_change_needs_key(self):
        """A peer id that registered a key cannot be moved to another address without it."""
        s = store()
        s.announce(req(1, key=b"secret"))
        with pytest.raises(AnnounceError, match="another address"):
            s.announce(req(1, ip="10.9.9.9"))
        s.announce(req(1, ip="10.9.9.9", key=b"secret"))
        assert s.torrents[IH].peers[b"%020d" % 1].ip == "10.9.9.9"
        peers, _ = s.torrents[IH].compact_sample(b"x" * 20, 50, s.rng)
        assert peers[:4] == bytes([10, 9, 9, 9])


class CapTests:
    """Caps bound memory: new torrents/peers past a cap are refused."""

    def test_torrent_cap(self):
        """Past max_torrents a new info hash is refused; known ones keep working."""
        s = store(max_torrents=3)
        for i in range(3):
            s.announce(req(1, ih=bytes([i]) * 20))
        with pytest.raises(AnnounceError, match="too many torrents"):
            s.announce(req(1, ih=b"\x09" * 20))
        s.announce(req(2, ih=b"\x00" * 20))
        assert len(s.torrents) == 3

    def test_peer_caps(self):
        """Past max_peers_per_torrent or max_peers a new peer is refused."""
        s = store(max_peers_per_torrent=2, max_peers=3)
        s.announce(req(1))
        s.announce(req(2))
        with pytest.raises(AnnounceError, match="torrent is full"):
            s.announce(req(3))
        s.announce(req(1, ih=b"\x33" * 20))
        with pytest.raises(AnnounceError, match="tracker is full"):
            s.announce(req(2, ih=b"\x33" * 20))
        assert s.peer_count == 3

    def test_allow_list(self):
        """With an allow-list, other info hashes are refused and dropped."""
        s = store()
        s.announce(req(1, ih=b"\x44" * 20))
        s.set_allowed({IH: TorrentInfo("payload", 1000)})
        assert b"\x44" * 20 not in s.torrents and s.peer_count == 0
        with pytest.raises(AnnounceError, match="not allowed"):
            s.announce(req(1, ih=b"\x44" * 20))
        s.announce(req(1))
        assert s.known[IH].size == 1000


class ExpiryTests:
    """Peers silent for peer_timeout expire, measured on the injected clock."""

    def test_expire(self):
        """A peer expires peer_timeout after its last announce, not before."""
        clock = Clock()
        s = store(clock, peer_timeout=120)
        s.announce(req(1))
        s.announce(req(2, left=0))
        clock.advance(100)
        s.announce(req(1))
        clock.advance(19)
        assert s.expire() == 0
        clock.advance(1)
        assert s.expire() == 1
        t = s.torrents[IH]
        assert list(t.peers) == [b"%020d" % 1] and t.seeders == 0
        peers, _ = t.compact_sample(b"x" * 20, 50, s.rng)
        assert len(peers) == 6

    def test_empty_torrent_dropped_later(self):
        """An empty torrent is forgotten peer_timeout after its last peer left."""
        clock = Clock()
        s = store(clock, peer_timeout=120)
        s.announce(req(1))
        s.announce(req(1, event="stopped"))
        clock.advance(60)
        s.expire()
        assert IH in s.torrents
        clock.advance(60)
        s.expire()
        assert IH not in s.torrents


class DfileTests:
    """The dfile round-trips state and a corrupt one never stops the tracker."""

    def test_round_trip(self, tmp_path):
        """Saved peers, counts and ages come back after a load."""
        clock = Clock()
        s = store(clock)
        s.announce(req(1, left=0, event="completed", key=b"k"))
        s.announce(req(2, ip="fd00::2"))
        clock.advance(30)
        s.announce(req(2, ip="fd00::2"))
        path = str(tmp_path / "data")
        save_dfile(s, path)
        clock2 = Clock()
        clock2.advance(1000)
        s2 = store(clock2)
        assert load_dfile(s2, path) is True
        assert s2.scrape() == {IH: (1, 1, 1)}
        p1 = s2.torrents[IH].peers[b"%020d" % 1]
        assert (p1.ip, p1.port, p1.key, p1.completed, p1.last_seen) == \
            ("10.0.0.1", 6881, b"k", True, 970)
        assert s2.torrents[IH].compact_sample(b"x" * 20, 9, s2.rng)[1][:1] == b"\xfd"
        clock2.advance(90)
        assert s2.expire() == 1

    def test_missing_is_fresh_start(self, tmp_path):
        """No dfile: nothing loaded, nothing raised."""
        assert load_dfile(store(), str(tmp_path / "none")) is False

    @pytest.mark.parametrize("content", [
        b"garbage", b"", b"d7:versioni99ee", b"d7:versioni1e8:torrentsli1eee",
        bencodepy.encode({b"version": 1, b"torrents": {b"x" * 20: {b"peers": {
            b"y" * 20: {b"ip": b"not an ip", b"port": 1}}}}}),
        bencodepy.encode({b"version": 1, b"torrents": {b"short": {}}}),
    ])
    def test_corrupt_moved_aside(self, tmp_path, content):
        """A corrupt dfile is renamed aside, logged, and the store starts empty."""
        path = tmp_path / "data"
        path.write_bytes(content)
        s = store()
        s.announce(req(1))
        assert load_dfile(s, str(path)) is False
        assert s.torrents == {} and s.peer_count == 0
        assert not path.exists()
        aside = [n for n in os.listdir(tmp_path) if n.startswith("data.corrupt-")]
        assert len(aside) == 1 and (tmp_path / aside[0]).read_bytes() == content

    def test_save_is_atomic_file(self, tmp_path):
        """Saving replaces the file whole and leaves no temp file behind."""
        s = store()
        s.announce(req(1))
        path = tmp_path / "data"
        path.write_bytes(b"old")
        save_dfile(s, str(path))
        assert os.listdir(tmp_path) == ["data"]
        assert bencodepy.decode(path.read_bytes())[b"version"] == 1


class CompactCacheTests:
    """The cached compact strings stay equal to the peers held."""

    def test_cache_follows_joins_leaves_and_moves(self):
        """After joins (appended), leaves and address changes, replies match the peer set."""
        s = store()
        rng = random.Random(11)
        expected: dict[int, bytes] = {}
        for step in range(400):
            n = rng.randrange(1, 40)
            action = rng.random()
            if action < 0.6:
                ip = f"10.1.0.{n}" if rng.random() < 0.8 else f"10.2.0.{n}"
                s.announce(req(n, ip=ip))
                expected[n] = bytes(int(x) for x in ip.split(".")) + (6881).to_bytes(2, "big")
            elif action < 0.8:
                s.announce(req(n, event="stopped"))
                expected.pop(n, None)
            if IH in s.torrents and step % 3 == 0:
                me = rng.randrange(1, 40)
                peers, _ = s.torrents[IH].compact_sample(b"%020d" % me, 100, s.rng)
                got = sorted(peers[i:i + 6] for i in range(0, len(peers), 6))
                assert got == sorted(v for k, v in expected.items() if k != me)
