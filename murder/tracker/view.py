"""The live fleet view: per-swarm progress documents for the dashboard.  Pure code.

Built from the :class:`~murder.tracker.store.PeerStore` at a given clock
time; nothing here does I/O.  Each peer is in one state:

``downloading``  leeching, and made progress within ``stall_after`` seconds;
``stalled``      leeching, but no progress (``left`` falling or ``downloaded``
                 growing) for ``stall_after`` seconds, announcing or not
                 (a frozen host stops announcing altogether);
``complete``     finished its download here (it may since have left);
``seeder``       had the whole payload from its first announce (an origin);
``gone``         left (``stopped`` or expired) before finishing.

Progress is as fresh as the announces: the tracker asks leechers to announce
every ``--leecher-interval`` seconds (see :mod:`murder.tracker.tap`).

``/dashboard.json`` (version 1; keys may be added)::

    {"version": 1, "now": <unix time>, "stall_after": s,
     "swarms": [{"info_hash": hex, "name": s|null, "size": n|null,
                 "size_estimated": bool,      # size from the largest "left" seen
                 "states": {"downloading": n, "stalled": n, "complete": n,
                            "seeder": n, "gone": n},
                 "hosts": n,                  # peers that came to download
                 "elapsed": s,                # since the first of them appeared
                                              # (when all are done: the last end)
                 "rate": bytes/s, "left": bytes, "eta": s|null,
                 "seeder_uploaded": bytes, "seeder_ratio": x|null,
                 "completions": [s, ...],     # completion times since start
                 "failures": [s, ...]}]}      # when "gone" hosts left

With ``?info_hash=HEX`` only that swarm is listed, and it also carries
``"columns": [...]`` and ``"peers": [[...], ...]`` (one array per peer, in
``columns`` order, sorted by numeric address) so 2,000 hosts stay a small answer.
"""

from __future__ import annotations

import operator
import time
from typing import Any, Iterable

from murder.tracker.store import Peer, PeerStore, Torrent

STATES = ("downloading", "stalled", "complete", "seeder", "gone")

#: Columns of a peer row in the per-swarm document.
COLUMNS = ("ip", "port", "state", "progress", "rate", "eta", "left", "uploaded",
           "downloaded", "age", "done_at", "idle")


def peer_state(peer: Peer, now: float, stall_after: float) -> str:
    """One of :data:`STATES` for ``peer`` at clock time ``now``."""
    if peer.left == 0:
        if peer.initial_left > 0 or peer.completed_at is not None:
            return "complete"
        return "gone" if peer.gone_at is not None else "seeder"
    if peer.gone_at is not None:
        return "gone"
    return "stalled" if now - peer.progress_at >= stall_after else "downloading"


#: Numeric address order (compact form: address bytes then port), IPv4 first.
_address = operator.attrgetter("v6", "compact")


def _all_peers(torrent: Torrent) -> Iterable[Peer]:
    yield from torrent.peers.values()
    yield from torrent.departed.values()


def count_stalled(store: PeerStore, stall_after: float) -> int:
    """Peers leeching without progress for ``stall_after`` seconds, over all swarms."""
    deadline = store.clock.seconds() - stall_after
    return sum(1 for t in store.torrents.values() for p in t.peers.values()
               if p.left > 0 and p.progress_at <= deadline)


def swarm_view(store: PeerStore, torrent: Torrent, now: float, stall_after: float,
               rows: bool = False) -> dict[str, Any]:
    """One swarm's summary (and its peer rows when ``rows``); see the module docstring."""
    info = store.known.get(torrent.info_hash)
    peers = list(_all_peers(torrent))
    size: int | None = info.size if info else None
    estimated = False
    if size is None and peers:
        size = max(max(p.initial_left, p.left) for p in peers) or None
        estimated = size is not None
    states = dict.fromkeys(STATES, 0)
    leechers = [p for p in peers if p.initial_left > 0 or p.completed_at is not None]
    start = min((p.first_seen for p in leechers), default=now)
    rate = 0.0
    left = 0
    eta: float | None = None
    seeder_uploaded = 0
    completions = []
    failures = []
    out_rows = []
    for p in sorted(peers, key=_address) if rows else peers:
        state = peer_state(p, now, stall_after)
        states[state] += 1
        peer_eta = None
        if state == "downloading":
            rate += p.rate
            left += p.left
            if p.rate > 0:
                peer_eta = p.left / p.rate
                eta = peer_eta if eta is None else max(eta, peer_eta)
        elif state == "stalled":
            left += p.left
        elif state == "gone" and p.left > 0 and p.gone_at is not None:
            failures.append(round(p.gone_at - start, 3))
        if p.initial_left == 0 and p.completed_at is None:
            seeder_uploaded += p.uploaded
        done_at = None
        if p.completed_at is not None and (p.initial_left > 0 or state == "complete"):
            done_at = round(max(0.0, p.completed_at - start), 3)
            completions.append(done_at)
        if rows:
            # Integer arithmetic and tenths: this loop runs for every host of
            # the swarm once a second per viewer (bench/tracker_view.py).
            progress = (max(0, size - p.left) * 10000 // size) / 10000 if size else None
            age_from = p.gone_at if p.gone_at is not None else now
            out_rows.append([
                p.ip, p.port, state, progress, int(p.rate) if state == "downloading" else 0,
                int(peer_eta * 10) / 10 if peer_eta is not None else None,
                p.left, p.uploaded, p.downloaded, int((now - p.last_seen) * 10) / 10, done_at,
                int(max(0.0, age_from - p.progress_at) * 10) / 10])
    if states["stalled"] and eta is not None:
        eta = None  # a stalled host has no end in sight; do not promise one
    completions.sort()
    failures.sort()
    elapsed = round(now - start, 3) if leechers else 0.0
    if leechers and not (states["downloading"] or states["stalled"]):
        # The deploy is over: its duration, not a clock that keeps running.
        elapsed = max(completions + failures, default=elapsed)
    doc: dict[str, Any] = {
        "info_hash": torrent.info_hash.hex(), "name": info.name if info else None,
        "size": size, "size_estimated": estimated, "states": states,
        "hosts": len(leechers), "elapsed": elapsed,
        "rate": round(rate), "left": left, "eta": round(eta, 1) if eta is not None else None,
        "seeder_uploaded": seeder_uploaded,
        "seeder_ratio": round(seeder_uploaded / size, 3) if size else None,
        "completions": completions, "failures": failures,
    }
    if rows:
        doc["columns"] = list(COLUMNS)
        doc["peers"] = out_rows
    return doc


def dashboard(store: PeerStore, stall_after: float,
              info_hash: bytes | None = None) -> dict[str, Any]:
    """The ``/dashboard.json`` document; one swarm with peer rows if ``info_hash``."""
    now = store.clock.seconds()
    if info_hash is not None:
        torrent = store.torrents.get(info_hash)
        swarms = [swarm_view(store, torrent, now, stall_after, rows=True)] if torrent else []
    else:
        swarms = [swarm_view(store, store.torrents[ih], now, stall_after)
                  for ih in sorted(store.torrents)]
    return {"version": 1, "now": time.time(), "stall_after": stall_after, "swarms": swarms}
