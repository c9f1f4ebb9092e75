"""``/metrics``: the tracker in Prometheus text format, via ``prometheus_client``.

Each :class:`TrackerMetrics` has its own ``CollectorRegistry`` (never the
process-global one), so two trackers in one test process do not share
series.  Counters on the announce path are plain integers in a dict
(incremented per request, read at scrape time by a custom collector): the
hot path then pays one dict update, not a labelled child lookup and a lock.
Gauges are computed from the store at scrape time.

Label cardinality is bounded: ``transport``, ``event`` and ``result`` take
a fixed set of values (failure reasons are mapped onto :data:`RESULTS`), ``route`` is one of
:data:`ROUTES`, and per-swarm series exist only for swarms with peers, at
most :data:`MAX_SWARM_SERIES` of them (the largest).  No label names a peer.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from murder.tracker.store import PeerStore
from murder.tracker.view import count_stalled, peer_state

#: ``event`` label values; a request too broken to say is ``unknown``.
EVENTS = ("started", "completed", "stopped", "update", "unknown")
#: ``result`` label values of announces and scrapes.
RESULTS = ("ok", "auth_refused", "not_allowed", "full", "conflict", "invalid")
#: ``route`` label values of the request latency histogram.
ROUTES = ("announce", "scrape", "status", "dashboard", "metrics", "static", "other")
#: ``transport`` label values of announces and scrapes (HTTP, or BEP 15 UDP).
TRANSPORTS = ("http", "udp")
#: Per-swarm series are kept for at most this many swarms (the largest).
MAX_SWARM_SERIES = 20
CONTENT_TYPE = CONTENT_TYPE_LATEST.encode()

#: Announce latencies are tens of microseconds; a page of 2,000 peers, milliseconds.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                   0.1, 0.25, 0.5, 1.0)


def classify(reason: str) -> str:
    """The ``result`` label of an announce or scrape refused with ``reason``."""
    if reason.startswith("torrent not allowed"):
        return "not_allowed"
    if "is full" in reason:
        return "full"
    if reason.startswith("peer id in use"):
        return "conflict"
    return "invalid"


class _StoreCollector:
    """Scrape-time series: request counters and gauges of the store."""

    def __init__(self, owner: TrackerMetrics) -> None:
        self.owner = owner

    def collect(self) -> Iterator[Any]:
        owner = self.owner
        store = owner.store
        announces = CounterMetricFamily(
            "murder_tracker_announces",
            "Announces answered, by transport (http, udp), event and result.",
            labels=["transport", "event", "result"])
        for (transport, event, result), n in sorted(owner.announces.items()):
            announces.add_metric([transport, event, result], n)
        yield announces
        scrapes = CounterMetricFamily("murder_tracker_scrapes",
                                      "Scrapes answered, by transport and result.",
                                      labels=["transport", "result"])
        for (transport, result), n in sorted(owner.scrapes.items()):
            scrapes.add_metric([transport, result], n)
        yield scrapes
        yield CounterMetricFamily(
            "murder_tracker_udp_reads",
            "Reactor wakeups that read the BEP 15 UDP socket.", value=owner.udp_reads)
        yield CounterMetricFamily(
            "murder_tracker_udp_datagrams",
            "Datagrams read from the BEP 15 UDP socket (divided by udp_reads: "
            "datagrams per wakeup).", value=owner.udp_datagrams)
        # The in-memory store sums the increases between a peer's announces;
        # a Redis store shared by several trackers has no such per-process
        # sum (None), so these two series are absent there rather than wrong.
        reported = store.reported_bytes()
        if reported is not None:
            yield CounterMetricFamily(
                "murder_tracker_reported_uploaded_bytes",
                "Sum of the increases of 'uploaded' that peers announced.",
                value=reported[0])
            yield CounterMetricFamily(
                "murder_tracker_reported_downloaded_bytes",
                "Sum of the increases of 'downloaded' that peers announced.",
                value=reported[1])
        seeders = sum(t.seeders for t in store.torrents.values())
        yield GaugeMetricFamily("murder_tracker_swarms", "Swarms (torrents) tracked.",
                                value=len(store.torrents))
        yield GaugeMetricFamily("murder_tracker_peers", "Peers tracked.",
                                value=store.peer_count)
        yield GaugeMetricFamily("murder_tracker_seeders", "Peers with nothing left.",
                                value=seeders)
        yield GaugeMetricFamily("murder_tracker_leechers", "Peers still downloading.",
                                value=store.peer_count - seeders)
        yield GaugeMetricFamily(
            "murder_tracker_stalled_peers",
            "Leechers without progress for --stall-after seconds.",
            value=count_stalled(store, owner.stall_after()))
        yield from self._swarms()

    def _swarms(self) -> Iterator[Any]:
        store = self.owner.store
        now = store.clock.seconds()
        stall_after = self.owner.stall_after()
        active = sorted((t for t in store.torrents.values() if t.peers),
                        key=lambda t: (-len(t.peers), t.info_hash))[:MAX_SWARM_SERIES]
        peers = GaugeMetricFamily(
            "murder_tracker_swarm_peers",
            f"Peers of an active swarm by state (at most {MAX_SWARM_SERIES} swarms).",
            labels=["info_hash", "state"])
        left = GaugeMetricFamily("murder_tracker_swarm_left_bytes",
                                 "Bytes the peers of an active swarm still need.",
                                 labels=["info_hash"])
        for torrent in active:
            counts = {"downloading": 0, "stalled": 0, "complete": 0, "seeder": 0}
            total_left = 0
            for p in torrent.peers.values():
                counts[peer_state(p, now, stall_after)] += 1
                total_left += p.left
            ih = torrent.info_hash.hex()
            for state, n in counts.items():
                peers.add_metric([ih, state], n)
            left.add_metric([ih], total_left)
        yield peers
        yield left


class TrackerMetrics:
    """The tracker's metrics: counters the app bumps, a registry to render."""

    def __init__(self, store: PeerStore, stall_after: Callable[[], float],
                 timer: Callable[[], float] = time.perf_counter) -> None:
        self.store = store
        self.stall_after = stall_after
        self.timer = timer
        #: (transport, event, result) -> count; the UDP core bumps it directly.
        self.announces: dict[tuple[str, str, str], int] = {}
        #: (transport, result) -> count.
        self.scrapes: dict[tuple[str, str], int] = {}
        #: Wakeups of the UDP port and datagrams read; the port bumps them
        #: once per wakeup (their ratio: datagrams sharing one wakeup's cost).
        self.udp_reads = 0
        self.udp_datagrams = 0
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram(
            "murder_tracker_request_duration_seconds",
            "Time to answer one HTTP request, by route.", ["route"],
            registry=self.registry, buckets=LATENCY_BUCKETS)
        #: Bound ``observe`` per route: no label lookup per request.
        self.observe = {route: self.latency.labels(route).observe for route in ROUTES}
        self.dfile_save = Histogram(
            "murder_tracker_dfile_save_duration_seconds", "Time to write the dfile.",
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0))
        self.registry.register(_StoreCollector(self))

    def announce(self, event: str, result: str, transport: str = "http") -> None:
        """Count one announce answer."""
        key = (transport, event, result)
        self.announces[key] = self.announces.get(key, 0) + 1

    def scrape(self, result: str, transport: str = "http") -> None:
        """Count one scrape answer."""
        key = (transport, result)
        self.scrapes[key] = self.scrapes.get(key, 0) + 1

    def render(self) -> bytes:
        """The text exposition of every series."""
        return generate_latest(self.registry)
