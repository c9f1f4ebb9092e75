"""Flow-level datacenter network: NICs, racks, oversubscribed rack uplinks, hop latency.

Every byte stream (one direction of one TCP connection) is a :class:`Pipe`.
While it has bytes queued it is a *flow* crossing two links (its source's
NIC upload, its destination's NIC download) or four when it leaves its rack
(plus the source rack's uplink and the destination rack's downlink; the spine
is non-blocking).  Rates are shared **max-min fairly** (progressive filling),
recomputed when a flow starts or ends:

- Why max-min: long-lived TCP flows with similar round-trip times through
  drop-tail or fair queues converge to about an equal share of their
  bottleneck, and a flow held back elsewhere leaves its share to the others.
  That is the standard flow-level model (SimGrid, ns-3's flow models) and it
  matters here: a receiver fed by the seeder (slowed by the seeder's other
  turns) and by a peer gets the rest of its link from the peer, which the
  simpler "capacity ÷ flows on the tightest link" rule would throw away.
- Why flow level, not packets: a 10,000-host deploy moves 10 TB; only whole
  transfers can be events.  What is lost: slow start, loss recovery and
  queueing delay (bench/netns.py's shapers queue up to 100 ms; idle RTT is
  0.1–0.2 ms).  ``goodput`` (payload share of the line rate, 1448/1514 for
  TCP at a 1500-byte MTU) is applied to every capacity.
- ``rate_quantum`` > 0 trades fidelity for speed at scale: rates are then
  recomputed at most once per quantum of virtual time; in between, a new
  flow takes the tightest link's equal share and a finished flow's capacity
  idles until the next recomputation.

Bytes leave a pipe in FIFO order: a chunk is delivered (``deliver(payload)``)
one path latency after its last byte was sent.  A small chunk sent on an idle
pipe (a HAVE, a REQUEST) skips the rate sharing: it takes its size at the
tightest link's full rate plus the latency, so control traffic does not
churn the solver.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Any, Callable

from murder.sim.clock import SimClock

Deliver = Callable[[Any], None]


class Pipe:
    """One direction of one connection: a FIFO of chunks and, when busy, a flow."""

    __slots__ = ("src", "dst", "links", "latency", "cross", "queue", "backlog", "rate",
                 "stamp", "call", "active", "closed", "last_at", "on_sent", "mark",
                 "min_cap", "sent", "nrate", "seq")

    _created = 0

    def __init__(self, src: int, dst: int, links: tuple[int, ...], latency: float,
                 cross: bool, min_cap: float) -> None:
        self.src = src
        self.dst = dst
        self.links = links
        self.latency = latency
        self.cross = cross
        self.min_cap = min_cap
        #: Chunks not yet sent: [bytes left to send, size, payload, deliver].
        self.queue: deque[list] = deque()
        #: Bytes queued and not yet sent (what a sender's buffers hold).
        self.backlog = 0.0
        self.rate = 0.0
        self.stamp = 0.0
        self.call: Any = None
        self.active = False
        self.closed = False
        #: Latest delivery time scheduled (deliveries stay in order).
        self.last_at = 0.0
        #: Called with the backlog after each chunk leaves (send-buffer flow control).
        self.on_sent: Callable[[float], None] | None = None
        self.mark = 0
        self.sent = 0.0
        self.nrate = 0.0
        # Hash by creation order: sets of pipes iterate the same way every run.
        Pipe._created += 1
        self.seq = Pipe._created

    def __hash__(self) -> int:
        return self.seq


class Network:
    """Hosts in racks and the flows between them, on a :class:`SimClock`."""

    def __init__(self, clock: SimClock, *, hop_latency: float = 50e-6, goodput: float = 1.0,
                 rate_quantum: float = 0.0, small: int = 2048) -> None:
        self.clock = clock
        self.hop_latency = hop_latency
        self.goodput = goodput
        self.rate_quantum = rate_quantum
        self.small = small
        self.cap: list[float] = []
        self.host_up: list[int] = []
        self.host_down: list[int] = []
        self.host_rack: list[int] = []
        self.rack_links: list[tuple[int, int] | None] = []
        #: Links every flow crosses (a shared CPU, see :meth:`add_shared`).
        self.shared: list[int] = []
        #: Per-process CPU (:meth:`enable_cpu`): each host's CPU link, the
        #: cores shared by every busy process, CPU-seconds per byte handled.
        self.host_cpu: list[int] = []
        self.cpu_cores = 0.0
        self.cpu_per_byte = 0.0
        #: Active flows per host (sending or receiving): a busy process.
        self.host_flows: list[int] = []
        #: Processes busy with something else (start-up), counted by the caller.
        self.cpu_other_busy = 0
        self.flows_on: dict[int, set[Pipe]] = {}
        self.active: set[Pipe] = set()
        self._solve_call: Any = None
        self._last_solve = -1.0
        self._epoch = 0
        #: Statistics: payload bytes sent per host, bytes that crossed a rack
        #: uplink, how many times rates were recomputed.
        self.sent_by_host: list[float] = []
        self.cross_rack_bytes = 0.0
        self.solves = 0

    # ------------------------------------------------------------ topology
    def _link(self, capacity_bytes: float) -> int:
        self.cap.append(capacity_bytes * self.goodput)
        return len(self.cap) - 1

    def add_rack(self, uplink: float | None = None, downlink: float | None = None) -> int:
        """A rack; ``uplink``/``downlink`` in bytes/s (None: non-blocking)."""
        if uplink is None:
            self.rack_links.append(None)
        else:
            self.rack_links.append((self._link(uplink), self._link(downlink or uplink)))
        return len(self.rack_links) - 1

    def add_host(self, rack: int, up: float, down: float | None = None) -> int:
        """A host in ``rack`` with NIC rates in bytes/s; returns its index."""
        self.host_up.append(self._link(up))
        self.host_down.append(self._link(down if down is not None else up))
        self.host_rack.append(rack)
        self.sent_by_host.append(0.0)
        self.host_flows.append(0)
        if self.cpu_per_byte:
            # One core's worth until the first solve shares the cores out.
            self.cap.append(1.0 / self.cpu_per_byte)
            self.host_cpu.append(len(self.cap) - 1)
        return len(self.host_up) - 1

    def enable_cpu(self, cores: float, cpu_s_per_byte: float) -> None:
        """Model processes sharing a machine's CPU (bench/swarm.py: every host
        on one machine) before adding hosts.

        Each host gets a CPU link that its flows cross both ways (a byte
        costs ``cpu_s_per_byte`` to send and again to receive).  The cores are
        shared per *process*, as the kernel's fair scheduler does: each busy
        host (any active flow, or counted in :attr:`cpu_other_busy`) gets
        min(1, cores ÷ busy) of a core, recomputed at every rate solve.  A
        process with a lot to do (the seeder) therefore gets no more CPU
        than an idle-ish one, which per-flow sharing would give it.
        """
        self.cpu_cores = cores
        self.cpu_per_byte = cpu_s_per_byte

    def cpu_share(self) -> float:
        """Cores each busy process gets now."""
        busy = sum(1 for n in self.host_flows if n) + self.cpu_other_busy
        return min(1.0, self.cpu_cores / busy) if busy else 1.0

    def _update_cpu(self) -> None:
        share = self.cpu_share()
        cap = share / self.cpu_per_byte  # bytes/s a process can handle
        for link in self.host_cpu:
            self.cap[link] = cap

    def add_shared(self, capacity: float) -> int:
        """A resource every flow crosses, in bytes/s: e.g. the CPU of the one
        machine that runs all hosts of bench/swarm.py (cores ÷ CPU-s per byte)."""
        self.cap.append(capacity)
        self.shared.append(len(self.cap) - 1)
        return self.shared[-1]

    def latency(self, src: int, dst: int) -> float:
        """One-way: 2 hops in a rack (host, switch, host), 4 across racks."""
        return self.hop_latency * (2 if self.host_rack[src] == self.host_rack[dst] else 4)

    def pipe(self, src: int, dst: int) -> Pipe:
        links = [self.host_up[src], self.host_down[dst]]
        rs, rd = self.host_rack[src], self.host_rack[dst]
        cross = rs != rd
        if cross:
            up, down = self.rack_links[rs], self.rack_links[rd]
            if up is not None:
                links.append(up[0])
            if down is not None:
                links.append(down[1])
        links.extend(self.shared)
        if self.host_cpu:
            links.extend((self.host_cpu[src], self.host_cpu[dst]))
        return Pipe(src, dst, tuple(links), self.latency(src, dst), cross,
                    min(self.cap[link] for link in links))

    # ------------------------------------------------------------ sending
    def send(self, pipe: Pipe, size: float, payload: Any, deliver: Deliver) -> None:
        """Queue ``size`` bytes carrying ``payload`` on ``pipe``."""
        if pipe.closed:
            return
        if size <= self.small and not pipe.queue:
            # The hot path (HAVEs, REQUESTs, choking): _account inlined.
            now = self.clock.now
            at = now + pipe.latency + size / pipe.min_cap
            if at < pipe.last_at:
                at = pipe.last_at
            pipe.last_at = at
            self.sent_by_host[pipe.src] += size
            pipe.sent += size
            if pipe.cross:
                self.cross_rack_bytes += size
            self.clock.deliver_later(at - now, deliver, payload)
            return
        pipe.queue.append([size, size, payload, deliver])
        pipe.backlog += size
        if not pipe.active:
            self._start(pipe)

    def close(self, pipe: Pipe) -> None:
        """Discard what is queued; deliveries already scheduled still happen."""
        pipe.closed = True
        pipe.queue.clear()
        pipe.backlog = 0.0
        if pipe.active:
            self._end(pipe)

    def _account(self, pipe: Pipe, size: float) -> None:
        self.sent_by_host[pipe.src] += size
        pipe.sent += size
        if pipe.cross:
            self.cross_rack_bytes += size

    # ------------------------------------------------------------- flows
    def _start(self, pipe: Pipe) -> None:
        pipe.active = True
        self.host_flows[pipe.src] += 1
        self.host_flows[pipe.dst] += 1
        self.active.add(pipe)
        share = float("inf")
        for link in pipe.links:
            flows = self.flows_on.get(link)
            if flows is None:
                flows = self.flows_on[link] = set()
            flows.add(pipe)
            share = min(share, self.cap[link] / len(flows))
        pipe.rate = share
        pipe.stamp = self.clock.now
        self._reschedule(pipe)
        self._dirty()

    def _end(self, pipe: Pipe) -> None:
        pipe.active = False
        self.host_flows[pipe.src] -= 1
        self.host_flows[pipe.dst] -= 1
        self.active.discard(pipe)
        for link in pipe.links:
            flows = self.flows_on[link]
            flows.discard(pipe)
            if not flows:
                del self.flows_on[link]
        if pipe.call is not None and pipe.call.active():
            pipe.call.cancel()
        pipe.call = None
        pipe.rate = 0.0
        self._dirty()

    def _reschedule(self, pipe: Pipe) -> None:
        left = pipe.queue[0][0]
        dt = left / pipe.rate if left > 0 else 0.0
        if pipe.call is not None and pipe.call.active():
            pipe.call.reset(dt)
        else:
            pipe.call = self.clock.callLater(dt, self._head_sent, pipe)

    def _head_sent(self, pipe: Pipe) -> None:
        now = self.clock.now
        queue = pipe.queue
        pipe.call = None
        head = queue.popleft()
        size = head[1]
        batch = [head]
        # Small chunks right behind it leave with it (a HAVE after a block).
        while queue and queue[0][1] <= self.small:
            batch.append(queue.popleft())
            size += batch[-1][1]
        pipe.backlog -= size
        if pipe.backlog < 1e-6:
            pipe.backlog = 0.0
        self._account(pipe, size)
        at = max(now + pipe.latency, pipe.last_at)
        pipe.last_at = at
        deliver_later = self.clock.deliver_later
        for chunk in batch:
            deliver_later(at - now, chunk[3], chunk[2])
        if pipe.on_sent is not None:
            pipe.on_sent(pipe.backlog)  # may queue more (a resumed producer)
        if pipe.closed or not pipe.active:
            return
        if queue:
            pipe.stamp = now
            self._reschedule(pipe)
        else:
            self._end(pipe)

    # ------------------------------------------------------------ solver
    def _dirty(self) -> None:
        if self._solve_call is not None:
            return
        delay = 0.0
        if self.rate_quantum:
            delay = max(0.0, self._last_solve + self.rate_quantum - self.clock.now)
        self._solve_call = self.clock.callLater(delay, self._solve)

    def _solve(self) -> None:
        """Max-min fair rates for every active flow (progressive filling)."""
        self._solve_call = None
        now = self.clock.now
        self._last_solve = now
        self.solves += 1
        if self.host_cpu:
            self._update_cpu()
        active = self.active
        cap = self.cap
        flows_on = self.flows_on
        rem: dict[int, float] = {}
        cnt: dict[int, int] = {}
        heap = []
        for link, flows in flows_on.items():
            n = len(flows)
            rem[link] = cap[link]
            cnt[link] = n
            heap.append((cap[link] / n, link))
        heapq.heapify(heap)
        self._epoch += 1
        epoch = self._epoch
        pop, push = heapq.heappop, heapq.heappush
        while heap:
            share, link = pop(heap)
            c = cnt[link]
            if c == 0 or share != rem[link] / c:
                continue  # stale entry
            rate = share if share > 1e-9 else 1e-9
            for p in flows_on[link]:
                if p.mark == epoch:
                    continue
                p.mark = epoch
                p.nrate = rate
                for other in p.links:
                    if other != link:
                        c2 = cnt[other] - 1
                        cnt[other] = c2
                        r2 = rem[other] - share
                        rem[other] = r2 if r2 > 0 else 0.0
                        if c2:
                            push(heap, (rem[other] / c2, other))
            cnt[link] = 0
        # Only flows whose rate changed move their completion (lazy settling).
        for p in active:
            if p.nrate != p.rate:
                if p.rate:
                    p.queue[0][0] -= p.rate * (now - p.stamp)
                p.stamp = now
                p.rate = p.nrate
                self._reschedule(p)
