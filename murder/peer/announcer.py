"""Tracker client: announces with treq, follows the interval, fails over.

Pure parts (:func:`build_query`, :func:`parse_response`) are separate from the
:class:`Announcer`, which owns timing (injected clock) and the HTTP client
(an injected ``treq``-like object, so tests pass ``StubTreq``).  ``udp://``
announce URLs (BEP 15) go through an injected UDP client instead
(:class:`murder.peer.udptracker.UDPTrackerClient`).

Announces ask ``compact=1`` (BEP 23): opentracker refuses anything else, and
every tracker answers it; the reply may still hold a dictionary peer list,
which is read too.  When no announce succeeds in time the error tells a
tracker that answered (:class:`~murder.errors.TrackerRefused`: its HTTP
status and ``failure reason``) from one that could not be reached
(:class:`~murder.errors.TrackerUnreachable`), with the real elapsed time.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import quote_from_bytes

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from murder import bencode, compact
from murder.auth import redact
from murder.errors import AnnounceError, TrackerRefused, TrackerUnreachable

Address = tuple[str, int]


@dataclass(frozen=True)
class AnnounceParams:
    """What one announce says about us (the UDP client encodes it itself)."""

    info_hash: bytes
    peer_id: bytes
    port: int
    uploaded: int
    downloaded: int
    left: int
    event: str | None
    ip: str | None
    numwant: int


@dataclass(frozen=True)
class AnnounceReply:
    interval: float
    peers: list[tuple[Address, bytes | None]]
    complete: int | None
    incomplete: int | None
    #: Our rack's networks (CIDR strings) from a rack-aware tracker's ``near``
    #: key (``murder tracker --topology``); empty from any other tracker.
    near: tuple[str, ...] = ()


def shown(url: str) -> str:
    """``url`` for logs and error messages, its ``auth=`` token (the tracker's
    per-swarm secret) replaced: deploy logs are read more widely than torrents."""
    return redact(url.encode()).decode()


def build_query(info_hash: bytes, peer_id: bytes, port: int, uploaded: int, downloaded: int,
                left: int, event: str | None, ip: str | None, numwant: int,
                key: str | None = None) -> str:
    """The announce query string (BEP 3; raw bytes percent-encoded)."""
    parts = [
        "info_hash=" + quote_from_bytes(info_hash, safe=""),
        "peer_id=" + quote_from_bytes(peer_id, safe=""),
        f"port={port}", f"uploaded={uploaded}", f"downloaded={downloaded}", f"left={left}",
        "compact=1", f"numwant={numwant}",
    ]
    if event:
        parts.append(f"event={event}")
    if ip:
        parts.append("ip=" + quote_from_bytes(ip.encode(), safe=""))
    if key:
        parts.append("key=" + key)
    return "&".join(parts)


def _compact(blob: bytes, family: int) -> list[tuple[Address, bytes | None]]:
    return [(address, None) for address in compact.decode(blob, family == socket.AF_INET6)]


def failure_reason(body: bytes) -> str | None:
    """The ``failure reason`` of a bencoded reply, if it is one."""
    try:
        reply = bencode.decode(body)
    except Exception:  # bencodepy raises several types on garbage
        return None
    failure = reply.get(b"failure reason") if isinstance(reply, dict) else None
    if failure is None:
        return None
    return failure.decode("utf-8", "replace") if isinstance(failure, bytes) else str(failure)


def http_error(code: int, phrase: bytes | str, body: bytes) -> AnnounceError:
    """What a tracker said with a non-200 status: ``HTTP 400 Invalid Request: <reason>``."""
    if isinstance(phrase, bytes):
        phrase = phrase.decode("latin-1", "replace")
    status = f"HTTP {code} {phrase}".strip()
    reason = failure_reason(body)
    return AnnounceError(f"{status}: {reason}" if reason else status)


def parse_response(body: bytes) -> AnnounceReply:
    """Decode a tracker reply; raise :class:`AnnounceError` on failure or garbage."""
    try:
        reply = bencode.decode(body)
    except Exception as e:  # bencodepy raises several types on garbage
        raise AnnounceError(f"tracker sent no bencode ({e})") from None
    if not isinstance(reply, dict):
        raise AnnounceError("tracker reply is not a dict")
    failure = reply.get(b"failure reason")
    if failure is not None:
        text = failure.decode("utf-8", "replace") if isinstance(failure, bytes) else str(failure)
        raise AnnounceError(f"tracker refused: {text}")
    interval = reply.get(b"interval", 15)
    if not isinstance(interval, int) or interval <= 0:
        interval = 15
    peers: list[tuple[Address, bytes | None]] = []
    raw = reply.get(b"peers", b"")
    if isinstance(raw, bytes):
        peers.extend(_compact(raw, socket.AF_INET))
    elif isinstance(raw, list):
        for entry in raw:
            if not isinstance(entry, dict):
                continue
            ip, port, pid = entry.get(b"ip"), entry.get(b"port"), entry.get(b"peer id")
            if isinstance(ip, bytes) and isinstance(port, int) and 0 < port < 65536:
                peers.append(((ip.decode("ascii", "replace"), port),
                              pid if isinstance(pid, bytes) and len(pid) == 20 else None))
    raw6 = reply.get(b"peers6")
    if isinstance(raw6, bytes):
        peers.extend(_compact(raw6, socket.AF_INET6))
    complete = reply.get(b"complete")
    incomplete = reply.get(b"incomplete")
    raw_near = reply.get(b"near")
    near: tuple[str, ...] = ()
    if isinstance(raw_near, list):
        near = tuple(n.decode("ascii", "replace") for n in raw_near[:64]
                     if isinstance(n, bytes))
    return AnnounceReply(
        float(interval), peers,
        complete if isinstance(complete, int) else None,
        incomplete if isinstance(incomplete, int) else None,
        near,
    )


def describe_failure(failure) -> str:
    """One readable line for a failed announce.

    twisted.web wraps connection failures in ``ResponseNeverReceived`` /
    ``ResponseFailed`` whose message is a list of ``Failure`` reprs, and
    pyOpenSSL errors are lists of tuples; a refused TLS handshake should read
    ``TLS error: certificate verify failed``.
    """
    reasons = getattr(failure.value, "reasons", None)
    if reasons:
        return "; ".join(dict.fromkeys(describe_failure(r) for r in reasons))
    value = failure.value
    if type(value).__module__.startswith("OpenSSL") and value.args \
            and isinstance(value.args[0], list):
        details = [str(e[-1]) for e in value.args[0] if isinstance(e, tuple) and e]
        return "TLS error: " + (", ".join(details) or type(value).__name__)
    return failure.getErrorMessage() or failure.type.__name__


class Announcer:
    """Keeps one torrent announced to its trackers.

    ``start()`` returns a Deferred that fires after the first successful
    announce, or fails after ``tracker_timeout`` seconds with
    :class:`TrackerRefused` (some tracker answered, with an error) or
    :class:`TrackerUnreachable` (none answered at all).  Afterwards failures are logged and
    retried; the swarm keeps its connections meanwhile.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, http: Any, urls: tuple[str, ...], info_hash: bytes,
                 peer_id: bytes, port: int, ip: str | None,
                 stats: Callable[[], tuple[int, int, int]],
                 on_reply: Callable[[AnnounceReply], None], numwant: int = 500,
                 tracker_timeout: float = 60.0, request_timeout: float = 10.0,
                 max_interval: float | None = None, udp: Any = None,
                 lonely_interval: float = 5.0) -> None:
        self.clock = clock
        self.http = http
        #: Client for ``udp://`` URLs: ``announce(url, AnnounceParams, timeout)``.
        self.udp = udp
        #: Per URL, before the first success: ``(answered, what happened)``.
        self._outcomes: dict[str, tuple[bool, str]] = {}
        self.urls = list(urls)
        self.info_hash = info_hash
        self.peer_id = peer_id
        self.port = port
        self.ip = ip
        self.stats = stats
        self.on_reply = on_reply
        self.numwant = numwant
        self.tracker_timeout = tracker_timeout
        self.request_timeout = request_timeout
        self.max_interval = max_interval
        #: Re-announce interval while the tracker knows no source for us.
        self.lonely_interval = lonely_interval
        self.last_reply: AnnounceReply | None = None
        self.last_reply_at = 0.0
        self._current = 0
        self._call = None
        self._started: defer.Deferred | None = None
        self._first_attempt = 0.0
        self._backoff = 0.5
        self._last_error = "no attempt yet"
        self._stopped = False
        self._pending_event: str | None = "started"

    # -- lifecycle
    def start(self) -> defer.Deferred:
        self._started = defer.Deferred()
        self._first_attempt = self.clock.seconds()
        self._schedule(0)
        return self._started

    def completed(self) -> None:
        """Announce ``completed`` now (the moment the payload verified)."""
        self._pending_event = "completed"
        if self.last_reply is not None:
            self._schedule(0)

    def refresh(self) -> None:
        """Announce now for fresh swarm counts (a lingering peer asks often)."""
        if self.last_reply is not None and not self._stopped:
            self._schedule(0)

    def stop(self, timeout: float = 2.0) -> defer.Deferred:
        """Announce ``stopped`` (best effort, bounded) and stop re-announcing."""
        self._stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        if self.last_reply is None:
            return defer.succeed(None)
        d = self._announce_once(self.urls[self._current], "stopped", timeout)
        d.addErrback(lambda _: None)
        return d

    # -- internals
    def _schedule(self, delay: float) -> None:
        if self._stopped:
            return
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = self.clock.callLater(delay, self._run)

    def _announce_once(self, url: str, event: str | None, timeout: float) -> defer.Deferred:
        uploaded, downloaded, left = self.stats()
        if url.startswith("udp://"):
            if self.udp is None:
                return defer.fail(AnnounceError("udp:// trackers are not supported here"))
            params = AnnounceParams(self.info_hash, self.peer_id, self.port, uploaded,
                                    downloaded, left, event, self.ip, self.numwant)
            return self.udp.announce(url, params, timeout)
        query = build_query(self.info_hash, self.peer_id, self.port, uploaded, downloaded,
                            left, event, self.ip, self.numwant)
        full = url + ("&" if "?" in url else "?") + query
        d = self.http.get(full, timeout=timeout)
        d.addCallback(self._read)
        return d

    def _read(self, response) -> defer.Deferred:
        code = response.code
        phrase = getattr(response, "phrase", b"") or b""

        def check(body: bytes) -> AnnounceReply:
            if code != 200:
                raise http_error(code, phrase, body)
            return parse_response(body)

        return self.http.content(response).addCallback(check)

    def _run(self) -> None:
        self._call = None
        event = self._pending_event
        url = self.urls[self._current]
        timeout = self.request_timeout
        if url.startswith("udp://"):
            # BEP 15 retransmits after 15 s, 30 s ...: give each URL of the
            # list its share of the bound before falling back to the next.
            timeout = self.tracker_timeout / len(self.urls)
        if self._started is not None:
            # Before the first answer, no single request may outlast the bound.
            waited = self.clock.seconds() - self._first_attempt
            timeout = max(0.5, min(timeout, self.tracker_timeout - waited))
        d = self._announce_once(url, event, timeout)
        d.addCallbacks(self._success, self._failure, callbackArgs=(url, event),
                       errbackArgs=(url,))
        d.addErrback(lambda f: self.log.failure("announce bookkeeping failed", f))

    def _give_up(self, waited: float) -> Exception:
        """TrackerRefused if any tracker answered, else TrackerUnreachable."""
        if any(answered for answered, _ in self._outcomes.values()):
            return TrackerRefused({shown(u): (what if answered else f"unreachable: {what}")
                                   for u, (answered, what) in self._outcomes.items()}, waited)
        return TrackerUnreachable([shown(u) for u in self.urls], waited, self._last_error)

    def _success(self, reply: AnnounceReply, url: str, event: str | None) -> None:
        if self._pending_event == event:
            self._pending_event = None
        self.last_reply = reply
        self.last_reply_at = self.clock.seconds()
        self._backoff = 0.5
        self.log.debug("announced {event} to {url}: {n} peers", event=event or "update",
                       url=shown(url), n=len(reply.peers))
        interval = reply.interval
        if self.max_interval:
            interval = min(interval, self.max_interval)
        if interval > self.lonely_interval and self.stats()[2] > 0 and \
                (not reply.peers or reply.complete == 0):
            # Nothing to download from yet (no peers, or no seed among them):
            # ask again soon rather than at the tracker's interval (30 min
            # from opentracker), or peers started before the seeder wait
            # that long — a seed dials no one whose peer id it lacks.
            interval = self.lonely_interval
        self._schedule(0 if self._pending_event else interval)
        self.on_reply(reply)
        if self._started is not None:
            d, self._started = self._started, None
            d.callback(reply)

    def _failure(self, failure, url: str) -> None:
        self._last_error = describe_failure(failure)
        answered = failure.check(AnnounceError) is not None
        self.log.warn("tracker {url} {verb}: {why}", url=shown(url),
                      verb="answered" if answered else "failed", why=self._last_error)
        self._current = (self._current + 1) % len(self.urls)
        if self._started is not None:
            self._outcomes[url] = (answered, self._last_error)
            waited = self.clock.seconds() - self._first_attempt
            if waited >= self.tracker_timeout:
                d, self._started = self._started, None
                self._stopped = True
                d.errback(self._give_up(waited))
                return
            delay = min(self._backoff, max(0.0, self.tracker_timeout - waited))
        else:
            delay = self._backoff
        self._backoff = min(self._backoff * 2, 15.0)
        self._schedule(delay)
