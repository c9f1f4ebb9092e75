"""What a deploy runs on this machine: the torrent, a tracker and the seeder.

:class:`Origin` makes and signs the torrent in a private work directory,
starts a tracker in this process (unless ``--tracker`` names one) and the
seeder that every host first downloads from, and stops them again.  The
per-host sessions live in :mod:`murder.deploy.sessions`; the
:class:`~murder.deploy.orchestrator.Deployment` ties both together.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, threads
from twisted.logger import Logger

from murder import bencode, metainfo
from murder.errors import MurderError

if TYPE_CHECKING:
    from murder.deploy.orchestrator import DeployConfig
    from murder.peer.run import SwarmRun


class Origin:
    """The local tracker, seeder and torrent of one deploy."""

    log = Logger()

    def __init__(self, config: DeployConfig, reactor: Any) -> None:
        self.config = config
        self.reactor = reactor
        #: The address hosts reach this machine's seeder (and tracker) at.
        self.host = config.announce_host or "127.0.0.1"
        self.announce_url: str | None = None
        self.torrent_path: str | None = None
        self._workdir: str | None = None
        self._tracker_service: Any = None
        self._seeder: SwarmRun | None = None

    def start_tracker(self) -> str:
        """Start the tracker here unless ``--tracker`` names one; the announce URL."""
        c = self.config
        if c.tracker:
            self.announce_url = c.tracker
            return c.tracker
        port = c.tracker_port or _free_port()
        wrapped = f"[{self.host}]" if ":" in self.host else self.host
        self.announce_url = f"http://{wrapped}:{port}/announce"
        self._start_tracker(port)
        return self.announce_url

    def _start_tracker(self, port: int) -> None:
        from murder.tracker.options import TrackerConfig
        from murder.tracker.service import build_service

        secrets = (self.config.auth_secret,) if self.config.auth_secret else ()
        config = TrackerConfig(listen=f"tcp:{port}", dfile=None, auth_secrets=secrets)
        svc = build_service(config, self.reactor)
        try:
            svc.privilegedStartService()
        except Exception as e:
            reason = getattr(e, "socketError", None) or e
            raise MurderError(f"cannot start the tracker on port {port}: {reason}") from None
        svc.startService()
        self._tracker_service = svc

    async def make_torrent(self) -> metainfo.Metainfo:
        """Hash the payload off the reactor thread; authorise and sign the torrent."""
        c = self.config
        announce = self.announce_url
        assert announce is not None, "start_tracker first"
        self._workdir = tempfile.mkdtemp(prefix="murder-deploy-")
        torrent = await threads.deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(),
            lambda: metainfo.create(c.payload, announce, piece_length=c.piece_length))
        if c.auth_secret:
            from murder import trust
            from murder.tracker.auth import load_secret

            torrent = trust.authorise_announce(torrent, load_secret(c.auth_secret))
        if c.sign:
            from murder import trust

            torrent = trust.sign_torrent(torrent, trust.load_private_key(c.sign))
        meta = metainfo.parse(bencode.encode(torrent))
        self.torrent_path = os.path.join(self._workdir, "payload.torrent")
        metainfo.write_atomic(self.torrent_path, meta.encode())
        return meta

    async def start_seeder(self) -> None:
        """Seed the payload; return once the tracker knows the seeder.

        Hosts announce right away: the seeder must be known to the tracker
        first, or they would wait a whole announce interval to hear of it.
        """
        from murder.peer.tap import SeederOptions, SwarmRun, config_from

        assert self.torrent_path is not None, "make_torrent first"
        options = SeederOptions()
        options.parseOptions(["--torrent", self.torrent_path, "--file", self.config.payload,
                              "--skip-verify", "--ip", self.host, "--quiet",
                              "--tracker-timeout", str(self.config.tracker_timeout)])
        run = SwarmRun(config_from(options), self.reactor)
        self._seeder = run
        run.start()
        deadline = self.reactor.seconds() + self.config.tracker_timeout
        while True:
            if run.exit_code is not None:
                raise MurderError(f"the seeder failed: {run.failure_message}")
            if run.announcer is not None and run.announcer.last_reply is not None:
                return
            if self.reactor.seconds() > deadline:
                raise MurderError(f"the seeder could not announce to {self.announce_url} "
                                  f"within {self.config.tracker_timeout:g}s")
            await _sleep(self.reactor, 0.05)

    async def stop(self) -> None:
        """Stop the seeder, then the tracker; remove the work directory."""
        if self._seeder is not None:
            try:
                await self._seeder.stop()
            except Exception:
                self.log.failure("stopping the seeder")
        if self._tracker_service is not None:
            try:
                await defer.maybeDeferred(self._tracker_service.stopService)
            except Exception:
                self.log.failure("stopping the tracker")
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        port: int = s.getsockname()[1]
        return port


def _sleep(reactor: Any, seconds: float) -> defer.Deferred[None]:
    d: defer.Deferred[None] = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


__all__ = ["Origin"]
