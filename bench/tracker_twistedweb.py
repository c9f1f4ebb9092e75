"""The tracker's :class:`~murder.tracker.app.TrackerApp` behind twisted.web, for
bench/tracker_announce.py --fleet (issue 11: is our own HTTP server worth it?).

Same store, same app, same GC tuning as ``murder tracker``; only the HTTP
server differs (``twisted.web.server.Site`` without access logging, as
``murder tracker`` logs no request unless --verbose).

    python bench/tracker_twistedweb.py PORT
"""

from __future__ import annotations

import sys

from twisted.internet import reactor
from twisted.web import resource, server

from murder.tracker.store import PeerStore
from murder.tracker.tap import tune_gc
from murder.tracker.app import TrackerApp


class AppResource(resource.Resource):
    """Every GET goes to TrackerApp.handle with the raw request target."""

    isLeaf = True

    def __init__(self, app: TrackerApp) -> None:
        super().__init__()
        self.app = app

    def render_GET(self, request):  # noqa: N802 (twisted.web API)
        reply = self.app.handle(request.uri, request.getClientAddress().host)
        request.setResponseCode(reply.code)
        request.setHeader(b"content-type", reply.content_type)
        return reply.body


class QuietSite(server.Site):
    def log(self, request) -> None:  # no access log, like murder tracker without -v
        pass


def main() -> None:
    port = int(sys.argv[1])
    tune_gc()
    store = PeerStore(reactor, max_torrents=100_000, max_peers=1_000_000)
    reactor.listenTCP(port, QuietSite(AppResource(TrackerApp(store))), interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
