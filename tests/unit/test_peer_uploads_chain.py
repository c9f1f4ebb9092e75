"""The seeder's chain first pass (``SwarmConfig.seed_heads``) in memory, with a Clock.

Until every piece has left once, a super-seeding seeder unchokes only
``seed_heads`` interested peers; the others stay choked, so they ask the heads
and each other and every piece flows on a hop at a time (the 2010 original's
chain, without its 30 s rotation).  These tests pin the liveness rules that
keep a choked peer from waiting on the seeder for ever: a waiter is unchoked
when the heads leave the seeder's link idle, when a head stops reading, after
``seed_head_wait`` at the latest, and all at once when the first pass ends.
"""

from __future__ import annotations

import pytest
from twisted.python import usage

from murder.peer.config import SwarmConfig
from murder.peer.wire import BLOCK_SIZE
from murder.testing import Uploader

from test_swarm_core import Fleet

PIECES = Uploader.PIECES


class _Seeder(Uploader):
    """A super-seeding seeder holding every piece, in a chain first pass."""

    def __init__(self, heads: int = 1, **config) -> None:
        super().__init__(SwarmConfig(super_seed=True, seed_heads=heads, **config))

    def tick(self, seconds: float, step: float = 0.25) -> None:
        for _ in range(round(seconds / step)):
            self.clock.advance(step)
            self.uploads.chain.tick(self.clock.seconds())


class ChainFirstPassTests:
    """Who the seeder unchokes during its first pass, and when a waiter's turn comes."""

    def test_off_by_default_every_interested_peer_is_unchoked(self):
        """seed_heads = 0 (the default): all interested peers are unchoked at once."""
        assert SwarmConfig().seed_heads == 0
        seat = _Seeder(heads=0)
        for name in "abc":
            seat.peer(name)
        assert seat.unchoked() == ["a", "b", "c"]

    def test_only_the_heads_are_unchoked(self):
        """seed_heads = 2: the first two interested peers are unchoked, the third
        waits choked (so it sends the seeder no requests: none can pile up)."""
        seat = _Seeder(heads=2)
        a, b, c = (seat.peer(name) for name in "abc")
        assert seat.unchoked() == ["a", "b"]
        assert c.am_choking and list(seat.uploads.chain.waiting) == [c]

    def test_a_busy_head_keeps_the_waiters_choked(self):
        """While the head always has requests queued (its socket paused, so they
        stay queued), no waiter is unchoked before seed_head_wait."""
        seat = _Seeder(heads=1, seed_head_wait=10.0)
        a, b = seat.peer("a"), seat.peer("b")
        a.send_paused = True  # the link is full: the head's requests stay queued
        seat.ask(a, 0, 1, 2)
        seat.tick(5.0)
        assert b.am_choking and seat.unchoked() == ["a"]

    def test_an_idle_head_lets_the_next_waiter_in(self):
        """A head that asks for nothing leaves the seeder's link idle: after
        seed_head_idle the longest-waiting peer is unchoked as another head."""
        seat = _Seeder(heads=1, seed_head_idle=0.5, seed_head_wait=10.0)
        a, b, c = (seat.peer(name) for name in "abc")
        seat.tick(0.25)
        assert b.am_choking
        seat.tick(0.5)
        assert not b.am_choking and c.am_choking
        assert seat.unchoked() == ["a", "b"]

    def test_a_head_that_leaves_is_replaced(self):
        """The head disconnects: the longest-waiting peer takes its place at once."""
        seat = _Seeder(heads=1)
        a, b, c = (seat.peer(name) for name in "abc")
        a.active = False
        seat.uploads.forget(a)
        assert not b.am_choking and c.am_choking

    def test_a_head_that_loses_interest_is_replaced(self):
        """A head that wants nothing more (it has everything) is replaced."""
        seat = _Seeder(heads=1)
        a, b = seat.peer("a"), seat.peer("b")
        a.peer_interested = False
        seat.uploads.update_choke(a)
        assert a.am_choking and not b.am_choking

    def test_a_head_that_stops_reading_gets_a_second_head_beside_it(self):
        """A head whose socket has not drained for stuck_turn_timeout (wedged) is
        no chain: one waiter is unchoked beside it, once per stuck head."""
        seat = _Seeder(heads=1, stuck_turn_timeout=2.0, seed_head_wait=10.0)
        a, b, c = (seat.peer(name) for name in "abc")
        a.send_paused, a.paused_since = True, seat.clock.seconds()
        seat.ask(a, 0, 1)
        seat.tick(1.75)
        assert b.am_choking
        seat.tick(0.5)
        assert not b.am_choking and c.am_choking
        seat.tick(1.0)
        assert c.am_choking

    def test_no_peer_waits_longer_than_seed_head_wait(self):
        """Even behind a head that keeps the seeder busy, a waiter (it may be unable
        to reach the head) is unchoked after seed_head_wait."""
        seat = _Seeder(heads=1, seed_head_wait=3.0)
        a, b = seat.peer("a"), seat.peer("b")
        a.send_paused = True
        seat.ask(a, 0, 1, 2, 3)
        seat.tick(2.75)
        assert b.am_choking
        seat.tick(0.5)
        assert not b.am_choking

    def test_every_waiter_is_unchoked_when_the_first_pass_ends(self):
        """Once every piece has left once the chain is over: all waiters are
        unchoked, and a peer that becomes interested later is unchoked at once."""
        seat = _Seeder(heads=1, seed_head_wait=100.0)
        a, b, c = (seat.peer(name) for name in "abc")
        seat.ask(a, *range(PIECES))
        assert seat.uploads.first_copy_at is not None
        assert not b.am_choking and not c.am_choking
        d = seat.peer("d")
        assert not d.am_choking


class _Downloader(Uploader):
    """A peer still downloading (it lacks the last piece) with ``peer_heads`` on."""

    def __init__(self, heads: int = 1, **config) -> None:
        super().__init__(SwarmConfig(peer_heads=heads, upload_slots=1, **config),
                         held=self.PIECES - 1)


class PeerChainTests:
    """``peer_heads``: a downloading peer unchokes only that many requesters, and a
    waiter gets in as soon as an upload slot would idle."""

    def test_a_waiter_is_unchoked_when_a_slot_frees_and_no_head_waits(self):
        """The head's piece is sent and it asks nothing more: the slot is free,
        so the waiter is unchoked at once, not after seed_head_idle."""
        seat = _Downloader(heads=1, seed_head_idle=10.0, seed_head_wait=100.0)
        a, b = seat.peer("a"), seat.peer("b")
        assert seat.unchoked() == ["a"] and b.am_choking
        seat.ask(a, 0)
        assert seat.pieces() == [("a", 0)]
        assert not b.am_choking and seat.unchoked() == ["a", "b"]

    def test_a_busy_slot_keeps_the_waiter_choked(self):
        """While the head's turn still has blocks queued (its socket is full),
        the slot is not free and the waiter stays choked."""
        seat = _Downloader(heads=1, seed_head_idle=10.0, seed_head_wait=100.0)
        a, b = seat.peer("a"), seat.peer("b")
        a.send_paused = True
        seat.ask(a, 0, 1)
        assert b.am_choking and seat.unchoked() == ["a"]


class ChainSwarmTests:
    """Whole deploys in memory with the chain on."""

    def test_every_peer_completes_and_the_seeder_sends_about_one_copy(self):
        """seed_heads = 1, 8 peers: all complete with the exact payload, the
        seeder uploads ≤ 1.1 copies, and in its first pass it sent to the head only."""
        fleet = Fleet(8, size=24 * 2**15, seed_heads=1, seed_head_wait=100.0)
        fleet.announce_all()
        fleet.run(30)
        fleet.assert_all_complete()
        assert fleet.seeder.uploaded <= 1.1 * fleet.meta.total_length
        # Every piece's first copy went to the one head.
        assert len(set(fleet.seeder.uploads._served_to.values())) == 1
        assert fleet.seeder.uploads.chain.promotions == 0

    def test_a_chain_of_peers_completes(self):
        """seed_heads = 1 and peer_heads = 1 (each peer serves one downstream while
        it downloads): all 8 peers still complete with the exact payload."""
        fleet = Fleet(8, size=24 * 2**15, seed_heads=1, peer_heads=1)
        fleet.announce_all()
        fleet.run(30)
        fleet.assert_all_complete()
        assert fleet.seeder.uploaded <= 1.1 * fleet.meta.total_length


class CompletedOwnerTests:
    """Super-seeding (every mode): a peer that was sent the whole payload and then
    hung up is a seed that left a seed; its pieces are not sent again at once."""

    def test_pieces_of_a_completed_owner_that_left_are_refused_once(self):
        """After A got every piece and disconnected, B's request for one of them
        is refused; asked again a second later (B may be unable to reach A), served."""
        seat = _Seeder(heads=0)
        a, b = seat.peer("a"), seat.peer("b")
        seat.ask(a, *range(PIECES))
        a.active = False
        seat.uploads.forget(a)
        sent = len(seat.sent())
        seat.ask(b, 3)
        assert len(seat.sent()) == sent  # refused
        seat.clock.advance(1.0)
        seat.ask(b, 3)
        assert seat.sent()[sent:] == [("b", 3, 0), ("b", 3, BLOCK_SIZE)]

    def test_pieces_of_an_owner_that_left_early_are_served(self):
        """An owner that left before it had everything (crashed) holds nothing:
        its pieces go to the next asker at once."""
        seat = _Seeder(heads=0)
        a, b = seat.peer("a"), seat.peer("b")
        seat.ask(a, 3)
        a.active = False
        seat.uploads.forget(a)
        sent = len(seat.sent())
        seat.ask(b, 3)
        assert seat.sent()[sent:] == [("b", 3, 0), ("b", 3, BLOCK_SIZE)]


class SeedHeadsOptionTests:
    """``--seed-heads`` on the command line becomes ``SwarmConfig.seed_heads``."""

    def test_flag_reaches_the_swarm_config(self, tmp_path, small_torrent):
        """`murder seed --seed-heads 2` runs the swarm with seed_heads=2 (super-seeding)."""
        from murder.peer.options import SeederOptions, config_from

        opts = SeederOptions()
        opts.parseOptions(["--torrent", small_torrent, "--file", str(tmp_path),
                           "--seed-heads", "2"])
        swarm = config_from(opts).swarm
        assert swarm.seed_heads == 2 and swarm.super_seed

    def test_negative_is_refused(self, tmp_path, small_torrent):
        """--seed-heads -1 is a usage error with a clear message."""
        from murder.peer.options import SeederOptions

        with pytest.raises(usage.UsageError, match="--seed-heads cannot be negative"):
            SeederOptions().parseOptions(["--torrent", small_torrent, "--file",
                                          str(tmp_path), "--seed-heads", "-1"])


class RequestHorizonOptionTests:
    """``--request-horizon`` (a benchmark knob) becomes ``SwarmConfig.request_horizon``."""

    def test_flag_reaches_the_swarm_config(self, tmp_path, small_torrent):
        """`murder peer --request-horizon 0.5` keeps 0.5 s requested; default 0.15."""
        from murder.peer.options import PeerOptions, config_from

        for extra, want in (([], 0.15), (["--request-horizon", "0.5"], 0.5)):
            opts = PeerOptions()
            opts.parseOptions(["--torrent", small_torrent, "--saveas",
                               str(tmp_path / "x"), *extra])
            assert config_from(opts).swarm.request_horizon == want

    def test_zero_is_refused(self, tmp_path, small_torrent):
        """--request-horizon 0 is a usage error with a clear message."""
        from murder.peer.options import PeerOptions

        with pytest.raises(usage.UsageError, match="--request-horizon must be above 0"):
            PeerOptions().parseOptions(["--torrent", small_torrent, "--saveas",
                                        str(tmp_path / "x"), "--request-horizon", "0"])


class FarWaitOptionTests:
    """``--far-wait`` and ``--far-backups`` (rack-aware deploys) become
    ``SwarmConfig.far_wait`` and ``far_backups``."""

    def test_flag_reaches_the_swarm_config(self, tmp_path, small_torrent):
        """`murder peer --far-wait 0` turns the wait off, `--far-backups -1`
        the backups; the defaults are SwarmConfig's."""
        from murder.peer.config import SwarmConfig
        from murder.peer.options import PeerOptions, config_from

        for extra, field, want in (
                ([], "far_wait", SwarmConfig.far_wait), (["--far-wait", "0"], "far_wait", 0.0),
                (["--far-wait", "7.5"], "far_wait", 7.5),
                ([], "far_backups", SwarmConfig.far_backups),
                (["--far-backups", "-1"], "far_backups", -1),
                (["--far-backups", "3"], "far_backups", 3)):
            opts = PeerOptions()
            opts.parseOptions(["--torrent", small_torrent, "--saveas",
                               str(tmp_path / "x"), *extra])
            assert getattr(config_from(opts).swarm, field) == want

    @pytest.mark.parametrize("extra, message", [
        (["--far-wait", "-1"], "--far-wait must be from 0 to 1000"),
        (["--far-backups", "-2"], "--far-backups must be from -1 to 254")])
    def test_out_of_range_is_refused(self, tmp_path, small_torrent, extra, message):
        """Out-of-range values are usage errors with a clear message."""
        from murder.peer.options import PeerOptions

        with pytest.raises(usage.UsageError, match=message):
            PeerOptions().parseOptions(["--torrent", small_torrent, "--saveas",
                                        str(tmp_path / "x"), *extra])
