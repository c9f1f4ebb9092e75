"""What the tracker answers, independent of the HTTP server: ``/announce``,
``/scrape``, ``/`` and ``/status.json``.

:class:`TrackerApp` maps one request target (path and raw query string) and
the client's address to a :class:`Reply`; :mod:`murder.tracker.fasthttp`
speaks HTTP around it.  It parses with :mod:`murder.tracker.announce_codec`, lets
the :class:`~murder.tracker.store.PeerStore` decide, and writes bencode.  It
never raises: a malformed announce gets ``failure reason`` with HTTP 200
(BEP 3 clients only read the body), a request that is not a tracker request
at all gets a 4xx with a bencoded ``failure reason``, and an unexpected bug
gets a 500 and one logged traceback (rate limited).

``/status.json`` schema (version 1, stable; new keys may be added)::

    {"version": 1,
     "now": <unix time, float>,
     "totals": {"torrents": n, "peers": n, "seeders": n, "leechers": n,
                "rejected_auth": n},   # only when announce authorisation is on
     "torrents": [
       {"info_hash": "<40 hex>",
        "name": "<from the allowed dir>" | null,
        "size": <payload bytes, from the allowed dir> | null,
        "complete": n, "incomplete": n, "downloaded": n,
        "peers": [
          {"peer_id": "<40 hex>", "ip": "<address>", "port": n,
           "left": <bytes left>, "uploaded": n, "downloaded": n,
           "seeder": true | false,
           "progress": <0.0-1.0, when size is known> | null,
           "last_announce_age": <seconds, float>}]}]}

Torrents are sorted by info hash, peers by (ip, port).

Additions (schema still version 1): top-level ``"stall_after"``; per torrent
``"stalled"`` (count); per peer ``"state"`` (see :mod:`murder.tracker.view`),
``"rate"`` and ``"up_rate"`` (bytes/s from successive announces),
``"idle"`` (seconds since its last progress) and ``"completed_age"``
(seconds since it finished here, or null).

The live dashboard is ``/`` (all swarms) and ``/swarm?info_hash=HEX`` (one
swarm, every host); the pages poll ``/dashboard.json`` (see
:mod:`murder.tracker.view`) and are served from ``murder/tracker/static``.
Without JavaScript ``/`` still shows the plain status tables.
``/metrics`` is the Prometheus exposition (:mod:`murder.tracker.metrics`).

With an :class:`~murder.tracker.auth.Authoriser` (``--auth-secret``),
announces and scrapes must carry a valid ``auth`` token per swarm (see
:mod:`murder.tracker.auth`); refusals are a ``failure reason`` with HTTP 200,
counted in ``totals.rejected_auth`` and logged with the client address under
the shared rate limit.  Logged request targets never show ``auth`` values.
The status pages stay readable without a token: they hold no token or
secret, and an info hash without its token cannot be announced to.
"""

from __future__ import annotations

import html
import json
import time
from importlib import resources
from typing import Any, Callable, NamedTuple

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from murder.errors import AnnounceError
from murder.tracker import announce_codec as codec
from murder.tracker.auth import Authoriser, redact
from murder.tracker.metrics import CONTENT_TYPE as METRICS_TYPE
from murder.tracker.metrics import TrackerMetrics, classify
from murder.tracker.store import PeerStore
from murder.tracker.view import dashboard, peer_state

log = Logger()

#: Longer request targets get 414 (a 74-hash scrape still fits).
MAX_URI = 8192
BENCODE = b"text/plain"
JSON = b"application/json"
HTML = b"text/html; charset=utf-8"
JS = b"text/javascript; charset=utf-8"
CSS = b"text/css; charset=utf-8"


class Reply(NamedTuple):
    """One answer: HTTP status code, content type and body."""

    code: int
    content_type: bytes
    body: bytes


class RateLimitedLog:
    """Lets ``burst`` messages through per ``period`` seconds, then counts.

    Rejected requests are attacker-controlled; their log lines must not be.
    """

    def __init__(self, clock: IReactorTime, period: float = 10.0, burst: int = 20) -> None:
        self.clock = clock
        self.period = period
        self.burst = burst
        self._window = -period
        self._used = 0
        self.suppressed = 0

    def allow(self) -> bool:
        now = self.clock.seconds()
        if now - self._window >= self.period:
            if self.suppressed:
                log.warn("{count} rejected-request log lines suppressed", count=self.suppressed)
            self._window, self._used, self.suppressed = now, 0, 0
        if self._used < self.burst:
            self._used += 1
            return True
        self.suppressed += 1
        return False


Route = Callable[[bytes, bytes, str], Reply]


class TrackerApp:
    """The whole tracker site: request target in, :class:`Reply` out."""

    def __init__(self, store: PeerStore, *, interval: int = 15, min_interval: int = 5,
                 numwant_default: int = 500, numwant_max: int = 500,
                 trusted: codec.TrustedNetworks | None = None,
                 tracker_id: bytes | None = None, verbose: bool = False,
                 auth: Authoriser | None = None, leecher_interval: int | None = None,
                 stall_after: float = 30.0, view_cache: float = 0.0) -> None:
        self.store = store
        #: Interval asked of peers with something left (None: ``interval``):
        #: short, so the live view is as fresh as this many seconds.
        self.leecher_interval = leecher_interval
        #: Seconds without progress before a leecher shows as stalled.
        self.stall_after = stall_after
        #: Seconds a /dashboard.json answer is reused (bounds the cost of many viewers).
        self.view_cache = view_cache
        self._view_cached: dict[bytes, tuple[float, bytes]] = {}
        self.metrics = TrackerMetrics(store, lambda: self.stall_after)
        self.auth = auth
        self.interval = interval
        self.min_interval = min_interval
        self.numwant_default = numwant_default
        self.numwant_max = numwant_max
        self.trusted = trusted if trusted is not None else codec.TrustedNetworks()
        self.tracker_id = tracker_id
        self.verbose = verbose
        self.rejected_log = RateLimitedLog(store.clock)
        self._routes: dict[bytes, Route] = {
            b"/announce": self._announce, b"/scrape": self._scrape,
            b"/": self._status_html, b"/status.json": self._status_json,
        }
        self._routes.update({
            b"/swarm": self._swarm_html, b"/dashboard.json": self._dashboard_json,
            b"/metrics": self._metrics, b"/static/dashboard.js": self._static,
            b"/static/dashboard.css": self._static,
        })
        #: Latency histogram route label by path (anything else: "other").
        self._route_names = {
            b"/announce": "announce", b"/scrape": "scrape", b"/": "dashboard",
            b"/status.json": "status", b"/swarm": "dashboard", b"/dashboard.json": "dashboard",
            b"/metrics": "metrics", b"/static/dashboard.js": "static",
            b"/static/dashboard.css": "static",
        }

    # -------------------------------------------------------------- dispatch

    def handle(self, target: bytes, remote: str) -> Reply:
        """Answer a GET of ``target`` (path and query, as on the request line); never raises.

        Times the answer for the latency histogram.
        """
        timer = self.metrics.timer
        start = timer()
        reply = self._dispatch(target, remote)
        route = self._route_names.get(target.partition(b"?")[0], "other")
        self.metrics.observe[route](timer() - start)
        return reply

    def _dispatch(self, target: bytes, remote: str) -> Reply:
        try:
            if len(target) > MAX_URI:
                return self.refuse(414, "request URI too long", target, remote)
            path, _, query = target.partition(b"?")
            route = self._routes.get(path)
            if route is None:
                route = self._routes.get(_origin_path(path))
                if route is None:
                    return self.refuse(404, "no such path: use /announce or /scrape",
                                       target, remote)
            return route(query, target, remote)
        except Exception:
            if self.rejected_log.allow():
                log.failure("tracker bug while answering {uri!r}", uri=redact(target[:200]))
            return Reply(500, BENCODE, codec.failure_reply("internal tracker error"))

    def refuse(self, code: int, reason: str, target: bytes, remote: str) -> Reply:
        """A bencoded ``failure reason`` with ``code``, logged within the rate limit.

        The HTTP server uses it too, so every refusal looks and logs the same.
        """
        if self.rejected_log.allow():
            log.info("rejected {uri!r} from {peer}: {reason}", uri=redact(target[:120]),
                     peer=remote, reason=reason)
        return Reply(code, BENCODE, codec.failure_reply(reason))

    # --------------------------------------------------------------- tracker

    def _announce(self, query: bytes, target: bytes, remote: str) -> Reply:
        args = codec.parse_query(query)
        if b"info_hash" not in args and b"peer_id" not in args:
            self.metrics.announce("unknown", "invalid")
            return self.refuse(400, "not an announce: info_hash and peer_id missing",
                               target, remote)
        result = "invalid"
        try:
            req = codec.parse_announce(args, remote, self.trusted,
                                       numwant_default=self.numwant_default,
                                       numwant_max=self.numwant_max)
            if self.auth is not None:
                refused = self.auth.check((req.info_hash,), args.get(b"auth", ()))
                if refused is not None:
                    result = "auth_refused"
                    raise AnnounceError(refused)
            torrent = self.store.announce(req)
        except AnnounceError as e:
            if result != "auth_refused":
                result = classify(e.reason)
            raw_event = (args.get(b"event") or [b""])[0]
            self.metrics.announce(codec.EVENTS.get(raw_event, "unknown") or "update", result)
            return self.refuse(200, e.reason, target, remote)
        self.metrics.announce(req.event or "update", "ok")
        if req.event or self.verbose:
            log.info("announce {event} {info_hash} from {peer} left={left}",
                     event=req.event or "update", info_hash=req.info_hash.hex(),
                     peer=f"{req.ip}:{req.port}", left=req.left)
        numwant = 0 if req.event == "stopped" else req.numwant
        interval, min_interval = self.interval, self.min_interval
        if self.leecher_interval and req.left > 0:
            interval = self.leecher_interval
            min_interval = min(min_interval, interval)
        # Rack-aware handout (--topology): the requester's rack networks, so
        # it asks far peers only for what near ones lack.  None otherwise:
        # the reply stays byte-identical.
        handout = getattr(self.store, "handout", None)
        near = handout.near_networks(req.ip) if handout is not None else None
        if req.compact:
            peers, peers6 = self.store.compact_sample(torrent, req.peer_id, numwant)
            return Reply(200, BENCODE, codec.compact_reply(
                complete=torrent.seeders, incomplete=torrent.leechers, interval=interval,
                min_interval=min_interval, peers=peers, peers6=peers6,
                tracker_id=self.tracker_id, near=near))
        four, six = self.store.sample(torrent, req.peer_id, numwant)
        return Reply(200, BENCODE, codec.dict_reply(
            complete=torrent.seeders, incomplete=torrent.leechers, interval=interval,
            min_interval=min_interval,
            peers=[(p.peer_id, p.ip, p.port) for p in four + six],
            no_peer_id=req.no_peer_id, tracker_id=self.tracker_id, near=near))

    def _scrape(self, query: bytes, target: bytes, remote: str) -> Reply:
        try:
            args = codec.parse_query(query)
            hashes = codec.parse_scrape(args)
            if self.auth is not None:
                refused = self.auth.check(hashes or (), args.get(b"auth", ()))
                if refused is not None:
                    self.metrics.scrape("auth_refused")
                    return self.refuse(200, refused, target, remote)
        except AnnounceError as e:
            self.metrics.scrape("invalid")
            return self.refuse(200, e.reason, target, remote)
        self.metrics.scrape("ok")
        return Reply(200, BENCODE, codec.scrape_reply(self.store.scrape(hashes)))

    # ---------------------------------------------------------------- status

    def _status_json(self, query: bytes, target: bytes, remote: str) -> Reply:
        return Reply(200, JSON, json.dumps(self.status(), indent=1).encode())

    def _status_html(self, query: bytes, target: bytes, remote: str) -> Reply:
        # The live dashboard; the plain tables stay inside <noscript>.
        plain = render_status_html(self.status())
        plain = plain.partition("<body>")[2].rpartition("</body>")[0]
        page = _static_file("dashboard.html").replace(b"<!--NOSCRIPT-->", plain.encode())
        return Reply(200, HTML, page)

    def status(self) -> dict[str, Any]:
        """The ``/status.json`` document, with the tracker's own counters."""
        doc = status(self.store, self.stall_after)
        if self.auth is not None:
            doc["totals"]["rejected_auth"] = self.auth.rejected
        return doc

    # ------------------------------------------------------------- live view

    def _swarm_html(self, query: bytes, target: bytes, remote: str) -> Reply:
        return Reply(200, HTML, _static_file("dashboard.html"))

    def _static(self, query: bytes, target: bytes, remote: str) -> Reply:
        name = target.partition(b"?")[0].rsplit(b"/", 1)[-1].decode()
        return Reply(200, JS if name.endswith(".js") else CSS, _static_file(name))

    def _dashboard_json(self, query: bytes, target: bytes, remote: str) -> Reply:
        info_hash = None
        hexes = codec.parse_query(query).get(b"info_hash")
        if hexes:
            try:
                info_hash = bytes.fromhex(hexes[0].decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                info_hash = b""
            if len(info_hash) != 20:
                return self.refuse(400, "info_hash must be 40 hex digits", target, remote)
        now = self.store.clock.seconds()
        key = info_hash or b""
        cached = self._view_cached.get(key)
        if cached is not None and self.view_cache and now - cached[0] < self.view_cache:
            return Reply(200, JSON, cached[1])
        body = json.dumps(dashboard(self.store, self.stall_after, info_hash),
                          separators=(",", ":")).encode()
        if self.view_cache:
            if len(self._view_cached) >= 64:
                self._view_cached.clear()
            self._view_cached[key] = (now, body)
        return Reply(200, JSON, body)

    def _metrics(self, query: bytes, target: bytes, remote: str) -> Reply:
        return Reply(200, METRICS_TYPE, self.metrics.render())


_STATIC: dict[str, bytes] = {}


def _static_file(name: str) -> bytes:
    """A file of ``murder/tracker/static`` (package data), read once."""
    data = _STATIC.get(name)
    if data is None:
        data = resources.files("murder.tracker").joinpath("static", name).read_bytes()
        _STATIC[name] = data
    return data


def _origin_path(path: bytes) -> bytes:
    """``http://host:port/announce`` (absolute-form, RFC 9112 3.2.2) → ``/announce``."""
    scheme, sep, rest = path.partition(b"://")
    if not sep or b"/" in scheme:
        return path
    slash = rest.find(b"/")
    return rest[slash:] if slash >= 0 else b"/"


def status(store: PeerStore, stall_after: float = 30.0) -> dict[str, Any]:
    """The ``/status.json`` document (schema in the module docstring)."""
    now = store.clock.seconds()
    torrents = []
    seeders = 0
    for info_hash in sorted(store.torrents):
        torrent = store.torrents[info_hash]
        info = store.known.get(info_hash)
        size = info.size if info else None
        peers = []
        stalled = 0
        for p in sorted(torrent.peers.values(), key=lambda p: (p.ip, p.port)):
            progress = None
            if size:
                progress = round(max(0.0, min(1.0, 1 - p.left / size)), 4)
            peers.append({
                "peer_id": p.peer_id.hex(), "ip": p.ip, "port": p.port, "left": p.left,
                "uploaded": p.uploaded, "downloaded": p.downloaded, "seeder": p.left == 0,
                "progress": progress, "last_announce_age": round(now - p.last_seen, 3),
            })
            state = peer_state(p, now, stall_after)
            stalled += state == "stalled"
            peers[-1].update({
                "state": state, "rate": round(p.rate), "up_rate": round(p.up_rate),
                "idle": round(now - p.progress_at, 3),
                "completed_age": (round(now - p.completed_at, 3)
                                  if p.completed_at is not None else None)})
        seeders += torrent.seeders
        torrents.append({
            "info_hash": info_hash.hex(), "name": info.name if info else None, "size": size,
            "complete": torrent.seeders, "incomplete": torrent.leechers,
            "downloaded": torrent.downloaded, "peers": peers, "stalled": stalled,
        })
    return {
        "version": 1, "now": time.time(),
        "totals": {"torrents": len(store.torrents), "peers": store.peer_count,
                   "seeders": seeders, "leechers": store.peer_count - seeders},
        "torrents": torrents, "stall_after": stall_after,
    }


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.1f} TiB"


def render_status_html(doc: dict[str, Any]) -> str:
    """The human status page: one table per torrent, progress per peer."""
    e = html.escape
    totals = doc["totals"]
    out = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Murder tracker</title>",
        "<style>body{font-family:sans-serif}table{border-collapse:collapse;margin-bottom:1em}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style></head><body>",
        "<h1>Murder tracker</h1>",
        f"<p>{totals['torrents']} torrents, {totals['peers']} peers "
        f"({totals['seeders']} seeders, {totals['leechers']} leechers"
        + (f"; {totals['rejected_auth']} unauthorised requests refused"
           if "rejected_auth" in totals else "") + "). "
        "Machine-readable: <a href='/status.json'>/status.json</a></p>",
    ]
    for t in doc["torrents"]:
        title = e(t["name"]) if t["name"] else "(unknown torrent)"
        size = f", {_bytes(t['size'])}" if t["size"] else ""
        out.append(f"<h2>{title} <small><code>{t['info_hash']}</code>{size}</small></h2>")
        out.append(f"<p>seeders {t['complete']}, leechers {t['incomplete']}, "
                   f"completed {t['downloaded']}</p>")
        out.append("<table><tr><th>peer</th><th>progress</th><th>left</th>"
                   "<th>uploaded</th><th>downloaded</th><th>last announce</th></tr>")
        for p in t["peers"]:
            progress = (f"{100 * p['progress']:.1f}%" if p["progress"] is not None
                        else ("seeder" if p["seeder"] else "?"))
            out.append(
                f"<tr><td>{e(p['ip'])}:{p['port']}</td><td>{progress}</td>"
                f"<td>{_bytes(p['left'])}</td><td>{_bytes(p['uploaded'])}</td>"
                f"<td>{_bytes(p['downloaded'])}</td><td>{p['last_announce_age']:.0f} s ago</td></tr>")
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)
