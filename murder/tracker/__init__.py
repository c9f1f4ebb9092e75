"""The Murder tracker: an HTTP BitTorrent tracker tuned for datacenter swarms.

Layers: :mod:`~murder.tracker.announce_codec` (pure codec), :mod:`~murder.tracker.store`
(pure state with an injected clock, dfile persistence), :mod:`~murder.tracker.app`
(what each URL answers), :mod:`~murder.tracker.fasthttp` (the HTTP server
protocol around it), :mod:`~murder.tracker.tap` (options and service).
"""

from importlib import import_module

#: Public names and the module each lives in.  Imported on first use (PEP 562),
#: so that importing one tracker module (the codec, say) does not load the
#: HTTP server, the service and the store.  (Peers import nothing from here:
#: what both sides share lives in :mod:`murder.auth` and :mod:`murder.compact`.)
_EXPORTS = {
    "AnnounceRequest": "announce", "TrustedNetworks": "announce",
    "TrackerHTTPFactory": "fasthttp", "PeerStore": "store", "TrackerApp": "web",
    "Options": "tap", "TrackerConfig": "tap", "build_service": "tap", "buildService": "tap",
    "makeService": "tap",
    "runForeground": "tap",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'murder.tracker' has no attribute {name!r}")
    return getattr(import_module(f"murder.tracker.{module}"), name)
