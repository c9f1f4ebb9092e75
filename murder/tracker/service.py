"""The tracker as a Twisted service tree: state, HTTP listener, optional UDP.

:func:`build_service` is what both ``twistd murder-tracker`` and ``murder
tracker`` run (see :mod:`murder.tracker.tap`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.logger import Logger

from murder.auth import Authoriser
from murder.tracker.announce_codec import TrustedNetworks
from murder.tracker.fasthttp import TrackerHTTPFactory
from murder.tracker.state import TrackerStateService
from murder.tracker.store import PeerStore
from murder.tracker.tls import server_endpoint
from murder.tracker.app import TrackerApp

if TYPE_CHECKING:
    from murder.tracker.options import TrackerConfig

log = Logger()


def build_service(config: TrackerConfig, reactor: Any) -> service.MultiService:
    """The tracker as a service tree: state first, then the HTTP listener.

    Children stop in reverse order, so the listener closes before the final
    dfile save.
    """
    store: Any = PeerStore(reactor, peer_timeout=config.peer_timeout,
                           max_torrents=config.max_torrents,
                           max_peers_per_torrent=config.max_peers_per_torrent,
                           max_peers=config.max_peers)
    if config.store is not None:
        # Shared peers live in Redis, which persists them itself: no dfile.
        from murder.tracker.redisstore import RedisPeerStore

        store = RedisPeerStore(reactor, config.store, peer_timeout=config.peer_timeout,
                               max_torrents=config.max_torrents,
                               max_peers_per_torrent=config.max_peers_per_torrent,
                               max_peers=config.max_peers)
        config = replace(config, dfile=None)
        log.info("peers kept in {store}", store=config.store)
    app = TrackerApp(
        store, interval=config.interval, min_interval=config.min_interval,
        numwant_default=config.numwant_default, numwant_max=config.numwant_max,
        trusted=TrustedNetworks(config.trusted_networks), verbose=config.verbose,
        auth=Authoriser.from_files(config.auth_secrets) if config.auth_secrets else None,
        leecher_interval=config.leecher_interval, stall_after=config.stall_after,
        view_cache=0.5)
    factory = TrackerHTTPFactory(app, reactor, verbose=config.verbose)
    top = service.MultiService()
    state = TrackerStateService(store, config, reactor, save_timer=app.metrics.dfile_save)
    state.setServiceParent(top)
    listener = StreamServerEndpointService(
        server_endpoint(reactor, config.listen, config.client_ca), factory)
    # A port already in use must fail the start, not just log.
    listener._raiseSynchronously = True
    listener.setName("tracker-http")
    listener.setServiceParent(top)
    top.store = store  # type: ignore[attr-defined]
    top.app = app  # type: ignore[attr-defined]
    if config.udp_port is not None:
        from murder.tracker.udp import UDPTrackerCore, UDPTrackerProtocol, UDPTrackerService

        top.udp = UDPTrackerCore(app)  # type: ignore[attr-defined]
        udp = UDPTrackerService(reactor, config.udp_port,
                                UDPTrackerProtocol(top.udp),  # type: ignore[attr-defined]
                                interface=config.udp_bind, fastpath=config.udp_fastpath)
        udp.setName("tracker-udp")
        udp.setServiceParent(top)
    if config.topology:
        from murder.tracker.topology import RackAwareHandout, load

        store.handout = RackAwareHandout(load(config.topology))
        log.info("rack-aware peer lists from {path}", path=config.topology)
    return top


def log_access(config: TrackerConfig) -> None:
    """Say at start which access controls are on (never the secrets)."""
    if config.auth_secrets:
        log.info("announce authorisation on: {count} secret file(s)",
                 count=len(config.auth_secrets))
    if config.client_ca:
        log.info("TLS client certificates required, CA {path}", path=config.client_ca)


__all__ = ["build_service", "log_access"]
