"""The deploy itself, on Twisted: tracker + seeder here, one session per host.

:class:`Deployment` runs one deploy from start to end: its
:class:`~murder.deploy.origin.Origin` starts a tracker (unless ``--tracker``
names one) and a seeder in this process and makes the torrent; its
:class:`~murder.deploy.sessions.HostSessions` opens one session per host
(``ssh host sh -c 'murder peer --torrent - --stop-on-eof …'``) with the
torrent written to the session's stdin.  The peer's verdict comes back on the
session's stdout, its progress on stderr.  A verified host's session stays
open, so the host keeps seeding, until the deploy ends; then every session's
stdin is closed and each remote peer stops cleanly (its ``.part`` kept).
"""

from __future__ import annotations

import signal as _signal
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from murder import metainfo
from murder.deploy import core
from murder.deploy.core import HostRecord
from murder.deploy.hosts import Target
from murder.deploy.origin import Origin
from murder.deploy.sessions import HostSessions
from murder.deploy.transport import Transport
from murder.errors import MurderError

#: Seconds remote peers get to stop after their stdin closed, before the
#: local ssh clients are sent SIGTERM (which closes the sessions anyway).
STOP_GRACE = 10.0


@dataclass(frozen=True)
class DeployConfig:
    """Everything a deploy needs, validated (see ``murder deploy --help``)."""

    payload: str
    dest: str
    targets: tuple[Target, ...]
    transport: Transport = field(default_factory=Transport)
    announce_host: str | None = None
    tracker: str | None = None
    tracker_port: int = 0
    sign: str | None = None
    auth_secret: str | None = None
    remote_murder: str = "murder"
    parallel: int = 64
    retries: int = 2
    retry_delay: float = 1.0
    timeout: float | None = None
    then: str | None = None
    tracker_timeout: float = 60.0
    piece_length: int | None = None


class Deployment:
    """Runs one deploy; :meth:`run` fires with the per-host records.

    The overall run only: set-up, the deadline, interruption and the orderly
    end.  What runs here is :attr:`origin`'s, the hosts' sessions are
    :attr:`hosts`'.
    """

    log = Logger()

    def __init__(self, config: DeployConfig, reactor: Any, display: Any = None) -> None:
        self.config = config
        self.reactor = reactor
        self.display = display
        self.records = [HostRecord(host=t.name) for t in config.targets]
        self.started: float = reactor.seconds()
        self.origin = Origin(config, reactor)
        self.hosts = HostSessions(config, reactor, self.records, self.started,
                                  self._say, self._changed)
        self.meta: metainfo.Metainfo | None = None
        self.interrupted_by: int | None = None
        self.setup_error: str | None = None
        self._finishing = False
        self._stopping = False
        self._done: defer.Deferred[list[HostRecord]] = defer.Deferred()
        self._deadline: Any = None
        self._kill_timer: Any = None

    @property
    def announce_url(self) -> str | None:
        """The tracker every host announces to (known once set-up began)."""
        return self.origin.announce_url

    @property
    def torrent_bytes(self) -> bytes:
        """The torrent sent to every session (empty until it is made)."""
        return self.hosts.torrent_bytes

    # ------------------------------------------------------------ set-up
    def run(self) -> defer.Deferred[list[HostRecord]]:
        """Start; the Deferred fires with ``self.records`` once every remote
        process has ended and the local tracker and seeder have stopped."""
        d = defer.ensureDeferred(self._start())
        d.addErrback(self._setup_failed)
        return self._done

    def _say(self, record: HostRecord | None, text: str) -> None:
        if self.display is not None:
            self.display.event(record, text)

    async def _start(self) -> None:
        c = self.config
        if c.timeout:
            self._deadline = self.reactor.callLater(c.timeout, self._timed_out)
        announce = self.origin.start_tracker()
        # Sessions open now: ssh handshakes and the remote peers' start-up
        # overlap hashing and the seeder's start; each peer waits on stdin.
        self.hosts.pump()
        self._say(None, f"hashing {c.payload}")
        meta = await self.origin.make_torrent()
        await self.origin.start_seeder()
        self.meta = meta
        self._say(None, f"torrent {meta.info_hash.hex()[:16]}: {meta.total_length} "
                        f"bytes, {meta.num_pieces} pieces; tracker {announce}; "
                        f"seeding from {self.origin.host}")
        if self.display is not None:
            self.display.start(self)
        self.hosts.send_torrent(meta.encode())
        self._check_done()

    def _setup_failed(self, failure: Failure) -> None:
        error = failure.value
        message = str(error) if isinstance(error, MurderError) else f"internal error: {error!r}"
        if not isinstance(error, MurderError):
            self.log.failure("deploy set-up failed", failure)
        for r in self.records:
            r.fail(core.PEER_FAILED, f"not started: {message}", self.reactor.seconds())
        self.setup_error = message
        self._finish()

    # ------------------------------------------------------------ ending
    def _changed(self) -> None:
        """A host's state or a process's life changed: maybe the deploy is over."""
        self._check_done()
        self._maybe_stopped()

    def _check_done(self) -> None:
        if not self._finishing and self.meta is not None and \
                all(r.final for r in self.records):
            self._finish()

    def _timed_out(self) -> None:
        if self._finishing:
            return
        now = self.reactor.seconds()
        for r in self.records:
            r.fail(core.TIMED_OUT, f"timed out after {self.config.timeout:g}s "
                                   f"({100 * r.fraction:.0f}% done, {r.state})", now)
        self._finish()

    def interrupt(self, signum: int) -> None:
        """SIGINT/SIGTERM: every host not verified yet fails as interrupted."""
        if self.interrupted_by is None:
            self.interrupted_by = signum
        if self._finishing:
            return
        name = _signal.Signals(signum).name if signum in _signal.Signals._value2member_map_ \
            else str(signum)
        now = self.reactor.seconds()
        for r in self.records:
            r.fail(core.INTERRUPTED, f"interrupted by {name} ({100 * r.fraction:.0f}% done)",
                   now)
        self._finish()

    def _finish(self) -> None:
        """Close every session's stdin (remote peers stop cleanly), then
        escalate to SIGTERM/SIGKILL of the local ssh clients if they linger."""
        if self._finishing:
            return
        self._finishing = True
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self.hosts.stop()
        self._kill_timer = self.reactor.callLater(STOP_GRACE, self._escalate, "TERM")
        self._maybe_stopped()

    def _escalate(self, sig: str) -> None:
        self.hosts.signal_all(sig)
        if sig == "TERM":
            self._kill_timer = self.reactor.callLater(5.0, self._escalate, "KILL")

    def _maybe_stopped(self) -> None:
        if not self._finishing or not self.hosts.idle or self._done.called or self._stopping:
            return
        self._stopping = True
        if self._kill_timer.active():
            self._kill_timer.cancel()
        defer.ensureDeferred(self._stop_local()).addBoth(lambda _: self._done.callback(
            self.records))

    async def _stop_local(self) -> None:
        await self.origin.stop()
        if self.display is not None:
            self.display.stop()


__all__ = ["STOP_GRACE", "DeployConfig", "Deployment"]
