"""Unit tests for murder.tracker.topology: the file format and the rack-aware handout."""

from __future__ import annotations

import random

import pytest
from twisted.internet.task import Clock
from twisted.python import usage

from murder import bencode
from murder.tracker import tap, topology
from murder.tracker.announce_codec import AnnounceRequest
from murder.tracker.store import PeerStore
from murder.tracker.app import TrackerApp

IH = b"\x22" * 20

TEXT = """\
# four racks in two rows
10.0.0.0/24   dc1/row0/rack0
10.0.1.0/24   dc1/row0/rack1
10.0.2.0/24   dc1/row1/rack2
10.0.3.0/24   dc1/row1/rack3
10.0.3.128/25 dc1/row1/rack3/shelf9   # more specific wins
"""


def announce(s: PeerStore, n: int, rack: int, *, left: int = 100) -> None:
    s.announce(AnnounceRequest(
        info_hash=IH, peer_id=b"%020d" % n, ip=f"10.0.{rack}.{n % 250 + 2}", port=6881,
        uploaded=0, downloaded=0, left=left, event="started", compact=True,
        no_peer_id=False, numwant=50))


def fleet(policy=None, racks: int = 4, per_rack: int = 10) -> PeerStore:
    """A seeder (id 0, rack 0) and ``per_rack`` leechers in each rack."""
    s = PeerStore(Clock(), rng=random.Random(3))
    s.handout = policy
    announce(s, 0, 0, left=0)
    for r in range(racks):
        for i in range(per_rack):
            announce(s, 1 + r * per_rack + i, r)
    return s


def rack_of(peer) -> int:
    return int(peer.ip.split(".")[2])


class ParseTests:
    """Topology files: CIDR LOCATION lines, most specific CIDR first."""

    def test_locate_and_closeness(self):
        """Addresses map to the most specific CIDR; outside every CIDR is far (None)."""
        topo = topology.parse(TEXT)
        assert topo.locate("10.0.1.7") == ("dc1", "row0", "rack1")
        assert topo.locate("10.0.3.200") == ("dc1", "row1", "rack3", "shelf9")
        assert topo.locate("192.0.2.1") is None
        assert topo.locate("not-an-ip") is None
        c = topology.Topology.closeness
        assert c(topo.locate("10.0.0.1"), topo.locate("10.0.0.2")) == 3
        assert c(topo.locate("10.0.0.1"), topo.locate("10.0.1.2")) == 2
        assert c(topo.locate("10.0.0.1"), topo.locate("10.0.2.2")) == 1
        assert c(topo.locate("10.0.0.1"), None) == -1

    @pytest.mark.parametrize("text, where", [
        ("10.0.0.0/24\n", ":1:"),
        ("10.0.0.0/24 dc1/rack0\nbogus dc1/rack1\n", ":2:"),
        ("10.0.0.0/24 ///\n", ":1:"),
        ("# only a comment\n", ":0:"),
    ])
    def test_bad_lines(self, text, where):
        """A bad line fails with the file name and its line number."""
        with pytest.raises(topology.TopologyError) as e:
            topology.parse(text, "topo.txt")
        assert f"topo.txt{where}" in str(e.value)

    def test_tracker_option(self, tmp_path):
        """`murder tracker --topology FILE` checks the file at start and keeps its path."""
        good = tmp_path / "topo"
        good.write_text(TEXT)
        bad = tmp_path / "bad"
        bad.write_text("10.0.0.0/33 dc1/rack0\n")
        opts = tap.Options()
        opts.parseOptions(["--topology", str(good), "--dfile", ""])
        assert opts.config.topology == str(good)
        from twisted.internet.testing import MemoryReactorClock

        top = tap.buildService(opts.config, MemoryReactorClock())
        assert isinstance(top.store.handout, topology.RackAwareHandout)
        plain = tap.Options()
        plain.parseOptions(["--dfile", ""])
        assert tap.buildService(plain.config, MemoryReactorClock()).store.handout is None
        with pytest.raises(usage.UsageError, match="--topology: .*bad:1:"):
            tap.Options().parseOptions(["--topology", str(bad), "--dfile", ""])
        with pytest.raises(usage.UsageError, match="in-memory store only"):
            tap.Options().parseOptions(["--topology", str(good), "--dfile", "",
                                        "--store", "redis://127.0.0.1:6379/0"])
        with pytest.raises(usage.UsageError, match="cannot read"):
            tap.Options().parseOptions(["--topology", str(tmp_path / "none"), "--dfile", ""])


class HandoutTests:
    """RackAwareHandout: closest first, seeders always, a far share for every rack."""

    def policy(self, **kw) -> topology.RackAwareHandout:
        return topology.RackAwareHandout(topology.parse(TEXT), **kw)

    def test_seeder_and_far_share_in_every_list(self):
        """Every requester of every rack gets the seeder, its rack mates and farther peers."""
        s = fleet(self.policy())
        torrent = s.torrents[IH]
        for n in range(1, 41):
            me = torrent.peers[b"%020d" % n]
            four, six = s.sample(torrent, me.peer_id, 12)
            assert six == []
            assert len(four) == 12
            assert len({p.peer_id for p in four}) == 12 and me not in four
            assert four[0].left == 0, "the seeder comes first"
            mine = [p for p in four[1:] if rack_of(p) == rack_of(me)]
            others = [p for p in four[1:] if rack_of(p) != rack_of(me)]
            assert len(mine) >= 6, "closest first"
            assert len(others) >= 2, "a far share so no rack is cut off"
            # Own rack listed before any farther peer (after the seeder).
            assert [rack_of(p) == rack_of(me) for p in four[1:1 + len(mine)]] == \
                [True] * len(mine)

    def test_gateways_only_cross_racks(self):
        """With gateways=2 only each rack's first two peers get a far share;
        everyone still gets the seeder."""
        s = fleet(self.policy(gateways=2))
        torrent = s.torrents[IH]
        crossing = {r: 0 for r in range(4)}
        for n in range(1, 41):
            me = torrent.peers[b"%020d" % n]
            four, _ = s.sample(torrent, me.peer_id, 8)
            assert four[0].left == 0
            if any(rack_of(p) != rack_of(me) for p in four[1:]):
                crossing[rack_of(me)] += 1
        assert crossing == {0: 2, 1: 2, 2: 2, 3: 2}

    def test_row_before_rest_of_dc(self):
        """After the own rack and the far share, the same row is preferred."""
        s = fleet(self.policy(far_share=0.0, seeders=0))
        torrent = s.torrents[IH]
        four, _ = s.sample(torrent, b"%020d" % 1, 15)  # rack 0, row 0
        racks = [rack_of(p) for p in four]
        assert racks[:9] == [0] * 9
        assert set(racks[9:]) == {1} or set(racks[9:]) <= {0, 1}

    def test_strict_policy_starves_other_rows(self):
        """Without seeders and far share (Kraken's simple handout) a rack in the
        other row never hears of the seeder: what the default policy prevents."""
        s = fleet(self.policy(far_share=0.0, seeders=0))
        torrent = s.torrents[IH]
        four, _ = s.sample(torrent, b"%020d" % 35, 12)  # rack 3, row 1
        assert all(rack_of(p) in (2, 3) for p in four)
        assert all(p.left for p in four)

    def test_everyone_when_numwant_covers_swarm(self):
        """numwant ≥ the swarm: every other peer, still seeders first."""
        s = fleet(self.policy())
        torrent = s.torrents[IH]
        four, _ = s.sample(torrent, b"%020d" % 7, 500)
        assert len(four) == 40
        assert four[0].left == 0

    def test_unknown_requester_gets_random(self):
        """A requester outside every CIDR gets the plain random sample."""
        s = fleet(self.policy())
        s.announce(AnnounceRequest(
            info_hash=IH, peer_id=b"x" * 20, ip="192.0.2.9", port=6881, uploaded=0,
            downloaded=0, left=5, event="started", compact=True, no_peer_id=False, numwant=5))
        torrent = s.torrents[IH]
        four, _ = s.sample(torrent, b"x" * 20, 5)
        assert len(four) == 5

    def test_new_and_departed_peers(self):
        """Peers that join later are handed out; peers that left are not."""
        s = fleet(self.policy())
        torrent = s.torrents[IH]
        s.sample(torrent, b"%020d" % 1, 10)  # builds the index
        announce(s, 99, 0)
        s.announce(AnnounceRequest(
            info_hash=IH, peer_id=b"%020d" % 2, ip="10.0.0.4", port=6881, uploaded=0,
            downloaded=0, left=5, event="stopped", compact=True, no_peer_id=False, numwant=5))
        four, _ = s.sample(torrent, b"%020d" % 1, 500)
        ids = {p.peer_id for p in four}
        assert b"%020d" % 99 in ids
        assert b"%020d" % 2 not in ids

    def test_tracker_reply_uses_policy(self):
        """The HTTP tracker's compact reply goes through the store's handout policy."""
        s = fleet(self.policy())
        app = TrackerApp(s)
        q = (b"/announce?info_hash=" + b"%22" * 20 + b"&peer_id=" + b"%020d" % 33 +
             b"&port=6881&left=5&compact=1&numwant=3&ip=10.0.3.35")
        reply = bencode.decode(app.handle(q, "10.0.3.35").body)
        peers = reply[b"peers"]
        assert len(peers) == 18
        first = ".".join(str(b) for b in peers[:4])
        seeder = s.torrents[IH].peers[b"%020d" % 0]
        assert first == seeder.ip
