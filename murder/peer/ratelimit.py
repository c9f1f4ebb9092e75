"""Optional upload and download caps: token buckets and the pauses they cause.

For hosts that also serve traffic, ``--max-upload-rate`` and
``--max-download-rate`` cap one swarm's bytes per second.  Over the upload
cap a peer's pump waits (the limiter calls back when there is credit); over
the download cap the limiter stops *reading* from the peer that sent the
last block (the kernel's receive window then slows the sender) and resumes
it when in credit.  Time comes from the injected clock.
"""

from __future__ import annotations

from typing import Callable

from twisted.logger import Logger

from murder.peer.interfaces import Clock, DelayedCall, Peer
from murder.peer.wire import BLOCK_SIZE


class TokenBucket:
    """Token bucket for one rate cap.

    Every byte is counted, also those that arrive while over the limit, so a
    cap holds with many sources; ``wait`` says how long until it is back in
    credit.  Bursts are bounded by a quarter second of the rate.
    """

    def __init__(self, rate: int, now: float) -> None:
        self.rate = rate
        self.burst = max(rate / 4, float(BLOCK_SIZE))
        self.tokens = self.burst
        self.stamp = now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def spend(self, n: int, now: float) -> None:
        self._refill(now)
        self.tokens -= n

    def wait(self, now: float) -> float:
        """Seconds until the bucket is in credit again (0: it is)."""
        self._refill(now)
        return 0.0 if self.tokens > 0 else -self.tokens / self.rate + 0.001


class RateLimiter:
    """Both caps of one swarm (0: no cap) and the peers each one holds back.

    ``resume_upload(peer)`` is the swarm's: called when a peer that waited for
    upload credit may send again.
    """

    log = Logger()

    def __init__(self, clock: Clock, max_upload_rate: int, max_download_rate: int,
                 resume_upload: Callable[[Peer], None]) -> None:
        self.clock = clock
        now = clock.seconds()
        self.up = TokenBucket(max_upload_rate, now) if max_upload_rate else None
        self.down = TokenBucket(max_download_rate, now) if max_download_rate else None
        self._resume_upload = resume_upload
        self._up_waiting: set[Peer] = set()
        self._down_paused: set[Peer] = set()
        self._up_call: DelayedCall | None = None
        self._down_call: DelayedCall | None = None

    def forget(self, peer: Peer) -> None:
        self._up_waiting.discard(peer)
        self._down_paused.discard(peer)

    # -- upload
    def upload_allowed(self, peer: Peer) -> bool:
        """May ``peer``'s pump send now?  If not, it is resumed when it may."""
        if self.up is None:
            return True
        delay = self.up.wait(self.clock.seconds())
        if not delay:
            return True
        self._up_waiting.add(peer)
        if self._up_call is None or not self._up_call.active():
            self._up_call = self.clock.callLater(delay, self._resume_uploads)
        return False

    def uploaded(self, length: int) -> None:
        if self.up is not None:
            self.up.spend(length, self.clock.seconds())

    def _resume_uploads(self) -> None:
        peers, self._up_waiting = self._up_waiting, set()
        for peer in peers:
            if peer.active:
                try:
                    self._resume_upload(peer)
                except Exception:
                    self.log.failure("upload to {address} failed", address=peer.address)
                    peer.link.drop("internal error")

    # -- download
    def downloaded(self, peer: Peer, length: int, now: float) -> None:
        """Count a block from ``peer``; over the cap, stop reading from it."""
        if self.down is None:
            return
        self.down.spend(length, now)
        if self.down.wait(now):
            peer.link.pause_reading()
            self._down_paused.add(peer)
            if self._down_call is None or not self._down_call.active():
                delay = self.down.wait(self.clock.seconds())
                self._down_call = self.clock.callLater(delay, self._resume_downloads)

    def reading_paused(self, peer: Peer) -> bool:
        """Are we holding ``peer``'s data back (so its silence is ours)?"""
        return peer in self._down_paused

    def _resume_downloads(self) -> None:
        assert self.down is not None
        delay = self.down.wait(self.clock.seconds())
        if delay:
            self._down_call = self.clock.callLater(delay, self._resume_downloads)
            return
        peers, self._down_paused = self._down_paused, set()
        now = self.clock.seconds()
        for peer in peers:
            if peer.active:
                # We were not reading: its silence meanwhile was ours.
                peer.last_received = now
                peer.link.resume_reading()


__all__ = ["RateLimiter", "TokenBucket"]
