"""A whole deploy in one process: seeder(s), N hosts, the tracker, the network.

Every host runs the project's real :class:`~murder.peer.session.Swarm` (picker,
request pipelines, upload turns, super-seeding, seed budget, snubbing) over
real :class:`~murder.peer.protocol.PeerProtocol` objects, and announces with
the real :class:`~murder.peer.announcer.Announcer` to the real tracker
(:class:`~murder.tracker.app.TrackerApp` over
:class:`~murder.tracker.store.PeerStore`, with the rack-aware handout when a
policy other than ``random`` is chosen).  Only the sockets, the disk and the
wall clock are replaced: :mod:`murder.sim.link`, a shared in-memory payload,
and :class:`~murder.sim.clock.SimClock`.
"""

from __future__ import annotations

import gc
import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, cast

from twisted.internet import defer
from twisted.logger import Logger

from murder.peer.announcer import Announcer
from murder.peer.protocol import TCPDialer
from murder.peer.session import Swarm, SwarmConfig, make_peer_id
from murder.peer.wire import BLOCK_SIZE, Bitfield
from murder.sim.clock import SimClock
from murder.sim.link import SimPeerFactory, SimPeerProtocol, Switchboard
from murder.sim.net import Network, Pipe
from murder.testing import build_torrent
from murder.tracker import topology
from murder.tracker.store import PeerStore
from murder.tracker.app import TrackerApp

log = Logger()

TRACKER_URL = "http://10.255.255.1:8998/announce"
#: Peer ids as this version of ``murder peer`` makes them (the version in
#: the id switches protocol features such as keep-alives on).
_PEER_ID_START = make_peer_id()[:8]
PORT = 6881


@dataclass(frozen=True)
class FleetConfig:
    """One simulated deploy.  Rates in bits/s, sizes in bytes, times in seconds."""

    hosts: int = 100
    #: 0: every host on one non-blocking switch (bench/netns.py's bridge).
    hosts_per_rack: int = 0
    nic_bps: float = 10e9
    #: Rack uplink = hosts_per_rack × NIC ÷ this (1: non-blocking).
    oversubscription: float = 1.0
    payload: int = 2**30
    piece_length: int = 2**24
    #: Real bytes per piece (≤ piece_length); each block counts
    #: piece_length ÷ this many times on the network.
    real_piece_length: int = 4 * BLOCK_SIZE
    #: Each host starts at a uniform random time in [startup_min, startup_max].
    startup_min: float = 0.0
    startup_max: float = 0.0
    #: Rack r starts r × this later (racks starting seconds apart).
    rack_stagger: float = 0.0
    policy: str = "random"
    #: Peers take the tracker's ``near`` networks (rack-aware policies only):
    #: far connections are asked only for what no near one supplies.
    near: bool = True
    #: ``SwarmConfig.far_pieces``: pieces fetched from other racks at once.
    far_pieces: int = 2
    #: ``SwarmConfig.far_turns_first``: far requesters get every other turn first.
    far_turns_first: bool = True
    #: Other :class:`SwarmConfig` fields for every host, as (name, value)
    #: pairs (``murder simulate --core upload_slots=0``): A/B a core knob.
    core: tuple[tuple[str, Any], ...] = ()
    seeders: int = 1
    numwant: int = 500
    max_connections: int = 200
    hop_latency: float = 50e-6
    goodput: float = 1448 / 1514
    rate_quantum: float = 0.0
    send_buffer: int = 384 * 1024
    resume_below: int = 256 * 1024
    tracker_delay: float = 0.002
    announce_interval: int = 15
    time_limit: float = 3600.0
    seed: int = 1
    #: ``"messages"``: peers hand each other parsed message tuples (no
    #: encode/parse, same sizes on the network); ``"bytes"``: real peer-wire
    #: bytes through the production protocol (murder/sim/link.py).
    link: str = "messages"
    #: Model bench/swarm.py's single machine: every byte delivered costs
    #: ``cpu_s_per_gib`` CPU-seconds per GiB out of ``cpu_cores`` shared by
    #: all hosts (0: every host has its own CPU, as in a datacenter).
    cpu_cores: float = 0.0
    cpu_s_per_gib: float = 0.0
    #: Per-process CPU instead (``Network.enable_cpu``): every host is a
    #: process on one machine of ``cpu_cores`` cores, shared fairly among the
    #: busy ones; a byte costs ``cpu_s_per_mib`` ÷ 2^20 CPU-s to send and again
    #: to receive.  With ``startup_cpu_s`` > 0 the receivers are all launched
    #: at 0 (bench/swarm.py's gate) and each starts once it has had that much
    #: CPU (imports, reading the torrent): start-up then follows from the
    #: machine, not from ``startup_min``/``startup_max``.  The seeder runs
    #: before the gate, as in the bench.
    cpu_s_per_mib: float = 0.0
    startup_cpu_s: float = 0.0

    @property
    def scale(self) -> int:
        return max(1, self.piece_length // self.real_piece_length)

    @property
    def num_pieces(self) -> int:
        return -(-self.payload // self.piece_length)

    @property
    def racks(self) -> int:
        return 1 if not self.hosts_per_rack else -(-self.hosts // self.hosts_per_rack)


def swarm_config(cfg: FleetConfig) -> SwarmConfig:
    """The peers' tuning: murder's defaults, with the per-block limits rescaled
    when a real block stands for ``scale`` blocks.

    The core counts its request pipeline (at most 256 blocks = 4 MiB
    outstanding per peer) and the endgame threshold (64 blocks missing) in
    16 KiB blocks.  Left as they are, a scaled block would make them
    ``scale`` times larger in modelled bytes (at scale 1024: 4 GiB of
    requests per peer, the whole download in endgame).  They are divided by
    the scale instead, keeping at least one real piece requested.

    Upload turns serialize pieces as on real hosts: a turn whose last
    block filled the send buffer passes when the link drains
    (``Uploads.drained``).  Before session 7 it passed at the last write,
    so a piece of one real block let every turn run side by side
    (``--core upload_slots=0`` gave the very same run) and the seeder
    served 200 peers at once (bench/README.md, session 7).

    ``cfg.core`` (``murder simulate --core``) is applied last, as given.
    """
    base = SwarmConfig(max_connections=cfg.max_connections, far_pieces=cfg.far_pieces,
                       far_turns_first=cfg.far_turns_first)
    core = dict(cfg.core)
    scale = cfg.scale
    if scale == 1:
        return replace(base, **core)
    per_piece = max(1, cfg.real_piece_length // BLOCK_SIZE)
    pipeline = max(per_piece, base.max_pipeline // scale)
    # One request per block: a turn then spans several writes, paced by the
    # send buffer as a real piece's 16 KiB blocks are.
    scaled = replace(base, max_pipeline=pipeline, min_pipeline=min(base.min_pipeline, pipeline),
                     endgame_blocks=max(1, base.endgame_blocks // scale),
                     request_size=BLOCK_SIZE)
    return replace(scaled, **core)


def kumar_ross_bound(size: float, u_s: float, d_min: float, uploads: list[float]) -> float:
    """T_min = max(F/u_s, F/d_min, N·F/(u_s + Σu_i)), rates in bytes/s (as bench/swarm.py)."""
    n = len(uploads)
    return max(size / u_s, size / d_min, n * size / (u_s + sum(uploads)))


def host_ip(rack: int, index: int) -> str:
    """Hosts of rack r live in 10.{r÷256}.{r mod 256}.0/24 (index 0, 1: seeders)."""
    return f"10.{rack // 256}.{rack % 256}.{index + 10}"


def rack_topology(racks: int, rows_of: int = 10) -> topology.Topology:
    """The topology file a fleet of ``racks`` racks would have (10 racks per row)."""
    lines = [f"10.{r // 256}.{r % 256}.0/24 dc1/row{r // rows_of}/rack{r}" for r in range(racks)]
    return topology.parse("\n".join(lines))


class SharedStorage:
    """Every host's disk at once: reads come from the one real payload.

    A swarm only serves pieces it has verified, so reading them from the
    shared payload is exact; writes are counted, not stored (10,000 copies
    of a payload would not fit in memory).
    """

    def __init__(self, meta, payload: bytes) -> None:
        self.meta = meta
        self.payload = payload
        self.writes = 0

    def read_block(self, index: int, begin: int, length: int) -> bytes:
        offset = index * self.meta.piece_length + begin
        return self.payload[offset:offset + length]

    def write_piece(self, index: int, data) -> None:
        self.writes += 1

    def close(self) -> None:
        pass


class _Response:
    def __init__(self, code: int, body: bytes) -> None:
        self.code = code
        self.body = body


class TrackerHTTP:
    """The announce client of one host: requests go straight to the real
    :class:`TrackerApp`, answered after ``delay`` of virtual time."""

    def __init__(self, app: TrackerApp, clock: SimClock, remote: str, delay: float) -> None:
        self.app = app
        self.clock = clock
        self.remote = remote
        self.delay = delay

    def get(self, url: str, timeout: float = 10.0) -> defer.Deferred:
        target = url.split("/", 3)[3]
        d: defer.Deferred = defer.Deferred()

        def answer() -> None:
            reply = self.app.handle(b"/" + target.encode(), self.remote)
            d.callback(_Response(reply.code, reply.body))

        self.clock.callLater(self.delay, answer)
        return d

    @staticmethod
    def content(response: _Response) -> defer.Deferred:
        return defer.succeed(response.body)


@dataclass
class SimHost:
    index: int
    net_id: int
    rack: int
    ip: str
    seeder: bool
    start_at: float
    swarm: Any = None
    announcer: Any = None
    completed_at: float | None = None


@dataclass
class FleetResult:
    """What one simulated deploy measured (JSON-ready via :meth:`to_json`)."""

    config: dict
    hosts: int
    completed: int
    time_to_last: float | None
    bound: float
    completion_times: list[float]
    seeder_upload_ratio: float
    cross_rack_bytes: float
    cross_rack_ratio: float | None
    last_rack_finish: list[float] = field(default_factory=list)
    #: Per rack: its last host's completion − the rack's start offset
    #: (rack × rack_stagger): how long the rack took from its own start.
    rack_duration: list[float] = field(default_factory=list)
    #: When the last host started (its start-up delay, or its start-up CPU).
    last_start: float = 0.0
    #: The cores' log events by level (e.g. how many warnings).
    log_levels: dict[str, int] = field(default_factory=dict)
    #: Heap entries the clock fired.
    events: int = 0
    #: Calls fired, counting each one that shared a heap entry
    #: (``SimClock.deliver_later``): what ``events`` was before batching.
    calls: int = 0
    rate_solves: int = 0
    connections: int = 0
    wall_s: float = 0.0
    #: CPU seconds of the simulator process (its wall time on an idle core).
    cpu_s: float = 0.0
    virtual_s: float = 0.0

    @property
    def ratio(self) -> float | None:
        return None if self.time_to_last is None else self.time_to_last / self.bound

    def to_json(self) -> dict:
        doc = asdict(self)
        doc["time_over_bound"] = self.ratio
        return doc


def _policy(name: str, racks: int) -> Any:
    if name == "random":
        return None
    return topology.policy_named(name, rack_topology(racks))


def _launch_on_shared_cpu(clock: SimClock, net: Network, hosts: list[SimHost],
                          work: float, start: Any, rng: random.Random,
                          step: float = 0.005) -> None:
    """Receivers launched together at 0 start once each has had its start-up
    CPU, uniform in [⅔, 4⁄3] × ``work`` CPU-s (bench/README.md: "~0.2–0.4
    CPU-s" per peer), sharing the cores with every other busy process
    (processor sharing, integrated every ``step`` virtual seconds); the
    seeder starts at once."""
    left = {h.index: work * (2 / 3 + 2 / 3 * rng.random()) for h in hosts if not h.seeder}
    for h in hosts:
        if h.seeder:
            clock.callLater(0.0, start, h)

    def tick() -> None:
        net.cpu_other_busy = len(left)
        share = net.cpu_share()
        ready = []
        for index in list(left):
            left[index] -= share * step
            if left[index] <= 1e-12:
                del left[index]
                ready.append(index)
        net.cpu_other_busy = len(left)
        for index in ready:
            hosts[index].start_at = clock.now
            start(hosts[index])
        if ready:
            net._dirty()  # fewer busy processes: a larger share for the rest
        if left:
            clock.callLater(step, tick)

    net.cpu_other_busy = len(left)
    clock.callLater(step, tick)


class _CountingObserver:
    """Where the cores' log events go during a run: counted by level, not
    formatted (10,000 hosts' debug lines cost more than their swarms)."""

    def __init__(self) -> None:
        self.levels: dict[str, int] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        level = event.get("log_level")
        name = getattr(level, "name", str(level))
        self.levels[name] = self.levels.get(name, 0) + 1


def _quiet_cores(observer: _CountingObserver) -> list[tuple[Any, Any]]:
    """Point the loggers of the peer core, its protocol and announcer at ``observer``;
    returns what to restore."""
    from twisted.logger import Logger

    from murder.peer import admission, protocol, ratelimit, requests, uploads

    owners = [Swarm, Announcer, admission.Admission, protocol.PeerProtocol,
              ratelimit.RateLimiter, requests.Requests, uploads.Uploads]
    saved = [(cls, cls.__dict__["log"]) for cls in owners if "log" in cls.__dict__]
    for cls, _ in saved:
        setattr(cls, "log", Logger(namespace=cls.__name__, observer=cast(Any, observer)))
    return saved


def _run_without_gc(clock: SimClock, until: float) -> None:
    """Run the clock with Python's cyclic garbage collector off.

    The fleet holds millions of long-lived objects (every host's swarm,
    picker, bitfields, connections); each full collection walks all of
    them, which cost 15 % of a 1,000-host run's CPU and grows with the
    fleet.  What a run leaves as cyclic garbage (closed connections,
    answered announces) is a few MB at 1,000 hosts; the collector, back
    on after the run, frees it.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        clock.run(until)
    finally:
        if enabled:
            gc.enable()


def build_and_run(cfg: FleetConfig, progress: Any = None, probe: Any = None) -> FleetResult:
    """Simulate one deploy (see :func:`_run`); the cores' log lines are
    counted by level (``FleetResult.log_levels``), not printed."""
    observer = _CountingObserver()
    saved = _quiet_cores(observer)
    try:
        result = _run(cfg, progress, probe)
    finally:
        for cls, log in saved:
            setattr(cls, "log", log)
    result.log_levels = dict(observer.levels)
    return result


def _run(cfg: FleetConfig, progress: Any = None, probe: Any = None) -> FleetResult:
    """Simulate one deploy to the end (every host complete, or ``time_limit``).

    ``progress``, if given, is called with a one-line status every 0.25 s of
    virtual time (long runs).  ``probe``, if given, is called as
    ``probe(clock, net, hosts)`` before the clock runs, so a diagnostic
    (bench/sim_timeline.py) can schedule its own samples."""
    wall0 = time.monotonic()
    cpu0 = time.process_time()
    # Same hashes for the same run: sets of connections and pipes iterate alike.
    SimPeerProtocol._created = 0
    Pipe._created = 0
    rng = random.Random(cfg.seed)
    clock = SimClock()
    net = Network(clock, hop_latency=cfg.hop_latency, goodput=cfg.goodput,
                  rate_quantum=cfg.rate_quantum)
    if cfg.cpu_cores and cfg.cpu_s_per_gib:
        net.add_shared(cfg.cpu_cores / cfg.cpu_s_per_gib * 2**30)
    per_process = bool(cfg.cpu_cores and cfg.cpu_s_per_mib)
    if per_process:
        net.enable_cpu(cfg.cpu_cores, cfg.cpu_s_per_mib / 2**20)
    board = Switchboard(clock, net, scale=cfg.scale, send_buffer=cfg.send_buffer,
                        resume_below=cfg.resume_below, link=cfg.link)
    nic = cfg.nic_bps / 8
    racks = cfg.racks
    hpr = cfg.hosts_per_rack or cfg.hosts
    for _ in range(racks):
        if racks > 1 and cfg.oversubscription > 0:
            uplink = hpr * nic / cfg.oversubscription
            net.add_rack(uplink, uplink)
        else:
            net.add_rack(None)

    # The payload: num_pieces real pieces of real_piece_length bytes.
    n_pieces = cfg.num_pieces
    real_piece = min(cfg.real_piece_length, cfg.piece_length)
    payload = rng.randbytes(n_pieces * real_piece)
    meta, payload = build_torrent(payload, piece_length=real_piece, announce=TRACKER_URL)
    storage = SharedStorage(meta, payload)

    policy = _policy(cfg.policy, racks)
    # SimClock has IReactorTime's methods (not declared: the interface's and
    # the core's Clock protocol name callLater's argument differently).
    store = PeerStore(cast(Any, clock), rng=random.Random(rng.random()), max_peers_per_torrent=10**6,
                      max_peers=10**6)
    if policy is not None:
        store.handout = policy
    app = TrackerApp(store, interval=cfg.announce_interval, min_interval=1,
                     numwant_default=cfg.numwant, numwant_max=max(cfg.numwant, 500))

    hosts: list[SimHost] = []
    for s in range(cfg.seeders):
        net_id = net.add_host(0, nic)
        hosts.append(SimHost(len(hosts), net_id, 0, f"10.0.0.{2 + s}", True, 0.0))
    for i in range(cfg.hosts):
        rack = i // hpr
        begin = cfg.startup_min + (cfg.startup_max - cfg.startup_min) * rng.random() \
            + rack * cfg.rack_stagger
        net_id = net.add_host(rack, nic)
        hosts.append(SimHost(len(hosts), net_id, rack, host_ip(rack, i % hpr), False, begin))
    receivers = [h for h in hosts if not h.seeder]
    state = {"done": 0}

    peer_config = swarm_config(cfg)
    seed_config = replace(peer_config, super_seed=True)

    def on_reply(swarm: Swarm, reply: Any) -> None:
        if cfg.near:
            swarm.near.set_near(reply.near)
        swarm.add_peers(reply.peers)

    def start(host: SimHost) -> None:
        reactor = board.reactor_for(host.net_id, host.ip)
        have = Bitfield(meta.num_pieces, full=host.seeder)
        peer_id = _PEER_ID_START + rng.randbytes(12)
        config = seed_config if host.seeder else peer_config
        swarm = Swarm(meta, storage, have, reactor, config,
                      peer_id=peer_id, rng=random.Random(rng.random()),
                      on_complete=lambda: completed(host),
                      dialer=TCPDialer(reactor, config.connect_timeout))
        host.swarm = swarm
        board.listen(host.net_id, (host.ip, PORT), SimPeerFactory(swarm, board.protocol))
        http = TrackerHTTP(app, clock, host.ip, cfg.tracker_delay)
        announcer = Announcer(cast(Any, reactor), http, meta.trackers, meta.info_hash, peer_id, PORT,
                              host.ip, swarm.stats, lambda reply: on_reply(swarm, reply),
                              numwant=cfg.numwant)
        host.announcer = announcer
        swarm.start()
        announcer.start().addErrback(lambda f: log.failure("announce failed", f))

    def completed(host: SimHost) -> None:
        if host.completed_at is not None:
            return
        host.completed_at = clock.seconds()
        host.announcer.completed()
        state["done"] += 1
        if state["done"] == len(receivers):
            clock.halt()

    if per_process and cfg.startup_cpu_s > 0:
        _launch_on_shared_cpu(clock, net, hosts, cfg.startup_cpu_s, start, rng)
    else:
        for host in hosts:
            clock.callLater(host.start_at, start, host)

    def report() -> None:
        progress(f"virtual {clock.now:6.2f} s: {state['done']}/{len(receivers)} complete, "
                 f"{clock.events} events, {net.solves} rate solves, "
                 f"wall {time.monotonic() - wall0:.0f} s, CPU {time.process_time() - cpu0:.0f} s")
        clock.callLater(0.25, report)

    if progress is not None:
        clock.callLater(0.25, report)
    if probe is not None:
        probe(clock, net, hosts)
    _run_without_gc(clock, cfg.time_limit)

    times = sorted(h.completed_at for h in receivers if h.completed_at is not None)
    done = len(times) == len(receivers)
    F = n_pieces * cfg.piece_length
    bound = kumar_ross_bound(F, nic, nic, [nic] * cfg.hosts)
    seeder_sent = sum(net.sent_by_host[h.net_id] for h in hosts if h.seeder)
    rack_last: list[float] = []
    if racks > 1:
        per_rack: dict[int, float] = {}
        for h in receivers:
            if h.completed_at is not None:
                per_rack[h.rack] = max(per_rack.get(h.rack, 0.0), h.completed_at)
        rack_last = [per_rack.get(r, math.nan) for r in range(racks)]
    result = FleetResult(
        config={**asdict(cfg), "scale": cfg.scale, "num_pieces": n_pieces},
        hosts=cfg.hosts, completed=len(times),
        time_to_last=times[-1] if done else None, bound=bound, completion_times=times,
        seeder_upload_ratio=seeder_sent / F,
        cross_rack_bytes=net.cross_rack_bytes,
        cross_rack_ratio=net.cross_rack_bytes / (F * racks) if racks > 1 else None,
        last_rack_finish=rack_last,
        rack_duration=[t - r * cfg.rack_stagger for r, t in enumerate(rack_last)],
        last_start=max(h.start_at for h in hosts),
        events=clock.events, calls=clock.events + clock.batched, rate_solves=net.solves,
        connections=board.connections, wall_s=time.monotonic() - wall0,
        cpu_s=time.process_time() - cpu0, virtual_s=clock.now)
    return result
