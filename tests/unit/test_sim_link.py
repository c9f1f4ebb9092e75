"""The simulator's speed-ups change nothing simulated: the message-level link
against real bytes, batched deliveries against one heap entry per call."""

from __future__ import annotations

import gc
import random
from dataclasses import replace

from twisted.internet.testing import StringTransport

from murder.errors import ProtocolError
from murder.peer import wire
from murder.peer.protocol import State
from murder.sim.clock import SimClock
from murder.sim.fleet import FleetConfig, build_and_run
from murder.sim.link import SimMessageProtocol

SMALL = FleetConfig(hosts=20, hosts_per_rack=5, nic_bps=1e9, oversubscription=4,
                    payload=4 * 2**20, piece_length=2**18, real_piece_length=2**14,
                    numwant=8, max_connections=12, seed=5, policy="rack")


def fingerprint(result) -> tuple:
    return (result.completion_times, result.cross_rack_bytes, result.seeder_upload_ratio,
            result.calls, result.connections, result.log_levels)


class MessageLinkTests:
    """Peers handing each other parsed messages run the deploy the bytes would."""

    def test_messages_and_bytes_give_the_same_deploy(self):
        """A rack-aware fleet and a scaled (one real block per piece) random
        fleet: every completion time, byte count, call and log level is the
        same over the message-level link as over real peer-wire bytes."""
        scaled = replace(SMALL, policy="random", piece_length=2**20, startup_max=0.05)
        for cfg in (SMALL, scaled):
            over_bytes = build_and_run(replace(cfg, link="bytes"))
            over_messages = build_and_run(replace(cfg, link="messages"))
            assert over_bytes.completed == cfg.hosts
            assert fingerprint(over_messages) == fingerprint(over_bytes)

    def test_sizes_match_the_encoded_messages(self):
        """Each message is counted on the network at its encoded length
        (a PIECE at its header plus the block times the scale)."""
        sent: list = []

        class Transport:
            conn = type("Conn", (), {"scale": 64})()

            def post(self, size, message):
                sent.append((size, message))

            def post_many(self, size, messages):
                sent.append((size, messages))

        proto = SimMessageProtocol(core=None, outgoing=True, address=("10.0.0.1", 1))
        proto.transport = Transport()
        proto.state = State.ACTIVE
        bits = wire.Bitfield(20)
        proto.send_have(7)
        proto.send_choke()
        proto.send_requests([(1, 0, 16384), (1, 16384, 16384)])
        proto.send_reject((2, 0, 16384))
        proto.send_piece(3, 0, b"x" * 100)
        proto.send_bitfield(bits)
        proto.send_keepalive()
        assert [size for size, _ in sent] == [
            len(wire.have(7)), len(wire.simple(wire.CHOKE)),
            2 * len(wire.request(1, 0, 16384)), len(wire.reject(2, 0, 16384)),
            len(wire.piece_header(3, 0, 100)) + 100 * 64,
            len(wire.bitfield(bits.tobytes())), len(wire.KEEPALIVE)]
        assert sent[0][1] == (wire.HAVE, 7, None, None)
        assert sent[2][1] == [(wire.REQUEST, 1, 0, 16384), (wire.REQUEST, 1, 16384, 16384)]

    def test_core_protocol_error_drops_the_connection(self):
        """A ProtocolError from the core while handling a message drops the
        connection and reports the peer, as dataReceived does."""
        calls: list = []

        class Core:
            def heard_from(self, peer):
                calls.append("heard")

            def got_have(self, peer, index):
                raise ProtocolError("bad have")

            def misbehaved(self, link, why):
                calls.append(("misbehaved", why))

        class Transport(StringTransport):
            conn = type("Conn", (), {"closed": False})()

        proto = SimMessageProtocol(Core(), outgoing=True, address=("10.0.0.1", 1))
        transport = Transport()
        proto.transport = transport
        proto.state = State.ACTIVE
        proto.peer = object()
        proto.message_received((wire.HAVE, 3, None, None))
        assert calls == ["heard", ("misbehaved", "bad have")]
        assert transport.disconnecting
        proto.message_received((wire.HAVE, 4, None, None))
        assert calls == ["heard", ("misbehaved", "bad have")]


class BatchedDeliveryTests:
    """Deliveries for one instant share a heap entry without changing the order."""

    def test_back_to_back_deliveries_share_one_entry(self):
        """Three deliveries for one instant fire as one event, in order;
        the clock still counts the calls."""
        clock = SimClock()
        fired: list = []
        for name in "abc":
            clock.deliver_later(1.0, fired.append, name)
        clock.run(5)
        assert fired == ["a", "b", "c"]
        assert clock.events == 1 and clock.events + clock.batched == 3

    def test_other_call_for_the_instant_closes_the_batch(self):
        """A callLater for the same instant between two deliveries fires
        between them, as it would with one heap entry per call."""
        clock = SimClock()
        fired: list = []
        clock.deliver_later(1.0, fired.append, "a")
        clock.callLater(1.0, fired.append, "timer")
        clock.deliver_later(1.0, fired.append, "b")
        clock.run(5)
        assert fired == ["a", "timer", "b"]

    def test_random_schedules_fire_as_unbatched(self):
        """Random mixes of deliveries, timers, cancels and calls scheduled
        while firing give the same firing order with batching on and off."""

        def trace(seed: int, batching: bool) -> list:
            rng = random.Random(seed)
            clock = SimClock()
            clock.batching = batching
            fired: list = []
            timers: list = []

            def fire(tag) -> None:
                fired.append((clock.now, tag))
                if rng.random() < 0.3 and len(fired) < 400:
                    schedule(tag + 1000)

            def schedule(tag: int) -> None:
                delay = rng.choice([0.0, 0.001, 0.002, 0.003])
                kind = rng.random()
                if kind < 0.6:
                    clock.deliver_later(delay, fire, tag)
                elif kind < 0.9:
                    timers.append(clock.callLater(delay, fire, tag))
                elif timers and timers[-1].active():
                    timers.pop().cancel()

            for tag in range(200):
                schedule(tag)
            clock.run(10)
            return fired

        for seed in range(5):
            assert trace(seed, True) == trace(seed, False)

    def test_fleet_same_with_and_without_batching(self):
        """A fleet fires fewer heap entries with batching and simulates the
        same deploy: same completion times, bytes and calls."""
        batched = build_and_run(SMALL)
        SimClock.batching = False
        try:
            unbatched = build_and_run(SMALL)
        finally:
            SimClock.batching = True
        assert fingerprint(batched) == fingerprint(unbatched)
        assert unbatched.events == unbatched.calls
        assert batched.events < 0.8 * unbatched.events

    def test_halt_inside_a_batch_keeps_the_rest(self):
        """halt() from a batched call stops there; the rest fire on the next run."""
        clock = SimClock()
        fired: list = []
        clock.deliver_later(1.0, lambda x: (fired.append(x), clock.halt()), "a")
        clock.deliver_later(1.0, fired.append, "b")
        clock.deliver_later(1.0, fired.append, "c")
        clock.callLater(2.0, fired.append, "later")
        clock.run(5)
        assert fired == ["a"]
        clock.run(5)
        assert fired == ["a", "b", "c", "later"]
        assert clock.events + clock.batched == 4


class GarbageCollectorTests:
    """The run switches the cyclic collector off and back on."""

    def test_collector_restored(self):
        """After a run the collector is enabled again (and stays off if it was off)."""
        cfg = replace(SMALL, hosts=4, hosts_per_rack=0, payload=2**19)
        assert gc.isenabled()
        build_and_run(cfg)
        assert gc.isenabled()
        gc.disable()
        try:
            build_and_run(cfg)
            assert not gc.isenabled()
        finally:
            gc.enable()
