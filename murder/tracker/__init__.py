"""The Murder tracker: an HTTP BitTorrent tracker tuned for datacenter swarms.

Layers: :mod:`~murder.tracker.announce` (pure codec), :mod:`~murder.tracker.store`
(pure state with an injected clock, dfile persistence), :mod:`~murder.tracker.web`
(what each URL answers), :mod:`~murder.tracker.fasthttp` (the HTTP server
protocol around it), :mod:`~murder.tracker.tap` (options and service).
"""

from murder.tracker.announce import AnnounceRequest, TrustedNetworks
from murder.tracker.fasthttp import TrackerHTTPFactory
from murder.tracker.store import PeerStore
from murder.tracker.tap import Options, TrackerConfig, buildService, makeService, runForeground
from murder.tracker.web import TrackerApp

__all__ = [
    "AnnounceRequest", "Options", "PeerStore", "TrackerApp", "TrackerConfig",
    "TrackerHTTPFactory", "TrustedNetworks", "buildService", "makeService", "runForeground",
]
