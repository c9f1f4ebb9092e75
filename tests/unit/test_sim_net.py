"""Unit tests for murder.sim: the virtual clock and the flow-level network model."""

from __future__ import annotations

import pytest

from murder.sim.clock import SimClock
from murder.sim.net import Network


def network(**kw) -> tuple[SimClock, Network]:
    clock = SimClock()
    return clock, Network(clock, hop_latency=0.0, goodput=1.0, small=0, **kw)


def arrivals(clock: SimClock, log: list, name: str):
    return lambda payload: log.append((name, payload, clock.now))


class SimClockTests:
    """SimClock fires calls in time order and honours cancel/reset."""

    def test_order_cancel_reset(self):
        """Calls fire by time, ties in scheduling order; cancelled never; reset moves."""
        clock = SimClock()
        fired = []
        clock.callLater(2, fired.append, "b")
        clock.callLater(1, fired.append, "a")
        clock.callLater(1, fired.append, "a2")
        gone = clock.callLater(0.5, fired.append, "never")
        gone.cancel()
        moved = clock.callLater(0.1, fired.append, "moved")
        moved.reset(3)
        clock.run(10)
        assert fired == ["a", "a2", "b", "moved"]
        assert clock.now == 3
        assert not moved.active()

    def test_halt(self):
        """halt() ends run() after the current call; later calls stay queued."""
        clock = SimClock()
        fired = []
        clock.callLater(1, lambda: (fired.append(1), clock.halt()))
        clock.callLater(2, fired.append, 2)
        clock.run(10)
        assert fired == [1]
        clock.run(10)
        assert fired == [1, 2]


class FairShareTests:
    """Rates are max-min fair over NICs and rack uplinks."""

    def test_one_flow_full_rate_and_latency(self):
        """1000 bytes at 100 B/s arrive after 10 s plus the path latency (2 hops)."""
        clock = SimClock()
        net = Network(clock, hop_latency=0.005, goodput=1.0, small=0)
        rack = net.add_rack()
        a, b = net.add_host(rack, 100), net.add_host(rack, 100)
        log: list = []
        net.send(net.pipe(a, b), 1000, "x", arrivals(clock, log, "ab"))
        clock.run(100)
        assert log == [("ab", "x", pytest.approx(10.01))]
        assert net.sent_by_host[a] == 1000

    def test_shared_upload_then_speeds_up(self):
        """Two flows out of one host split its upload; when one ends the other gets it all."""
        clock, net = network()
        rack = net.add_rack()
        s, x, y = (net.add_host(rack, 100) for _ in range(3))
        log: list = []
        net.send(net.pipe(s, x), 100, "small", arrivals(clock, log, "sx"))
        net.send(net.pipe(s, y), 300, "big", arrivals(clock, log, "sy"))
        clock.run(100)
        # 50 B/s each until t=2 (100 bytes), then 200 bytes alone at 100 B/s.
        assert log == [("sx", "small", pytest.approx(2.0)), ("sy", "big", pytest.approx(4.0))]

    def test_max_min_gives_leftover_to_unconstrained_flow(self):
        """S sends to X, Y, Z (1/3 each); W→Z takes the rest of Z's download, 2/3.

        The simpler "capacity ÷ flows on the tightest link" rule would give W→Z
        only half of Z's link.
        """
        clock, net = network()
        rack = net.add_rack()
        s, x, y, z, w = (net.add_host(rack, 90) for _ in range(5))
        pipes = [net.pipe(s, x), net.pipe(s, y), net.pipe(s, z), net.pipe(w, z)]
        for p in pipes:
            net.send(p, 10**6, None, lambda _: None)
        clock.run(0.0)
        assert [p.rate for p in pipes] == [pytest.approx(r) for r in (30, 30, 30, 60)]

    def test_oversubscribed_rack_uplink(self):
        """4 hosts × 100 B/s at 4:1 share a 100 B/s uplink; traffic inside a rack does not."""
        clock, net = network()
        racks = [net.add_rack(100, 100) for _ in range(2)]
        r0 = [net.add_host(racks[0], 100) for _ in range(5)]
        r1 = [net.add_host(racks[1], 100) for _ in range(4)]
        log: list = []
        for i in range(4):
            net.send(net.pipe(r0[i], r1[i]), 100, i, arrivals(clock, log, "x"))
        net.send(net.pipe(r0[3], r0[4]), 100, "local", arrivals(clock, log, "in"))
        clock.run(100)
        cross = sorted(t for name, _, t in log if name == "x")
        local = [t for name, _, t in log if name == "in"]
        # Each cross-rack flow gets 25 B/s of the uplink: 4 s.  The local flow
        # shares r0[3]'s NIC with one cross flow (25 B/s), so it gets 75 B/s
        # until that one ends: 100 bytes in 4/3 s.
        assert cross == [pytest.approx(4.0)] * 4
        assert local == [pytest.approx(4 / 3)]
        assert net.cross_rack_bytes == 400

    def test_fifo_small_after_big(self):
        """A small chunk queued behind a big one arrives after it, never before."""
        clock = SimClock()
        net = Network(clock, hop_latency=0.001, goodput=1.0, small=64)
        rack = net.add_rack()
        a, b = net.add_host(rack, 1000), net.add_host(rack, 1000)
        pipe = net.pipe(a, b)
        log: list = []
        net.send(pipe, 8, "have-1", arrivals(clock, log, "ab"))   # idle pipe: fast path
        net.send(pipe, 5000, "block", arrivals(clock, log, "ab"))
        net.send(pipe, 8, "have-2", arrivals(clock, log, "ab"))
        clock.run(100)
        assert [p for _, p, _ in log] == ["have-1", "block", "have-2"]
        assert log[1][2] == pytest.approx(5.002)
        assert log[2][2] == log[1][2]

    def test_quantum_limits_recomputations(self):
        """With a rate quantum, fair shares are recomputed at most once per quantum."""
        clock, net = network(rate_quantum=1.0)
        rack = net.add_rack()
        hosts = [net.add_host(rack, 100) for _ in range(11)]
        for i in range(10):
            clock.callLater(i * 0.01, net.send, net.pipe(hosts[0], hosts[i + 1]), 50, i,
                            lambda _: None)
        clock.run(100)
        assert net.solves <= 12
        assert net.sent_by_host[hosts[0]] == 500


class ProcessCpuTests:
    """enable_cpu: hosts are processes sharing a machine's cores fairly."""

    def test_busy_processes_share_the_cores(self):
        """Two flows between four hosts on a 1-core machine: four busy processes
        get a quarter core each, so each flow runs at quarter-core ÷ cost per
        byte (the CPU, not the 1000 B/s NICs, limits it)."""
        clock, net = network()
        net.enable_cpu(1.0, 0.01)  # 100 bytes per CPU-second
        rack = net.add_rack()
        a, b, c, d = (net.add_host(rack, 1000) for _ in range(4))
        pipes = [net.pipe(a, b), net.pipe(c, d)]
        for p in pipes:
            net.send(p, 10**6, None, lambda _: None)
        clock.run(0.0)
        assert net.cpu_share() == pytest.approx(0.25)
        assert [p.rate for p in pipes] == [pytest.approx(25.0)] * 2

    def test_other_busy_processes_count(self):
        """Processes busy with something else (start-up) take their share too."""
        clock, net = network()
        net.enable_cpu(2.0, 0.01)
        rack = net.add_rack()
        a, b = (net.add_host(rack, 1000) for _ in range(2))
        net.cpu_other_busy = 6
        pipe = net.pipe(a, b)
        net.send(pipe, 10**6, None, lambda _: None)
        clock.run(0.0)
        assert pipe.rate == pytest.approx(100 * 2.0 / 8)
